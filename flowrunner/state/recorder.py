"""Group commit of execution ends from asyncio code, in one worker thread, for any store.

Every end queued while the thread's previous commit ran is committed in one transaction
(one fsync or WAL flush for many executions) on the thread's own connection, so the
event loop never waits for the disk or the server. Each caller resumes only after the
commit holding its record; one bad item (a duplicate id) fails alone, its neighbours are
committed one by one (:func:`commit_group`). A backend subclasses
:class:`ThreadRecorder` with how the thread opens its store; SQLite's recorder commits
on the event loop's own connection instead (:mod:`flowrunner.state.sqlite.recorder`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Self

from flowrunner.errors import StateError
from flowrunner.state.protocol import StateStore
from flowrunner.state.records import Item, NewPush, Record, Waiter, settle

RecordEnds = Callable[[Sequence[Item]], None]  # a store's record_ends, or a variant of it


class ThreadRecorder:
    """Records execution ends in group commits on a store the worker thread opens with
    ``open_store`` (and closes)."""

    def __init__(
        self, open_store: Callable[[], StateStore], *, thread_name: str, max_batch: int = 2000
    ) -> None:
        self.commits = 0  # transactions committed, for tests and benchmarks
        self._open_store = open_store
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._store: StateStore | None = None  # opened, used and closed in the worker thread
        self._queue: list[tuple[Item, Waiter]] = []
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like the store's ``record_end``; returns once the record is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.record_end_then(record, push, future)
        await future

    def record_end_then(self, record: Record, push: NewPush | None, waiter: Waiter) -> None:
        """:meth:`record_end` without waiting: ``waiter`` hears once the record is
        committed, or why not."""
        self._queue.append(((record, push), waiter))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def hold_ends(self, wait: float, most: int) -> None:
        """Nothing to do here: every end goes through the thread, whose commit starts as
        soon as the previous one is done."""

    def flush(self) -> None:
        """Nothing to do here: nothing waits for company."""

    async def mark_delivered(self, ids: Sequence[str], owner: str, now: float) -> int:
        """The store's ``mark_delivered_many``, run by the worker thread between its
        commits: on its own connection, it never waits for their write lock."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._mark, list(ids), owner, now)

    async def aclose(self) -> None:
        """Wait for queued records, then close the worker's connection and thread."""
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

    def _commit(self, items: list[Item]) -> list[Exception | None]:  # in the worker thread
        if self._store is None:
            self._store = self._open_store()
        return self._commit_on(self._store, items)

    def _mark(self, ids: list[str], owner: str, now: float) -> int:  # in the worker thread
        if self._store is None:
            self._store = self._open_store()
        return self._store.mark_delivered_many(ids, owner, now=now)

    def _commit_on(self, store: StateStore, items: list[Item]) -> list[Exception | None]:
        errors, commits = commit_group(store, items)
        self.commits += commits
        return errors

    def _close_store(self) -> None:  # in the worker thread
        if self._store is not None:
            self._store.close()
            self._store = None


def commit_group(
    store: StateStore, items: list[Item], record_ends: RecordEnds | None = None
) -> tuple[list[Exception | None], int]:
    """Record ``items`` in one transaction (with ``record_ends``, default the store's);
    if the store refuses it, each alone, so that one bad item (a duplicate id) fails
    alone. The error of each item (None: recorded) and the transactions committed."""
    record_ends = record_ends or store.record_ends
    try:
        record_ends(items)
        return [None] * len(items), 1
    except StateError as exc:
        if len(items) == 1:
            return [exc], 0
    errors: list[Exception | None] = []
    for item in items:
        try:
            record_ends([item])
            errors.append(None)
        except StateError as exc:
            errors.append(exc)
    return errors, errors.count(None)
