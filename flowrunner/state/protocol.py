"""The state-store seam: what the runner, the on-complete sender and the commands ask of a
store of user keys, execution history and the on-complete outbox.

:class:`StateStore` is the contract a backend implements; the SQLite store
(:class:`flowrunner.state.sqlite.store.Store`) is today's implementation. A store object
belongs to the thread that opened it. Times are unix seconds; records and pushes are the
values of :mod:`flowrunner.state.records`. Every storage failure raises
:class:`~flowrunner.errors.StateError` naming the store, never the backend's own error.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from flowrunner.state.records import NewPush, OutboxRow, Record, Waiter


class UserKeys(Protocol):
    """``$user.key.*``: account-wide values shared by every execution and process."""

    def user_keys(self) -> dict[str, Any]:
        """Every stored user key and its value."""
        ...

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the store."""
        ...

    def seed_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store each of ``values`` whose name is not stored yet (a stored value wins)."""
        ...

    def set_user_key(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` at once; the last write wins."""
        ...

    def set_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store several user keys in one transaction; the last write wins."""
        ...

    def update_user_key(self, name: str, update: Callable[[Any], Any], default: Any = None) -> Any:
        """Read, change and write one user key in one transaction; returns the new value."""
        ...

    def update_user_keys(
        self, names: Collection[str], change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read the stored values of ``names`` (unset ones left out), hand them to
        ``change`` and store what it returns, in one transaction that every other
        read-modify-write of those names waits for; returns what was stored."""
        ...


class History(Protocol):
    """The run history: one record per execution id."""

    def record_end(self, record: Record, push: NewPush | None) -> None:
        """Store an execution record and its push (if any) in one durable transaction."""
        ...

    def record_ends(self, items: Sequence[tuple[Record, NewPush | None]]) -> None:
        """Group commit of :meth:`record_end`: one durable transaction for all."""
        ...

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        """Executions, newest first (``limit`` 0: all), in the ``runs list --json`` shape."""
        ...

    def run(self, execution_id: str) -> dict[str, Any] | None:
        """The stored execution record with its ``on_complete`` up to date, or None."""
        ...

    def prune_runs(
        self, *, older_than: float | None, keep: int | None, now: float | None = None
    ) -> int:
        """Delete runs older than ``older_than`` seconds and beyond the newest ``keep``."""
        ...

    def records(
        self, *, since: float | None = None, flow: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The stored execution records started at or after ``since`` (unix seconds),
        of ``flow`` only when given, oldest first, read a few hundred at a time."""
        ...


class Outbox(Protocol):
    """The on-complete outbox: pushes leased by one sender at a time, retried, dead-lettered."""

    def lease(
        self,
        owner: str,
        *,
        now: float,
        seconds: float,
        limit: int,
        ids: Sequence[str] | None = None,
        ignore_schedule: bool = False,
        due_by: float | None = None,
        horizon: float | None = None,
    ) -> list[OutboxRow]:
        """Claim up to ``limit`` pending pushes for ``owner`` until ``now + seconds``;
        times beyond ``horizon`` (a clock that was ahead wrote them) count as past."""
        ...

    def mark_delivered(self, id: str, owner: str, *, now: float) -> bool:
        """Record a successful attempt; False when ``owner`` no longer holds the lease."""
        ...

    def mark_delivered_many(self, ids: Sequence[str], owner: str, *, now: float) -> int:
        """:meth:`mark_delivered` for many pushes at once; how many it marked."""
        ...

    def mark_retry(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Record a failed attempt to be retried at ``next_attempt_at``."""
        ...

    def mark_dead(self, id: str, owner: str, *, now: float, error: str) -> bool:
        """Record a failed attempt after which the push is given up (dead-lettered)."""
        ...

    def mark_blocked(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Keep a push pending without counting an attempt (nothing could be sent)."""
        ...

    def deliveries(self, *, dead_only: bool = False) -> list[dict[str, Any]]:
        """Every push, oldest first, in the ``deliveries list --json`` shape."""
        ...

    def delivery(self, id: str) -> dict[str, Any] | None:
        """One push in the ``deliveries list --json`` shape, or None when unknown."""
        ...

    def outbox_rows(self, ids: Sequence[str]) -> dict[str, OutboxRow]:
        """The stored pushes among ``ids`` (at most 500), by id."""
        ...

    def outbox_row(self, id: str) -> OutboxRow | None:
        """The stored push ``id``, or None."""
        ...

    def push_states(self, ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        """``(webhook, status, attempts)`` of the stored pushes among ``ids`` (at most
        500), by id, without reading their payloads."""
        ...

    def release_leases(self, owner: str) -> int:
        """End every lease ``owner`` holds on a pending push; returns how many."""
        ...

    def push_lease_owners(self, *, now: float) -> list[str]:
        """The owners of the live leases on pending pushes."""
        ...

    def retry(self, id: str, *, now: float | None = None) -> bool:
        """Make a pending or dead push due now; a dead one starts a fresh schedule."""
        ...

    def retry_all_dead(self, *, now: float | None = None) -> int:
        """Make every dead push pending and due now; returns how many."""
        ...

    def next_due(self) -> float | None:
        """When the earliest pending push may be attempted (leases count); None: none."""
        ...

    def pending_count(self) -> int:
        """How many pushes are still pending."""
        ...


class StateStore(UserKeys, History, Outbox, Protocol):
    """A whole state store: user keys, history and outbox, opened by :func:`open_store`."""

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...

    def integrity_ok(self) -> bool:
        """True when the backend's own check finds the store sound."""
        ...

    def check_before_use(self) -> None:
        """Look for damage before a command does anything it cannot take back (a cheap
        check); raises :class:`~flowrunner.errors.StateError` naming what is damaged."""
        ...


class Recorder(Protocol):
    """Group commit of execution ends from asyncio code: each caller resumes once the
    transaction holding its record (and its push) is durable."""

    commits: int  # transactions committed, for tests and benchmarks

    async def __aenter__(self) -> Recorder: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Store one end; returns once it is committed."""
        ...

    def record_end_then(self, record: Record, push: NewPush | None, waiter: Waiter) -> None:
        """Store one end without waiting: ``waiter`` hears once it is committed, or why
        not (maybe before this returns)."""
        ...

    def hold_ends(self, wait: float, most: int) -> None:
        """Let ends wait up to ``wait`` seconds, or until ``most`` of them wait, to share
        a transaction."""
        ...

    def flush(self) -> None:
        """Commit the ends that wait for company now (a caller that cannot wait)."""
        ...

    async def mark_delivered(self, ids: Sequence[str], owner: str, now: float) -> int:
        """``mark_delivered_many`` on the recorder's own connection, between its commits
        (never waiting for their write lock); how many pushes it marked."""
        ...

    async def aclose(self) -> None:
        """Commit what is queued and stop."""
        ...
