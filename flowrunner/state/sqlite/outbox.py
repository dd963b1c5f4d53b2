"""The on-complete outbox: leasing pushes, recording attempts, listing and retrying."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from flowrunner.state.records import CLOCK_SLACK, OutboxRow
from flowrunner.state.sqlite.connection import Connection

_ROW_COLUMNS = (
    "id, execution_id, webhook, url, headers, payload, status, attempts, "
    "next_attempt_at, last_attempt_at, last_error, created_at, delivered_at"
)


class OutboxMixin(Connection):
    """The outbox queries of :class:`~flowrunner.state.sqlite.store.Store`."""

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
        """Claim up to ``limit`` pending pushes for ``owner`` until ``now + seconds``.

        A push is claimable when no live lease holds it and it is due: its next attempt
        is at or before ``due_by`` (default ``now``), or, with ``ignore_schedule``, it
        was not attempted since ``due_by``. ``ids`` restricts the claim to those pushes.
        One ``UPDATE ... RETURNING`` statement: two senders never claim the same push.

        Times written by a clock that was ahead are not believed: a lease ending more
        than :data:`CLOCK_SLACK` seconds after ``now + seconds``, a next attempt more than
        that after ``horizon`` (default: never), and with ``ignore_schedule`` a last
        attempt after ``now``, count as past.
        """
        params: dict[str, Any] = {
            "owner": owner,
            "until": now + seconds,
            "stale_lease": now + seconds + CLOCK_SLACK,
            "now": now,
            "cutoff": now if due_by is None else due_by,
            "horizon": math.inf if horizon is None else horizon + CLOCK_SLACK,
            "limit": limit,
        }
        params.update({f"id{i}": value for i, value in enumerate(ids or ())})
        sql = _lease_sql(ignore_schedule, None if ids is None else len(ids))
        with self._write("lease pushes") as cur:
            rows = cur.execute(sql, params).fetchall()
        return sorted((OutboxRow.from_db(r) for r in rows), key=lambda r: r.next_attempt_at)

    def mark_delivered(self, id: str, owner: str, *, now: float) -> bool:
        """Record a successful attempt; False when ``owner`` no longer holds the lease."""
        return self.mark_delivered_many([id], owner, now=now) == 1

    def mark_delivered_many(self, ids: Sequence[str], owner: str, *, now: float) -> int:
        """:meth:`mark_delivered` for many pushes in one transaction; how many it marked."""
        changes = "status = 'delivered', delivered_at = :now, last_error = NULL"
        return self._mark_many(ids, owner, changes, {"now": now})

    def mark_retry(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Record a failed attempt to be retried at ``next_attempt_at``."""
        return self._reschedule(id, owner, now, next_attempt_at, error, attempted=True)

    def mark_dead(self, id: str, owner: str, *, now: float, error: str) -> bool:
        """Record a failed attempt after which the push is given up (dead-lettered)."""
        return self._mark(
            id, owner, "status = 'dead', last_error = :error", {"now": now, "error": error}
        )

    def mark_blocked(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Keep a push pending without counting an attempt (nothing could be sent)."""
        return self._reschedule(id, owner, now, next_attempt_at, error, attempted=False)

    def _reschedule(
        self, id: str, owner: str, now: float, at: float, error: str, *, attempted: bool
    ) -> bool:
        values = {"now": now, "next": at, "error": error}
        clause = "next_attempt_at = :next, last_error = :error"
        return self._mark(id, owner, clause, values, attempted=attempted)

    def _mark(
        self, id: str, owner: str, changes: str, params: dict[str, Any], *, attempted: bool = True
    ) -> bool:
        return self._mark_many([id], owner, changes, params, attempted=attempted) == 1

    def _mark_many(
        self,
        ids: Sequence[str],
        owner: str,
        changes: str,
        params: dict[str, Any],
        *,
        attempted: bool = True,
    ) -> int:
        """Settle an attempt at each push of ``ids`` that ``owner`` still holds, in one
        transaction; how many it settled."""
        count = ", attempts = attempts + 1" if attempted else ""
        settled = 0
        with self._write("update a push" if len(ids) == 1 else "update pushes") as cur:
            # one statement per IDS_PER_UPDATE pushes: one step into SQLite, not one each
            for start in range(0, len(ids), IDS_PER_UPDATE):
                chunk = ids[start : start + IDS_PER_UPDATE]
                names = ", ".join(f":id{i}" for i in range(len(chunk)))
                sql = (
                    f"UPDATE outbox SET {changes}{count}, last_attempt_at = :now, "
                    "lease_owner = NULL, lease_until = NULL "
                    f"WHERE id IN ({names}) AND lease_owner = :owner AND +status = 'pending'"
                )
                values = {f"id{i}": id_ for i, id_ in enumerate(chunk)}
                cur.execute(sql, {**params, "owner": owner, **values})
                settled += cur.rowcount
        return settled

    def deliveries(self, *, dead_only: bool = False) -> list[dict[str, Any]]:
        """Every push, oldest first, in the ``deliveries list --json`` shape."""
        where = "WHERE status = 'dead'" if dead_only else ""
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM outbox {where} ORDER BY created_at, id")
        return [OutboxRow.from_db(r).as_dict() for r in rows]

    def delivery(self, id: str) -> dict[str, Any] | None:
        """One push in the ``deliveries list --json`` shape, or None when unknown."""
        row = self.outbox_row(id)
        return None if row is None else row.as_dict()

    def outbox_rows(self, ids: Sequence[str]) -> dict[str, OutboxRow]:
        """The stored pushes among ``ids`` (at most 500), by id."""
        marks = ", ".join("?" * len(ids))
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id IN ({marks})", tuple(ids))
        return {row.id: row for row in map(OutboxRow.from_db, rows)}

    def release_leases(self, owner: str) -> int:
        """End every lease ``owner`` holds on a pending push; returns how many."""
        with self._write("release pushes") as cur:
            cur.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner = ? AND status = 'pending'",
                (owner,),
            )
            return cur.rowcount

    def push_lease_owners(self, *, now: float) -> list[str]:
        """The owners of the live leases on pending pushes."""
        sql = (
            "SELECT DISTINCT lease_owner FROM outbox WHERE status = 'pending' "
            "AND lease_owner IS NOT NULL AND lease_until > ?"
        )
        return [row[0] for row in self._read(sql, (now,))]

    def push_states(self, ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        """``(webhook, status, attempts)`` of the stored pushes among ``ids`` (at most
        500), by id; their payloads are not read."""
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT id, webhook, status, attempts FROM outbox WHERE id IN ({marks})"
        return {row[0]: (row[1], row[2], row[3]) for row in self._read(sql, tuple(ids))}

    def outbox_row(self, id: str) -> OutboxRow | None:
        """The stored push ``id``, or None."""
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id = ?", (id,))
        return OutboxRow.from_db(rows[0]) if rows else None

    def retry(self, id: str, *, now: float | None = None) -> bool:
        """Make a pending or dead push due now; a dead one starts a fresh schedule.

        Returns False when no such push is pending or dead. A live lease is kept, so a
        sender busy with the push is never joined by a second one.
        """
        with self._write("retry a push") as cur:
            cur.execute(_RETRY + " AND id = ?", (now or time.time(), id))
            return cur.rowcount == 1

    def retry_all_dead(self, *, now: float | None = None) -> int:
        """Make every dead push pending and due now; returns how many."""
        with self._write("retry dead pushes") as cur:
            cur.execute(_RETRY + " AND status = 'dead'", (now or time.time(),))
            return cur.rowcount

    def next_due(self) -> float | None:
        """When the earliest pending push may be attempted (leases count); None: none."""
        rows = self._read(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM outbox "
            "WHERE status = 'pending'"
        )
        value = rows[0][0]
        return None if value is None else float(value)

    def pending_count(self) -> int:
        """How many pushes are still pending."""
        return int(self._read("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")[0][0])

    def dead_count(self) -> int:
        """How many pushes are dead (given up)."""
        return int(self._read("SELECT COUNT(*) FROM outbox WHERE status = 'dead'")[0][0])


IDS_PER_UPDATE = 500  # with a few more parameters: below SQLite's oldest limit of 999
_RETRY = (
    "UPDATE outbox SET attempts = CASE status WHEN 'dead' THEN 0 ELSE attempts END, "
    "status = 'pending', next_attempt_at = ? WHERE status IN ('pending', 'dead')"
)


def _lease_sql(ignore_schedule: bool, id_count: int | None) -> str:
    """The claiming statement of :meth:`Store.lease` (named parameters)."""
    due = (
        "(COALESCE(last_attempt_at, -1) < :cutoff OR last_attempt_at > :now)"
        if ignore_schedule
        else "(next_attempt_at <= :cutoff OR next_attempt_at > :horizon)"
    )
    if id_count is None:
        chosen = "status = 'pending'"
    else:
        # '+status' keeps the planner on the primary key: a long outage may leave many
        # pending pushes, and claiming a few named ones must not scan them all
        names = ", ".join(f":id{i}" for i in range(id_count)) or "NULL"
        chosen = f"id IN ({names}) AND +status = 'pending'"
    return (
        "UPDATE outbox SET lease_owner = :owner, lease_until = :until WHERE id IN ("
        f"SELECT id FROM outbox WHERE {chosen} AND "
        f"(lease_until IS NULL OR lease_until <= :now OR lease_until > :stale_lease) "
        f"AND {due} "
        f"ORDER BY next_attempt_at LIMIT :limit) RETURNING {_ROW_COLUMNS}"
    )
