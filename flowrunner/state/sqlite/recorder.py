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
    the event loop's thread, once per pass of the loop, or in larger groups when the
    callers can wait (:meth:`hold_ends`: a batch that goes on with its next lines
    meanwhile, and calls :meth:`flush` when it cannot): fewer transactions. A
    thread would cost more there than the insert: each time SQLite lets go of the GIL,
    the loop's thread has to win it back.

    Each caller resumes only after the commit holding its record.
    """

    def __init__(self, store: Store, *, max_batch: int = 2000) -> None:
        self.path = store.path
        super().__init__(
            lambda: Store.open(self.path), thread_name="flowrunner-state", max_batch=max_batch
        )
        self._main = store  # the event loop's connection, for ends without a push
        self._light: list[tuple[Item, asyncio.Future[None]]] = []
        self._light_wait = 0.0  # see hold_ends
        self._light_most = 1
        self._light_timer: asyncio.Handle | None = None

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like :meth:`Store.record_end`; returns once the record is committed."""
        if push is not None:
            await super().record_end(record, push)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._light:
            if self._light_wait > 0:
                self._light_timer = loop.call_later(self._light_wait, self._commit_light)
            else:
                self._light_timer = loop.call_soon(self._commit_light)
        self._light.append(((record, None), future))
        if len(self._light) >= self._light_most and self._light_wait > 0:
            self._commit_light()
        await future

    def hold_ends(self, wait: float, most: int) -> None:
        """Let ends without a push wait up to ``wait`` seconds, or until ``most`` of them
        wait, to share one transaction, instead of committing once per loop pass."""
        self._light_wait = wait
        self._light_most = max(1, most)

    def flush(self) -> None:
        """Commit the ends without a push that are waiting, now."""
        self._commit_light()

    async def aclose(self) -> None:
        """Commit the ends still waiting, then as :meth:`ThreadRecorder.aclose`."""
        self._commit_light()
        await super().aclose()

    def _commit_light(self) -> None:
        if self._light_timer is not None:
            self._light_timer.cancel()
            self._light_timer = None
        batch, self._light = self._light, []
        if not batch:
            return
        settle(batch, self._commit_on(self._main, [item for item, _ in batch]))
