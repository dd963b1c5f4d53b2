"""The execution queue on PostgreSQL: requests queued in one transaction, claims with
``FOR UPDATE SKIP LOCKED`` and a lease, take-over of leases that ran out, and
``NOTIFY`` so that waiting workers wake at once.

The methods have the shapes of the SQLite queue of the trigger API, so ``serve`` and
``worker`` can use either store. Every method is one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flowrunner.jsoncodec import compact
from flowrunner.state.postgres.connection import Cursor, PgConnection, storable
from flowrunner.state.queue_values import Claimed, Enqueued, NewRequest
from flowrunner.state.records import Item, push_row, run_row

CHANNEL = "flowrunner_queue"  # NOTIFY'd on every commit that queues executions

_CLAIM = (
    "UPDATE queue SET lease_owner = %(owner)s, lease_until = %(until)s WHERE seq IN ("
    "SELECT seq FROM queue WHERE lease_owner IS NULL OR lease_until <= %(now)s "
    "ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "RETURNING seq, execution_id, request_id, flow, inputs, enqueued_at"
)
_UPSERT_RUN = (
    "INSERT INTO runs (execution_id, flow, status, started_at, ended_at, record) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (execution_id) DO UPDATE SET "
    "flow = excluded.flow, status = excluded.status, started_at = excluded.started_at, "
    "ended_at = excluded.ended_at, record = excluded.record"
)
_INSERT_PUSH = (
    "INSERT INTO outbox (id, execution_id, webhook, url, headers, payload, status, attempts, "
    "next_attempt_at, created_at, lease_owner, lease_until) "
    "VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)
_FREE = "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE "


class PgQueue:
    """The queue, request and idempotency-key queries of
    :class:`~flowrunner.state.postgres.store.PgStore`."""

    db: PgConnection

    def enqueue_many(self, requests: Sequence[NewRequest], *, now: float) -> list[Enqueued]:
        """Record ``requests`` and queue their executions in one durable transaction,
        and wake the waiting workers when it commits. A request whose idempotency key is
        recorded already queues nothing: its entry is the recorded answer, ``replayed``."""

        def enqueue(cur: Cursor) -> list[Enqueued]:
            out = [_enqueue_one(cur, request, now) for request in requests]
            if any(not e.replayed for e in out):
                cur.execute(f"NOTIFY {CHANNEL}".encode())
            return out

        return self.db.run("queue executions", enqueue)

    def idempotent_answer(self, key: str) -> tuple[str, str] | None:
        """``(fingerprint, answer)`` recorded for idempotency ``key``, or None."""
        if not storable(key):
            return None
        rows = self.db.read(
            "SELECT k.fingerprint, r.answer FROM idempotency_keys k "
            "JOIN requests r ON r.request_id = k.request_id WHERE k.key = %s",
            (key,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def claim(self, owner: str, *, now: float, seconds: float, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` waiting executions (oldest first) to ``owner`` until
        ``now + seconds``. Waiting: never leased, released, or with a lease run out.
        Rows another worker is claiming at this moment are skipped, not waited for."""
        params = {"owner": owner, "until": now + seconds, "now": now, "limit": limit}
        rows = self.db.run("claim executions", lambda cur: cur.execute(_CLAIM, params).fetchall())
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
        sql = "UPDATE queue SET lease_until = %s WHERE lease_owner = %s"
        values = (now + seconds, owner)
        return self.db.run("renew leases", lambda cur: cur.execute(sql, values).rowcount)

    def finish(self, items: Sequence[Item]) -> None:
        """Record execution ends (and their pushes) and remove them from the queue, in
        one transaction. An execution run twice (a lease that ran out) keeps one
        record, the last; its push, recorded once, keeps its ``webhook-id``."""
        runs = [run_row(record) for record, _ in items]
        pushes = [push_row(push) for _, push in items if push is not None]
        ids = [run[0] for run in runs]

        def finish(cur: Cursor) -> None:
            cur.executemany(_UPSERT_RUN, runs)
            if pushes:
                cur.executemany(_INSERT_PUSH, pushes)
            cur.execute("DELETE FROM queue WHERE execution_id = ANY(%s)", (ids,))

        self.db.run("record executions", finish)

    def release(self, owner: str) -> int:
        """Make every execution ``owner`` holds waiting again; how many."""
        sql = (_FREE + "lease_owner = %s").encode()
        count = self.db.run("release executions", lambda cur: cur.execute(sql, (owner,)).rowcount)
        if count:
            self.db.run("wake workers", lambda cur: cur.execute(f"NOTIFY {CHANNEL}".encode()))
        return count

    def lease_owners(self) -> list[str]:
        """Every owner holding a queued execution."""
        rows = self.db.read("SELECT DISTINCT lease_owner FROM queue WHERE lease_owner IS NOT NULL")
        return [r[0] for r in rows]

    def requeue(self, *, now: float, dead_owners: Sequence[str] = ()) -> int:
        """Make waiting again every execution whose lease ran out or whose owner is
        among ``dead_owners``; how many."""
        sql = (_FREE + "lease_until <= %s OR lease_owner = ANY(%s)").encode()
        values = (now, list(dead_owners))
        return self.db.run("requeue executions", lambda cur: cur.execute(sql, values).rowcount)

    def queue_counts(self, *, now: float) -> tuple[int, int]:
        """``(waiting, running)``: queued executions not leased, and leased ones."""
        rows = self.db.read(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE lease_until > %s) FROM queue", (now,)
        )
        total, running = rows[0]
        return int(total) - int(running), int(running)

    def execution_states(self, ids: Sequence[str], *, now: float) -> dict[str, dict[str, Any]]:
        """For each known id of ``ids``: its stored record, or, while queued,
        ``{"execution_id", "flow", "status": "QUEUED"|"RUNNING", "request_id"}``."""
        wanted = [i for i in ids if storable(i)]
        queued = self.db.read(
            "SELECT execution_id, flow, request_id, lease_until FROM queue "
            "WHERE execution_id = ANY(%s)",
            (wanted,),
        )
        done = self.db.read("SELECT execution_id FROM runs WHERE execution_id = ANY(%s)", (wanted,))
        out: dict[str, dict[str, Any]] = {}
        for (execution_id,) in done:
            record = self.run(execution_id)  # type: ignore[attr-defined]
            if record is not None:
                out[execution_id] = record
        for execution_id, flow, request_id, until in queued:
            status = "RUNNING" if until is not None and until > now else "QUEUED"
            out.setdefault(execution_id, {"execution_id": execution_id, "flow": flow,
                                          "status": status, "request_id": request_id})  # fmt: skip
        return out

    def request_answer(self, request_id: str) -> tuple[str, str, float] | None:
        """``(flow, answer, created_at)`` of a recorded request, or None."""
        if not storable(request_id):
            return None
        rows = self.db.read(
            "SELECT flow, answer, created_at FROM requests WHERE request_id = %s", (request_id,)
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def prune_requests(self, *, keys_before: float, requests_before: float) -> int:
        """Forget idempotency keys recorded before ``keys_before`` and requests recorded
        before ``requests_before`` (never one with an execution still queued)."""

        def prune(cur: Cursor) -> int:
            cur.execute("DELETE FROM idempotency_keys WHERE created_at < %s", (keys_before,))
            count = cur.rowcount
            cur.execute(
                "DELETE FROM requests WHERE created_at < %s AND request_id NOT IN "
                "(SELECT request_id FROM idempotency_keys) AND request_id NOT IN "
                "(SELECT request_id FROM queue)",
                (requests_before,),
            )
            return count + cur.rowcount

        return self.db.run("prune requests", prune)


def _enqueue_one(cur: Cursor, request: NewRequest, now: float) -> Enqueued:
    if request.idempotency_key is not None:
        cur.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, request_id, created_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
            (request.idempotency_key, request.fingerprint, request.request_id, now),
        )
        if cur.rowcount == 0:
            cur.execute(
                "SELECT k.fingerprint, r.answer FROM idempotency_keys k "
                "JOIN requests r ON r.request_id = k.request_id WHERE k.key = %s",
                (request.idempotency_key,),
            )
            row = cur.fetchone()
            assert row is not None  # the key exists: ON CONFLICT found it
            return Enqueued(answer=row[1], replayed=True, fingerprint=row[0])
    cur.execute(
        "INSERT INTO requests (request_id, flow, answer, created_at) VALUES (%s, %s, %s, %s)",
        (request.request_id, request.flow, request.answer, now),
    )
    rows = [(c.execution_id, request.request_id, request.flow, compact(c.inputs), now)
            for c in request.calls]  # fmt: skip
    if rows:
        cur.executemany(
            "INSERT INTO queue (execution_id, request_id, flow, inputs, enqueued_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    return Enqueued(answer=request.answer, replayed=False, fingerprint=request.fingerprint)
