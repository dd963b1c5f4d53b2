"""Group commit of execution ends from asyncio code, in one worker thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from flowrunner.errors import StateError
from flowrunner.state.records import Item, NewPush, Record, settle
from flowrunner.state.sqlite.store import Store


class AsyncRecorder:
    """Records execution ends from asyncio code, in group commits.

    An end with a push must be on disk (fsync) before the push is sent: those queue up
    for one worker thread, with its own connection to ``store.path``, which commits
    everything that queued while its previous commit ran in one transaction (one fsync
    for many executions) without blocking the event loop. An end without a push needs
    no fsync: those are committed on ``store`` itself, in the event loop's thread, once
    per pass of the loop. A thread would cost more there than the insert: each time
    SQLite lets go of the GIL, the loop's thread has to win it back.

    Each caller resumes only after the commit holding its record.
    """

    def __init__(self, store: Store, *, max_batch: int = 2000) -> None:
        self.path = store.path
        self.commits = 0  # transactions committed, for tests and benchmarks
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowrunner-state")
        self._store: Store | None = None  # opened, used and closed in the worker thread
        self._queue: list[tuple[Item, asyncio.Future[None]]] = []
        self._pump: asyncio.Task[None] | None = None
        self._main = store  # the event loop's connection, for ends without a push
        self._light: list[tuple[Item, asyncio.Future[None]]] = []

    async def __aenter__(self) -> AsyncRecorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like :meth:`Store.record_end`; returns once the record is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if push is None:
            if not self._light:
                loop.call_soon(self._commit_light)
            self._light.append(((record, None), future))
        else:
            self._queue.append(((record, push), future))
            if self._pump is None or self._pump.done():
                self._pump = loop.create_task(self._run())
        await future

    async def aclose(self) -> None:
        """Wait for queued records, then close the worker's connection and thread."""
        self._commit_light()
        if self._pump is not None:
            await self._pump
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_store)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            items = [item for item, _ in batch]
            try:
                errors = await loop.run_in_executor(self._executor, self._commit, items)
            except Exception as exc:  # the worker itself failed: every caller hears of it
                errors = [exc] * len(batch)
            settle(batch, errors)

    def _commit_light(self) -> None:
        batch, self._light = self._light, []
        if not batch:
            return
        settle(batch, self._commit_on(self._main, [item for item, _ in batch]))

    def _commit(self, items: list[Item]) -> list[Exception | None]:
        if self._store is None:
            self._store = Store.open(self.path)
        return self._commit_on(self._store, items)

    def _commit_on(self, store: Store, items: list[Item]) -> list[Exception | None]:
        try:
            store.record_ends(items)
            self.commits += 1
            return [None] * len(items)
        except StateError as exc:
            if len(items) == 1:
                return [exc]
        # one bad item must not fail its neighbours: commit them one by one
        return [self._commit_one(store, item) for item in items]

    def _commit_one(self, store: Store, item: Item) -> Exception | None:
        try:
            store.record_ends([item])
        except StateError as exc:
            return exc
        self.commits += 1
        return None

    def _close_store(self) -> None:  # in the worker thread
        if self._store is not None:
            self._store.close()
            self._store = None
