"""The on-complete outbox on PostgreSQL: leasing pushes, recording attempts, listing.

Any worker on any machine may send any due push; a lease (``lease_owner`` until
``lease_until``) taken with ``FOR UPDATE SKIP LOCKED`` keeps two senders off one push.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from flowrunner.state.postgres.connection import PgConnection, storable
from flowrunner.state.records import CLOCK_SLACK, OutboxRow

_ROW_COLUMNS = (
    "id, execution_id, webhook, url, headers, payload, status, attempts, "
    "next_attempt_at, last_attempt_at, last_error, created_at, delivered_at"
)
_RETRY = (
    "UPDATE outbox SET attempts = CASE status WHEN 'dead' THEN 0 ELSE attempts END, "
    "status = 'pending', next_attempt_at = %s WHERE status IN ('pending', 'dead')"
)


class PgOutbox:
    """The outbox queries of :class:`~flowrunner.state.postgres.store.PgStore`."""

    db: PgConnection

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
        Rows another sender is claiming at this moment are skipped, not waited for.

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
            "ids": list(ids or ()),
        }
        sql = _lease_sql(ignore_schedule, ids is not None)
        rows = self.db.run("lease pushes", lambda cur: cur.execute(sql, params).fetchall())
        return sorted((OutboxRow.from_db(r) for r in rows), key=lambda r: r.next_attempt_at)

    def mark_delivered(self, id: str, owner: str, *, now: float) -> bool:
        """Record a successful attempt; False when ``owner`` no longer holds the lease."""
        return self.mark_delivered_many([id], owner, now=now) == 1

    def mark_delivered_many(self, ids: Sequence[str], owner: str, *, now: float) -> int:
        """:meth:`mark_delivered` for many pushes in one statement; how many it marked."""
        changes = "status = 'delivered', delivered_at = %(now)s, last_error = NULL"
        return self._mark_many(ids, owner, changes, {"now": now})

    def mark_retry(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Record a failed attempt to be retried at ``next_attempt_at``."""
        return self._reschedule(id, owner, now, next_attempt_at, error, attempted=True)

    def mark_dead(self, id: str, owner: str, *, now: float, error: str) -> bool:
        """Record a failed attempt after which the push is given up (dead-lettered)."""
        changes = "status = 'dead', last_error = %(error)s"
        return self._mark_many([id], owner, changes, {"now": now, "error": error}) == 1

    def mark_blocked(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Keep a push pending without counting an attempt (nothing could be sent)."""
        return self._reschedule(id, owner, now, next_attempt_at, error, attempted=False)

    def _reschedule(
        self, id: str, owner: str, now: float, at: float, error: str, *, attempted: bool
    ) -> bool:
        values = {"now": now, "next": at, "error": error}
        clause = "next_attempt_at = %(next)s, last_error = %(error)s"
        return self._mark_many([id], owner, clause, values, attempted=attempted) == 1

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
        statement; how many it settled."""
        count = ", attempts = attempts + 1" if attempted else ""
        sql = (
            f"UPDATE outbox SET {changes}{count}, last_attempt_at = %(now)s, "
            "lease_owner = NULL, lease_until = NULL "
            "WHERE id = ANY(%(ids)s) AND lease_owner = %(owner)s AND status = 'pending'"
        ).encode()
        values = {**params, "ids": list(ids), "owner": owner}
        action = "update a push" if len(ids) == 1 else "update pushes"
        return self.db.run(action, lambda cur: cur.execute(sql, values).rowcount)

    def deliveries(self, *, dead_only: bool = False) -> list[dict[str, Any]]:
        """Every push, oldest first, in the ``deliveries list --json`` shape."""
        where = "WHERE status = 'dead'" if dead_only else ""
        rows = self.db.read(f"SELECT {_ROW_COLUMNS} FROM outbox {where} ORDER BY created_at, id")
        return [OutboxRow.from_db(r).as_dict() for r in rows]

    def delivery(self, id: str) -> dict[str, Any] | None:
        """One push in the ``deliveries list --json`` shape, or None when unknown."""
        row = self.outbox_row(id)
        return None if row is None else row.as_dict()

    def outbox_rows(self, ids: Sequence[str]) -> dict[str, OutboxRow]:
        """The stored pushes among ``ids`` (at most 500), by id."""
        ids = [i for i in ids if storable(i)]
        sql = f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id = ANY(%s)"
        rows = self.db.read(sql, (list(ids),))
        return {row.id: row for row in map(OutboxRow.from_db, rows)}

    def push_lease_owners(self, *, now: float) -> list[str]:
        """The owners of the live leases on pending pushes."""
        sql = (
            "SELECT DISTINCT lease_owner FROM outbox WHERE status = 'pending' "
            "AND lease_owner IS NOT NULL AND lease_until > %s"
        )
        return [row[0] for row in self.db.read(sql, (now,))]

    def push_states(self, ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        """``(webhook, status, attempts)`` of the stored pushes among ``ids`` (at most
        500), by id; their payloads are not read."""
        ids = [i for i in ids if storable(i)]
        sql = "SELECT id, webhook, status, attempts FROM outbox WHERE id = ANY(%s)"
        return {row[0]: (row[1], row[2], row[3]) for row in self.db.read(sql, (list(ids),))}

    def release_leases(self, owner: str) -> int:
        """End every lease ``owner`` holds on a pending push; returns how many."""
        sql = (
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner = %s AND status = 'pending'"
        )
        return self.db.run("release pushes", lambda cur: cur.execute(sql, (owner,)).rowcount)

    def outbox_row(self, id: str) -> OutboxRow | None:
        """The stored push ``id``, or None."""
        if not storable(id):
            return None
        rows = self.db.read(f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id = %s", (id,))
        return OutboxRow.from_db(rows[0]) if rows else None

    def retry(self, id: str, *, now: float | None = None) -> bool:
        """Make a pending or dead push due now; a dead one starts a fresh schedule.

        Returns False when no such push is pending or dead. A live lease is kept.
        """
        if not storable(id):
            return False
        at = now or time.time()
        sql = _RETRY + " AND id = %s"
        return self.db.run("retry a push", lambda cur: cur.execute(sql, (at, id)).rowcount == 1)

    def retry_all_dead(self, *, now: float | None = None) -> int:
        """Make every dead push pending and due now; returns how many."""
        at = now or time.time()
        sql = _RETRY + " AND status = 'dead'"
        return self.db.run("retry dead pushes", lambda cur: cur.execute(sql, (at,)).rowcount)

    def next_due(self) -> float | None:
        """When the earliest pending push may be attempted (leases count); None: none."""
        rows = self.db.read(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) FROM outbox "
            "WHERE status = 'pending'"
        )
        value = rows[0][0]
        return None if value is None else float(value)

    def pending_count(self) -> int:
        """How many pushes are still pending."""
        return int(self.db.read("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")[0][0])

    def dead_count(self) -> int:
        """How many pushes were given up (dead-lettered)."""
        return int(self.db.read("SELECT COUNT(*) FROM outbox WHERE status = 'dead'")[0][0])


def _lease_sql(ignore_schedule: bool, by_id: bool) -> bytes:
    """The claiming statement of :meth:`PgOutbox.lease` (named parameters)."""
    due = (
        "(COALESCE(last_attempt_at, -1) < %(cutoff)s OR last_attempt_at > %(now)s)"
        if ignore_schedule
        else "(next_attempt_at <= %(cutoff)s OR next_attempt_at > %(horizon)s)"
    )
    chosen = "id = ANY(%(ids)s) AND status = 'pending'" if by_id else "status = 'pending'"
    return (
        "UPDATE outbox SET lease_owner = %(owner)s, lease_until = %(until)s WHERE id IN ("
        f"SELECT id FROM outbox WHERE {chosen} AND "
        "(lease_until IS NULL OR lease_until <= %(now)s OR lease_until > %(stale_lease)s) "
        f"AND {due} "
        "ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
        f"RETURNING {_ROW_COLUMNS}"
    ).encode()
