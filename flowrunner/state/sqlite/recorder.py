"""Group commit of execution ends on SQLite, from asyncio code."""

from __future__ import annotations

import asyncio

from flowrunner.state.recorder import ThreadRecorder
from flowrunner.state.records import Item, NewPush, Record, settle
from flowrunner.state.sqlite.store import Store


class AsyncRecorder(ThreadRecorder):
    """Records execution ends from asyncio code, in group commits.

    An end with a push must be on disk (fsync) before the push is sent: those queue up
    for one worker thread (:class:`ThreadRecorder`), with its own connection to
    ``store.path``, which commits everything that queued while its previous commit ran
    in one transaction (one fsync for many executions) without blocking the event loop.
    An end without a push needs no fsync: those are committed on ``store`` itself, in
    the event loop's thread, once per pass of the loop. A thread would cost more there
    than the insert: each time SQLite lets go of the GIL, the loop's thread has to win
    it back.

    Each caller resumes only after the commit holding its record.
    """

    def __init__(self, store: Store, *, max_batch: int = 2000) -> None:
        self.path = store.path
        super().__init__(
            lambda: Store.open(self.path), thread_name="flowrunner-state", max_batch=max_batch
        )
        self._main = store  # the event loop's connection, for ends without a push
        self._light: list[tuple[Item, asyncio.Future[None]]] = []

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like :meth:`Store.record_end`; returns once the record is committed."""
        if push is not None:
            await super().record_end(record, push)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._light:
            loop.call_soon(self._commit_light)
        self._light.append(((record, None), future))
        await future

    async def aclose(self) -> None:
        """Commit the ends waiting for this pass of the loop, then as
        :meth:`ThreadRecorder.aclose`."""
        self._commit_light()
        await super().aclose()

    def _commit_light(self) -> None:
        batch, self._light = self._light, []
        if not batch:
            return
        settle(batch, self._commit_on(self._main, [item for item, _ in batch]))
