"""The execution queue: requests accepted by ``serve``, waiting or running executions,
and the idempotency keys of requests.

The shape is backend-neutral: every method is one transaction that a PostgreSQL store
can implement with the same statements (``UPDATE ... RETURNING``, ``ON CONFLICT``).

* :meth:`QueueMixin.enqueue_many` records many requests in ONE durable transaction;
  an answer may be sent once it returns.
* :meth:`QueueMixin.claim` leases up to N waiting executions to an owner until a time;
  :meth:`QueueMixin.renew` extends every lease of an owner; a lease that ran out makes
  its execution claimable again (at-least-once).
* :meth:`QueueMixin.finish` writes execution records, their pushes, and removes their
  queue rows in one transaction: an execution is queued or recorded, never neither.
* :meth:`QueueMixin.release` gives back an owner's executions (shutdown);
  :meth:`QueueMixin.requeue` frees those of owners known to be dead and expired leases.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flowrunner.jsoncodec import compact
from flowrunner.state.queue_values import Claimed, Enqueued, NewRequest
from flowrunner.state.records import Item, push_row, run_row
from flowrunner.state.sqlite.connection import Connection

QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    flow TEXT NOT NULL,
    inputs TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS queue_owner ON queue (lease_owner);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_at);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency_keys (created_at);
"""


class QueueMixin(Connection):
    """The queue, request and idempotency-key queries of :class:`~flowrunner.state.Store`."""

    if TYPE_CHECKING:  # from HistoryMixin, beside this class in the store

        def run(self, execution_id: str) -> dict[str, Any] | None: ...

    def enqueue_many(self, requests: Sequence[NewRequest], *, now: float) -> list[Enqueued]:
        """Record ``requests`` and queue their executions in one durable transaction.

        A request whose idempotency key is already recorded queues nothing: its entry
        in the result is the recorded answer, ``replayed``.
        """
        out: list[Enqueued] = []
        with self._write("queue executions", durable=True) as cur:
            for request in requests:
                out.append(_enqueue_one(cur, request, now))
        return out

    def idempotent_answer(self, key: str) -> tuple[str, str] | None:
        """``(fingerprint, answer)`` recorded for idempotency ``key``, or None."""
        rows = self._read(
            "SELECT k.fingerprint, r.answer FROM idempotency_keys k "
            "JOIN requests r ON r.request_id = k.request_id WHERE k.key = ?",
            (key,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def claim(self, owner: str, *, now: float, seconds: float, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` waiting executions (oldest first) to ``owner`` until
        ``now + seconds``. Waiting: never leased, released, or with a lease run out."""
        with self._write("claim executions") as cur:
            rows = cur.execute(
                "UPDATE queue SET lease_owner = ?, lease_until = ? WHERE seq IN ("
                "SELECT seq FROM queue WHERE lease_until IS NULL OR lease_until <= ? "
                "ORDER BY seq LIMIT ?) "
                "RETURNING seq, execution_id, request_id, flow, inputs, enqueued_at",
                (owner, now + seconds, now, limit),
            ).fetchall()
        rows.sort()
        return [
            Claimed(
                execution_id=r[1],
                request_id=r[2],
                flow=r[3],
                inputs=json.loads(r[4]),
                enqueued_at=r[5],
            )  # fmt: skip
            for r in rows
        ]

    def renew(self, owner: str, *, now: float, seconds: float) -> int:
        """Extend every lease ``owner`` holds to ``now + seconds``; how many."""
        with self._write("renew leases") as cur:
            cur.execute(
                "UPDATE queue SET lease_until = ? WHERE lease_owner = ?", (now + seconds, owner)
            )
            return cur.rowcount

    def finish(self, items: Sequence[Item]) -> None:
        """Record execution ends (and their pushes) and remove them from the queue, in
        one transaction, durable when a push is among them.

        An execution run twice (a lease that ran out) keeps one record, the last; its
        push, recorded once, keeps its ``webhook-id``.
        """
        runs = [run_row(record) for record, _ in items]
        pushes = [push_row(push) for _, push in items if push is not None]
        with self._write("record executions", durable=bool(pushes)) as cur:
            cur.executemany(
                "INSERT OR REPLACE INTO runs (execution_id, flow, status, started_at, "
                "ended_at, record) VALUES (?, ?, ?, ?, ?, ?)",
                runs,
            )
            cur.executemany(
                "INSERT INTO outbox (id, execution_id, webhook, url, headers, payload, "
                "status, attempts, next_attempt_at, created_at, lease_owner, lease_until) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                pushes,
            )
            cur.executemany("DELETE FROM queue WHERE execution_id = ?", [(run[0],) for run in runs])

    def release(self, owner: str) -> int:
        """Make every execution ``owner`` holds waiting again; how many."""
        with self._write("release executions") as cur:
            cur.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                (owner,),
            )
            return cur.rowcount

    def lease_owners(self) -> list[str]:
        """Every owner holding a queued execution."""
        rows = self._read("SELECT DISTINCT lease_owner FROM queue WHERE lease_owner IS NOT NULL")
        return [r[0] for r in rows]

    def requeue(self, *, now: float, dead_owners: Sequence[str] = ()) -> int:
        """Make waiting again every execution whose lease ran out or whose owner is
        among ``dead_owners``; how many."""
        with self._write("requeue executions") as cur:
            cur.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_until <= ?",
                (now,),
            )
            count = cur.rowcount
            cur.executemany(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                [(owner,) for owner in dead_owners],
            )
            return count + max(cur.rowcount, 0)

    def queue_counts(self, *, now: float) -> tuple[int, int]:
        """``(waiting, running)``: queued executions not leased, and leased ones."""
        rows = self._read("SELECT COUNT(*), COALESCE(SUM(lease_until > ?), 0) FROM queue", (now,))
        total, running = rows[0]
        return int(total) - int(running), int(running)

    def execution_states(self, ids: Sequence[str], *, now: float) -> dict[str, dict[str, Any]]:
        """For each known id of ``ids`` (at most 500): its stored record (status
        COMPLETED or FAILED), or, while queued, ``{"execution_id", "flow", "status":
        "QUEUED"|"RUNNING", "request_id"}``. Read in one snapshot."""
        marks = ", ".join("?" * len(ids))
        with self._snapshot() as conn:
            queued = conn.execute(
                "SELECT execution_id, flow, request_id, lease_until FROM queue "
                f"WHERE execution_id IN ({marks})",
                tuple(ids),
            ).fetchall()
            done = conn.execute(
                f"SELECT execution_id FROM runs WHERE execution_id IN ({marks})", tuple(ids)
            ).fetchall()
            out: dict[str, dict[str, Any]] = {}
            for (execution_id,) in done:
                record = self.run(execution_id)
                if record is not None:
                    out[execution_id] = record
        for execution_id, flow, request_id, until in queued:
            running = until is not None and until > now
            out.setdefault(
                execution_id,
                {
                    "execution_id": execution_id,
                    "flow": flow,
                    "status": "RUNNING" if running else "QUEUED",
                    "request_id": request_id,
                },
            )
        return out

    def request_answer(self, request_id: str) -> tuple[str, str, float] | None:
        """``(flow, answer, created_at)`` of a recorded request, or None."""
        rows = self._read(
            "SELECT flow, answer, created_at FROM requests WHERE request_id = ?", (request_id,)
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def prune_requests(self, *, keys_before: float, requests_before: float) -> int:
        """Forget idempotency keys recorded before ``keys_before`` and requests recorded
        before ``requests_before`` (never one with an execution still queued)."""
        with self._write("prune requests") as cur:
            cur.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (keys_before,))
            count = cur.rowcount
            cur.execute(
                "DELETE FROM requests WHERE created_at < ? AND request_id NOT IN "
                "(SELECT request_id FROM idempotency_keys) AND request_id NOT IN "
                "(SELECT request_id FROM queue)",
                (requests_before,),
            )
            return count + cur.rowcount

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        with self._translate("read"):
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")


def _enqueue_one(cur: sqlite3.Cursor, request: NewRequest, now: float) -> Enqueued:
    if request.idempotency_key is not None:
        cur.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, request_id, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (request.idempotency_key, request.fingerprint, request.request_id, now),
        )
        if cur.rowcount == 0:
            row = cur.execute(
                "SELECT k.fingerprint, r.answer FROM idempotency_keys k "
                "JOIN requests r ON r.request_id = k.request_id WHERE k.key = ?",
                (request.idempotency_key,),
            ).fetchone()
            return Enqueued(answer=row[1], replayed=True, fingerprint=row[0])
    cur.execute(
        "INSERT INTO requests (request_id, flow, answer, created_at) VALUES (?, ?, ?, ?)",
        (request.request_id, request.flow, request.answer, now),
    )
    cur.executemany(
        "INSERT INTO queue (execution_id, request_id, flow, inputs, enqueued_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (c.execution_id, request.request_id, request.flow, compact(c.inputs), now)
            for c in request.calls
        ],
    )
    return Enqueued(answer=request.answer, replayed=False, fingerprint=request.fingerprint)
