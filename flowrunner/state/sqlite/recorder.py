"""Group commit of execution ends on SQLite, from asyncio code, on the event loop's own
connection."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Self

from flowrunner.errors import StateError
from flowrunner.state.recorder import commit_group
from flowrunner.state.records import Item, NewPush, Record, Waiter, settle
from flowrunner.state.sqlite.store import Store

# Why not a thread, as for PostgreSQL: measured on a batch with on-complete pushes, a
# recorder thread cost about 12 % more CPU per execution. Each time SQLite lets go of
# the GIL the loop's thread has to win it back, and a mark of pushes delivered, made on
# the loop's connection, waited in SQLite's busy handler for the thread's write lock.
# Only the wait for the disk goes to a thread: a commit with pushes is written without
# its fsync, and one fdatasync of the log, off the loop, makes it and every commit
# made meanwhile durable before their pushes are sent. An fsync on the loop's thread
# held the loop for its whole duration, about 8 % of a batch's time with pushes here.


class AsyncRecorder:
    """Records execution ends from asyncio code, in group commits on ``store`` itself.

    The ends recorded during one pass of the event loop are committed together, in one
    transaction, at the end of that pass, or they wait longer for company
    (:meth:`hold_ends`): a batch commits fewer, larger transactions, and calls
    :meth:`flush` when it cannot wait. A commit with a push is made durable (the log's
    fsync, off the loop) before its callers resume: a push is on disk before it is sent.

    Each caller resumes only after the commit holding its record; one bad item fails
    alone.
    """

    def __init__(self, store: Store) -> None:
        self.commits = 0  # transactions committed, for tests and benchmarks
        self.syncs = 0  # fdatasyncs of the log, likewise
        self._store = store
        self._waiting: Batch = []
        self._wait = 0.0  # see hold_ends
        self._most = 1
        self._timer: asyncio.Handle | None = None
        # commits with pushes, written but not yet synced, and the sync that runs
        self._unsynced: list[Unsynced] = []
        self._syncing: asyncio.Future[None] | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._log: int | None = None  # a descriptor of the write-ahead log, to sync it
        # the event loop of the first end, asked once: Python 3.11 makes a system call
        # (getpid) for every asking
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like :meth:`Store.record_end`; returns once the record is committed."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.record_end_then(record, push, future)
        await future

    def record_end_then(self, record: Record, push: NewPush | None, waiter: Waiter) -> None:
        """:meth:`record_end` without waiting: ``waiter`` hears once the record is
        committed (and its push durable), or why not. It may hear before this returns,
        when the record completes a group."""
        held = self._wait > 0
        if not self._waiting:
            loop = self._loop = self._loop or asyncio.get_running_loop()
            if held:
                self._timer = loop.call_later(self._wait, self._commit)
            else:
                self._timer = loop.call_soon(self._commit)
        self._waiting.append(((record, push), waiter))
        if held and len(self._waiting) >= self._most:
            self._commit()  # enough company

    def hold_ends(self, wait: float, most: int) -> None:
        """Let ends wait up to ``wait`` seconds, or until ``most`` of them wait, to share
        one transaction, instead of committing once per loop pass."""
        self._wait = wait
        self._most = max(1, most)

    def flush(self) -> None:
        """Commit the ends that are waiting, now."""
        self._commit()

    async def mark_delivered(self, ids: Sequence[str], owner: str, now: float) -> int:
        """The store's ``mark_delivered_many``, on the same connection as the commits."""
        return self._store.mark_delivered_many(ids, owner, now=now)

    async def aclose(self) -> None:
        """Commit the ends still waiting, and wait for the syncs of the log."""
        self._commit()
        while (syncing := self._syncing) is not None:
            await asyncio.wait([syncing])
            if self._syncing is syncing:  # its callback has not run yet
                await asyncio.sleep(0)
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)
        if self._log is not None:
            os.close(self._log)
            self._log = None

    def _commit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        items = [item for item, _ in batch]
        try:
            errors, commits = commit_group(self._store, items, self._record_unsynced)
        except Exception as exc:  # a bug, not a refusal: every caller hears of it
            errors, commits = [exc] * len(items), 0
        self.commits += commits
        if any(push is not None for _, push in items) and commits:
            self._unsynced.append((batch, errors))  # durable once the log is synced
            self._sync()
        else:
            settle(batch, errors)

    def _record_unsynced(self, items: Sequence[Item]) -> None:
        self._store.record_ends(items, sync=False)

    def _sync(self) -> None:
        """Sync the log in the syncing thread for every commit waiting for it, unless a
        sync runs: the commits made meanwhile wait for the next one."""
        if self._syncing is not None or not self._unsynced:
            return
        groups, self._unsynced = self._unsynced, []
        loop = asyncio.get_running_loop()
        try:
            if self._log is None:
                self._log = os.open(f"{self._store.path}-wal", os.O_RDONLY)
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(1, thread_name_prefix="flowrunner-sync")
            self._syncing = loop.run_in_executor(self._syncer, _sync_file, self._log)
        except (OSError, RuntimeError) as exc:  # no log to open, or shutting down
            self._synced(groups, exc)
            return
        self._syncing.add_done_callback(lambda done: self._synced(groups, _failure(done)))

    def _synced(self, groups: list[Unsynced], error: BaseException | None) -> None:
        self._syncing = None
        self.syncs += error is None
        for batch, errors in groups:
            if error is not None:  # written, but maybe not on disk: no push may go
                failed = StateError(f"{self._store.path}: cannot sync the state file ({error})")
                errors = [failed if e is None else e for e in errors]
            settle(batch, errors)
        self._sync()  # the commits made while this sync ran


def _failure(done: asyncio.Future[None]) -> BaseException | None:
    """Why a sync failed (None: it did not); a cancelled one failed too (its callers
    must hear of it rather than wait for ever)."""
    if done.cancelled():
        return asyncio.CancelledError("the sync was cancelled")
    return done.exception()


Batch = list[tuple[Item, Waiter]]
Unsynced = tuple[Batch, list[Exception | None]]  # a commit's callers, and their errors
_sync_file = getattr(os, "fdatasync", os.fsync)  # no fdatasync on macOS
