"""Group commit of execution ends on PostgreSQL, from asyncio code, in one worker thread."""

from __future__ import annotations

from flowrunner.state.postgres.store import PgStore
from flowrunner.state.recorder import ThreadRecorder


class PgRecorder(ThreadRecorder):
    """Records execution ends in group commits (:class:`ThreadRecorder`): every end goes
    to the worker thread, on a connection of its own to the same database, so one round
    trip and one WAL flush serve many executions."""

    def __init__(self, store: PgStore, *, max_batch: int = 2000) -> None:
        super().__init__(store.sibling, thread_name="flowrunner-pg", max_batch=max_batch)
