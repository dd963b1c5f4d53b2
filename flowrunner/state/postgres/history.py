"""Execution history on PostgreSQL: recording ends (with their pushes), listing, pruning."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from flowrunner.state.postgres.connection import Cursor, PgConnection, storable
from flowrunner.state.records import NewPush, Record, push_row, run_row
from flowrunner.times import iso_unix

_INSERT_RUN = (
    "INSERT INTO runs (execution_id, flow, status, started_at, ended_at, record) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
_INSERT_PUSH = (
    "INSERT INTO outbox (id, execution_id, webhook, url, headers, payload, status, attempts, "
    "next_attempt_at, created_at, lease_owner, lease_until) "
    "VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s, %s, %s)"
)
# a retry after a lost connection: the first attempt may have committed
_ONCE = " ON CONFLICT DO NOTHING"


class PgHistory:
    """The ``runs`` queries of :class:`~flowrunner.state.postgres.store.PgStore`."""

    db: PgConnection

    def record_end(self, record: Record, push: NewPush | None) -> None:
        """Store an execution record and its push (if any) in one durable transaction."""
        self.record_ends([(record, push)])

    def record_ends(self, items: Sequence[tuple[Record, NewPush | None]]) -> None:
        """Group commit of :meth:`record_end`: one transaction (one WAL flush) for all.

        Both rows of an item are written or neither; a duplicate execution id or
        webhook-id refuses the whole transaction.
        """
        runs = [run_row(record) for record, _ in items]
        pushes = [push_row(push) for _, push in items if push is not None]

        def write(cur: Cursor, tail: str = "") -> None:
            cur.executemany(_INSERT_RUN + tail, runs)
            if pushes:
                cur.executemany(_INSERT_PUSH + tail, pushes)

        self.db.run("record executions", write, again=lambda cur: write(cur, _ONCE))

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        """Executions, newest first (``limit`` 0: all), in the ``runs list --json`` shape."""
        rows = self.db.read(
            "SELECT r.execution_id, r.flow, r.status, r.started_at, r.ended_at, o.status "
            "FROM runs r LEFT JOIN outbox o ON o.execution_id = r.execution_id "
            "ORDER BY r.started_at DESC, r.seq DESC LIMIT %s",
            (limit if limit > 0 else None,),
        )
        return [
            {
                "execution_id": r[0],
                "flow": r[1],
                "status": r[2],
                "started_at": iso_unix(r[3]),
                "ended_at": iso_unix(r[4]),
                "on_complete_status": r[5],
            }
            for r in rows
        ]

    def run(self, execution_id: str) -> dict[str, Any] | None:
        """The stored execution record, its ``on_complete`` brought up to date; or None."""
        if not storable(execution_id):
            return None
        rows = self.db.read(
            "SELECT r.record, o.id, o.webhook, o.status, o.attempts, o.last_error "
            "FROM runs r LEFT JOIN outbox o ON o.execution_id = r.execution_id "
            "WHERE r.execution_id = %s",
            (execution_id,),
        )
        if not rows:
            return None
        record: dict[str, Any] = json.loads(rows[0][0])
        push_id, webhook, status, attempts, last_error = rows[0][1:]
        if push_id is not None:
            on_complete = dict(record.get("on_complete") or {})
            on_complete.update(
                webhook=webhook,
                webhook_id=push_id,
                status=status,
                attempts=attempts,
                last_error=last_error,
            )
            record["on_complete"] = on_complete
        return record

    def records(
        self, *, since: float | None = None, flow: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The stored records started at or after ``since``, of ``flow`` when given, oldest
        first; :data:`READ_BATCH` rows a query (keyset pages), so memory stays flat."""
        after: tuple[float, int] = (since if since is not None else 0.0, -1)
        while True:
            rows = self.db.read(
                "SELECT record, started_at, seq FROM runs "
                "WHERE (started_at, seq) > (%s, %s) AND (%s::text IS NULL OR flow = %s) "
                "ORDER BY started_at, seq LIMIT %s",
                (after[0], after[1], flow, flow, READ_BATCH),
            )
            for text, _, _ in rows:
                yield json.loads(text)
            if len(rows) < READ_BATCH:
                return
            after = (rows[-1][1], rows[-1][2])

    def prune_runs(
        self, *, older_than: float | None, keep: int | None, now: float | None = None
    ) -> int:
        """Delete runs started more than ``older_than`` seconds ago and runs beyond the
        newest ``keep``; returns how many. Runs whose push is pending are kept, delivered
        pushes go with their run, dead ones stay."""
        cutoff = None if older_than is None else (now or time.time()) - older_than
        if cutoff is None and keep is None:
            return 0
        params = {"cutoff": cutoff, "keep": keep}

        def prune(cur: Cursor) -> int:
            cur.execute(_doomed(cutoff, keep), params)
            doomed = [row[0] for row in cur.fetchall()]
            cur.execute("DELETE FROM runs WHERE execution_id = ANY(%s)", (doomed,))
            cur.execute(
                "DELETE FROM outbox WHERE execution_id = ANY(%s) AND status = 'delivered'",
                (doomed,),
            )
            return len(doomed)

        return self.db.run("prune runs", prune)


def _doomed(cutoff: float | None, keep: int | None) -> bytes:
    """The query of runs that retention may delete (never those with a pending push)."""
    reasons = []
    if cutoff is not None:
        reasons.append("r.started_at < %(cutoff)s")
    if keep is not None:
        reasons.append(
            "r.execution_id NOT IN (SELECT execution_id FROM runs "
            "ORDER BY started_at DESC, seq DESC LIMIT %(keep)s)"
        )
    return (
        f"SELECT r.execution_id FROM runs r WHERE ({' OR '.join(reasons)}) "
        "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.execution_id = r.execution_id "
        "AND o.status = 'pending') FOR UPDATE OF r SKIP LOCKED"
    ).encode()


READ_BATCH = 500
