"""The writes of ``serve``, off the event loop: one thread with its own store connection.

Requests to queue and execution ends are group-committed: everything that arrived
while the previous commit ran goes into the next one (one transaction, one fsync for
many requests), and each caller resumes once the commit holding its data is done.
Other writes (claims, renewals, releases) run one by one in the same thread, so the
store never sees two writers from this process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flowrunner.errors import StateError
from flowrunner.state.queue_values import Enqueued, NewRequest
from flowrunner.state.records import Item

T = TypeVar("T")
MAX_BATCH = 2000  # requests or execution ends in one transaction


class StoreWriter:
    """Writes to the state store at ``path`` (a file, or a PostgreSQL place) from one
    worker thread; ``secrets`` resolve a PostgreSQL password."""

    def __init__(self, path: Any, secrets: Any = None) -> None:
        self.path = path
        self._secrets = secrets
        self.commits = 0  # group transactions committed (for tests and benchmarks)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowrunner-store")
        self._store: Any = None  # a StateStore with the queue methods
        self._enqueues: list[tuple[NewRequest, asyncio.Future[Enqueued]]] = []
        self._finishes: list[tuple[Item, asyncio.Future[None]]] = []
        self._pump: asyncio.Task[None] | None = None

    async def call(self, func: Callable[[Any], T]) -> T:
        """``func(store)`` in the writer thread; its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_store, func)

    async def enqueue(self, request: NewRequest) -> Enqueued:
        """Queue ``request`` (see :meth:`Store.enqueue_many`); returns once committed."""
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._enqueues.append((request, future))
        self._kick()
        return await future

    async def finish(self, item: Item) -> None:
        """Record an execution end (see :meth:`Store.finish`); returns once committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finishes.append((item, future))
        self._kick()
        await future

    async def aclose(self) -> None:
        """Commit what is waiting, then close the connection and the thread."""
        if self._pump is not None:
            await self._pump
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _kick(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._enqueues or self._finishes:
            enqueues, self._enqueues = self._enqueues[:MAX_BATCH], self._enqueues[MAX_BATCH:]
            finishes, self._finishes = self._finishes[:MAX_BATCH], self._finishes[MAX_BATCH:]
            requests = [r for r, _ in enqueues]
            items = [i for i, _ in finishes]
            try:
                queued, ended = await loop.run_in_executor(
                    self._executor, self._commit, requests, items
                )
            except Exception as exc:  # the thread itself failed: every caller hears of it
                queued, ended = [exc] * len(enqueues), [exc] * len(finishes)
            _settle(enqueues, queued)
            _settle(finishes, ended)

    def _with_store(self, func: Callable[[Any], T]) -> T:
        if self._store is None:
            from flowrunner.state import open_store

            self._store = open_store(self.path, self._secrets)
        return func(self._store)

    def _commit(self, requests: list[NewRequest], items: list[Item]) -> tuple[list[Any], list[Any]]:
        queued: list[Any] = []
        ended: list[Any] = []
        if requests:
            queued = self._in_groups(requests, self._enqueue_group)
        if items:
            ended = self._in_groups(items, self._finish_group)
        return queued, ended

    def _enqueue_group(self, requests: list[Any]) -> list[Any]:
        return self._with_store(lambda s: s.enqueue_many(requests, now=time.time()))

    def _finish_group(self, items: list[Any]) -> list[Any]:
        self._with_store(lambda s: s.finish(items))
        return [None] * len(items)

    def _in_groups(self, values: list[Any], commit: Callable[[list[Any]], list[Any]]) -> list[Any]:
        try:
            result = commit(values)
            self.commits += 1
            return result
        except StateError as exc:
            if len(values) == 1:
                return [exc]
        # one bad value must not fail its neighbours: commit them one by one
        out: list[Any] = []
        for value in values:
            try:
                out += commit([value])
                self.commits += 1
            except StateError as exc:
                out.append(exc)
        return out

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _settle(batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue  # the caller was cancelled; what it asked for is stored anyway
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
