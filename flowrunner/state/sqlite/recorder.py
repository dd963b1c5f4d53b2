"""Group commit of execution ends on SQLite, from asyncio code, on the event loop's own
connection."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Self

from flowrunner.state.recorder import commit_group
from flowrunner.state.records import Item, NewPush, Record, settle
from flowrunner.state.sqlite.store import Store

# Why not a thread, as for PostgreSQL: measured on a batch with on-complete pushes, a
# recorder thread cost about 12 % more CPU per execution. Each time SQLite lets go of
# the GIL the loop's thread has to win it back, and a mark of pushes delivered, made on
# the loop's connection, waited in SQLite's busy handler for the thread's write lock. An
# fsync on the loop's thread holds the loop for its duration (about 0.2 ms here, once
# per group); ends pile up meanwhile and share the next commit, so a slow disk makes
# the groups larger rather than the batch slower in proportion.


class AsyncRecorder:
    """Records execution ends from asyncio code, in group commits on ``store`` itself.

    The ends recorded during one pass of the event loop are committed together, in one
    transaction, at the end of that pass: durable (fsync) when one of them has a push,
    which must be on disk before it is sent. Ends without a push may wait longer for
    company (:meth:`hold_ends`): a batch that goes on with its next lines meanwhile
    commits fewer, larger transactions, and calls :meth:`flush` when it cannot wait.

    Each caller resumes only after the commit holding its record; one bad item fails
    alone.
    """

    def __init__(self, store: Store) -> None:
        self.commits = 0  # transactions committed, for tests and benchmarks
        self._store = store
        self._waiting: list[tuple[Item, asyncio.Future[None]]] = []
        self._wait = 0.0  # see hold_ends
        self._most = 1
        self._timer: asyncio.Handle | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like :meth:`Store.record_end`; returns once the record is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        held = self._wait > 0
        if not self._waiting:
            if held:
                self._timer = loop.call_later(self._wait, self._commit)
            else:
                self._timer = loop.call_soon(self._commit)
        self._waiting.append(((record, push), future))
        if held and (len(self._waiting) >= self._most or push is not None):
            self._commit()  # enough company, or a push that must not wait
        await future

    def hold_ends(self, wait: float, most: int) -> None:
        """Let ends without a push wait up to ``wait`` seconds, or until ``most`` of them
        wait, to share one transaction, instead of committing once per loop pass."""
        self._wait = wait
        self._most = max(1, most)

    def flush(self) -> None:
        """Commit the ends that are waiting, now."""
        self._commit()

    async def mark_delivered(self, ids: Sequence[str], owner: str, now: float) -> int:
        """The store's ``mark_delivered_many``, on the same connection as the commits."""
        return self._store.mark_delivered_many(ids, owner, now=now)

    async def aclose(self) -> None:
        """Commit the ends still waiting."""
        self._commit()

    def _commit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        errors, commits = commit_group(self._store, [item for item, _ in batch])
        self.commits += commits
        settle(batch, errors)
