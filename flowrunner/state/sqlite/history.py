"""Execution history: recording execution ends (with their pushes), listing, pruning."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from flowrunner.state.records import NewPush, Record, push_row, run_row
from flowrunner.state.sqlite.connection import Connection
from flowrunner.times import iso_unix

PRUNE_BATCH = 2000  # runs deleted per transaction


class HistoryMixin(Connection):
    """The ``runs`` queries of :class:`~flowrunner.state.sqlite.store.Store`."""

    def record_end(self, record: Record, push: NewPush | None) -> None:
        """Store an execution record and its push (if any) in one durable transaction.

        Both rows are written or neither; the push is on disk before this returns.
        """
        self.record_ends([(record, push)])

    def record_ends(
        self, items: Sequence[tuple[Record, NewPush | None]], *, sync: bool = True
    ) -> None:
        """Group commit of :meth:`record_end`: one transaction (and one fsync) for all.

        ``sync=False`` leaves out the fsync that pushes need before they are sent: the
        caller then syncs the log itself (:mod:`flowrunner.state.sqlite.recorder`)."""
        runs = [run_row(record) for record, _ in items]
        pushes = [push_row(push) for _, push in items if push is not None]
        with self._write("record executions", durable=bool(pushes) and sync) as cur:
            _insert_rows(cur, _INSERT_RUN, "(?, ?, ?, ?, ?, ?)", runs)
            _insert_rows(cur, _INSERT_PUSH, "(?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)", pushes)

    def runs(self, limit: int = 100) -> list[dict[str, Any]]:
        """Executions, newest first (``limit`` 0: all), in the ``runs list --json`` shape.

        ``on_complete_status`` is the current status of the execution's push, or None.
        """
        rows = self._read(
            "SELECT r.execution_id, r.flow, r.status, r.started_at, r.ended_at, o.status "
            "FROM runs r LEFT JOIN outbox o ON o.execution_id = r.execution_id "
            "ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?",
            (limit if limit > 0 else -1,),
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
        rows = self._read(
            "SELECT r.record, o.id, o.webhook, o.status, o.attempts, o.last_error "
            "FROM runs r LEFT JOIN outbox o ON o.execution_id = r.execution_id "
            "WHERE r.execution_id = ?",
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

    def prune_runs(
        self,
        *,
        older_than: float | None,
        keep: int | None,
        now: float | None = None,
        batch: int = PRUNE_BATCH,
    ) -> int:
        """Delete history: runs started more than ``older_than`` seconds ago, and runs
        beyond the newest ``keep``. Returns how many runs were deleted.

        Runs whose push is still pending are kept; delivered pushes go with their run;
        dead pushes stay in the outbox (for ``deliveries list --dead`` and ``retry``).
        Deletes ``batch`` runs per transaction: memory stays flat and other processes
        wait for the write lock no longer than one batch takes, however much is pruned.
        """
        cutoff = None if older_than is None else (now or time.time()) - older_than
        # the newest run beyond the newest `keep`, found once: runs added meanwhile by
        # other processes are newer, so everything up to it stays beyond
        boundary = None
        if keep is not None:
            rows = self._read(_BOUNDARY, (keep,))
            boundary = rows[0] if rows else None
            if boundary is None and cutoff is None:
                return 0
        params = {"cutoff": cutoff, "batch": batch}
        if boundary is not None:
            params.update({"b_started": boundary[0], "b_rowid": boundary[1]})
        sql = _doomed(cutoff, boundary is not None) + " LIMIT :batch"
        deleted = 0
        while True:
            with self._write("prune runs") as cur:
                doomed = cur.execute(sql, params).fetchall()
                cur.executemany("DELETE FROM runs WHERE execution_id = ?", doomed)
                cur.executemany(
                    "DELETE FROM outbox WHERE execution_id = ? AND status = 'delivered'", doomed
                )
            deleted += len(doomed)
            if len(doomed) < batch:
                return deleted

    def records(
        self, *, since: float | None = None, flow: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """The stored records started at or after ``since``, of ``flow`` when given, oldest
        first; :data:`READ_BATCH` rows at a time, so memory stays flat."""
        sql = "SELECT record FROM runs WHERE started_at >= ? AND (? IS NULL OR flow = ?) "
        sql += "ORDER BY started_at, rowid"
        with self._translate("read the history"):
            cursor = self._conn.execute(sql, (since if since is not None else 0.0, flow, flow))
        while True:
            with self._translate("read the history"):
                rows = cursor.fetchmany(READ_BATCH)
            if not rows:
                return
            for (text,) in rows:
                yield json.loads(text)


READ_BATCH = 500
_INSERT_RUN = "INSERT INTO runs (execution_id, flow, status, started_at, ended_at, record) VALUES "
_INSERT_PUSH = (
    "INSERT INTO outbox (id, execution_id, webhook, url, headers, payload, status, "
    "attempts, next_attempt_at, created_at, lease_owner, lease_until) VALUES "
)
ROWS_PER_INSERT = 90  # 10 parameters a row at most: below SQLite's oldest limit of 999


def _insert_rows(cur: sqlite3.Cursor, head: str, row: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``rows`` with one multi-row statement per ROWS_PER_INSERT rows.

    sqlite3 lets go of the GIL once per statement step: one step for many rows keeps a
    recorder thread from trading the GIL with the event loop once per row.
    """
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        cur.execute(head + ", ".join([row] * len(chunk)), [v for r in chunk for v in r])


_BOUNDARY = (
    "SELECT started_at, rowid FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1 OFFSET ?"
)


def _doomed(cutoff: float | None, beyond_keep: bool) -> str:
    """The query of runs that retention may delete (never those with a pending push),
    oldest first, through the index on ``started_at``."""
    reasons = []
    if cutoff is not None:
        reasons.append("r.started_at < :cutoff")
    if beyond_keep:
        reasons.append(
            "r.started_at < :b_started OR (r.started_at = :b_started AND r.rowid <= :b_rowid)"
        )
    return (
        f"SELECT r.execution_id FROM runs r WHERE ({' OR '.join(reasons) or '0'}) "
        "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.execution_id = r.execution_id "
        "AND o.status = 'pending') ORDER BY r.started_at"
    )
