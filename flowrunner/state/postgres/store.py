"""The :class:`PgStore`: opening a PostgreSQL store, its migrations, and the user keys.

The outbox and the execution history come from :mod:`flowrunner.state.postgres.outbox`
and :mod:`flowrunner.state.postgres.history`. User keys are shared by every process on
every machine: a plain write is last-write-wins in commit order; a read-modify-write
(:meth:`PgStore.update_user_keys`) holds a transaction-level advisory lock per key name,
which also covers a key that does not exist yet, so concurrent increments are never lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from flowrunner.source.model import PostgresPlace
from flowrunner.state.postgres import migrations
from flowrunner.state.postgres.connection import OPEN_SECONDS, Cursor, PgConnection
from flowrunner.state.postgres.history import PgHistory
from flowrunner.state.postgres.listen import Listener
from flowrunner.state.postgres.outbox import PgOutbox
from flowrunner.state.postgres.queue import PgQueue
from flowrunner.state.records import dump_value

_UPSERT_KEY = (
    "INSERT INTO user_keys (name, value, updated_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def key_lock(name: str) -> int:
    """The second key of user key ``name``'s advisory lock (a stable signed 32-bit hash)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def stored_user_keys(place: PostgresPlace, password: str | None) -> dict[str, Any]:
    """The user keys stored at ``place``, read without creating or changing anything
    (none when the database has no flowrunner schema yet)."""
    conn = PgConnection(place, password)
    try:
        conn.connect()
        if migrations.current(conn) == 0:
            return {}
        rows = conn.read("SELECT name, value FROM user_keys")
        return {name: json.loads(value) for name, value in rows}
    finally:
        conn.close()


class PgStore(PgQueue, PgOutbox, PgHistory):
    """A connection to the PostgreSQL store. Use it from the thread that opened it."""

    def __init__(self, db: PgConnection) -> None:
        self.db = db
        self.place = db.place
        self.name = db.name

    @classmethod
    def open(
        cls, place: PostgresPlace, password: str | None, *, within: float = OPEN_SECONDS
    ) -> PgStore:
        """Connect (trying for ``within`` seconds) and apply missing migrations.

        Raises :class:`~flowrunner.errors.StateError` naming the store (never its
        password) when the server cannot be reached or the schema is newer.
        """
        db = PgConnection(place, password)
        try:
            db.connect(within=within)
            if migrations.current(db) != migrations.LATEST:
                migrations.migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def sibling(self) -> PgStore:
        """Another store object on a new connection to the same database (for a thread)."""
        db = self.db.sibling()
        db.connect()
        return PgStore(db)

    def listen(self, wake: Callable[[], None]) -> Listener:
        """Call ``wake`` (from another thread) whenever executions are queued; the
        returned listener's ``close`` stops it."""
        return Listener(self.db.sibling(), wake).start()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.db.close()

    def integrity_ok(self) -> bool:
        """True when the server answers and the schema is the one this flowrunner knows."""
        return migrations.current(self.db) == migrations.LATEST

    def check_before_use(self) -> None:
        """PostgreSQL checks its own pages; what can go wrong here before a side effect
        is a store of another schema, which :meth:`open` refused already."""

    # ---- user keys ---------------------------------------------------------------

    def user_keys(self) -> dict[str, Any]:
        """Every stored user key and its value."""
        rows = self.db.read("SELECT name, value FROM user_keys ORDER BY name")
        return {name: json.loads(value) for name, value in rows}

    def data_version(self) -> int:
        """A number that changes whenever a transaction that wrote user keys commits
        (kept by a trigger on the table, so writes from anywhere count)."""
        return int(self.db.read("SELECT version FROM user_keys_version")[0][0])

    def seed_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store each of ``values`` whose name is not stored yet (a stored value wins)."""
        if not values:
            return
        now = time.time()
        rows = [(name, dump_value(value), now) for name, value in values.items()]
        sql = (
            "INSERT INTO user_keys (name, value, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING"
        )
        self.db.run("seed user keys", lambda cur: cur.executemany(sql, rows))

    def set_user_key(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` at once; the last write wins."""
        self.set_user_keys({name: value})

    def set_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store several user keys in one transaction; the last write wins."""
        now = time.time()
        rows = [(name, dump_value(value), now) for name, value in sorted(values.items())]
        self.db.run("write user keys", lambda cur: cur.executemany(_UPSERT_KEY, rows))

    def update_user_key(self, name: str, update: Callable[[Any], Any], default: Any = None) -> Any:
        """Read, change and write one user key in one transaction; returns the new value."""

        def change(stored: dict[str, Any]) -> dict[str, Any]:
            return {name: update(stored.get(name, default))}

        return self.update_user_keys([name], change)[name]

    def update_user_keys(
        self, names: Collection[str], change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read the stored values of ``names``, hand them to ``change`` (unset names are
        left out) and store the values it returns, in one transaction holding each
        name's lock; returns them. Writers elsewhere wait for each other: none is lost.
        ``change`` may run more than once when the connection is lost meanwhile."""
        wanted = sorted(set(names))

        def update(cur: Cursor) -> dict[str, Any]:
            for lock in sorted({key_lock(n) for n in wanted}):  # one order: no deadlock
                cur.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (migrations.USER_KEY_LOCK, lock)
                )
            cur.execute("SELECT name, value FROM user_keys WHERE name = ANY(%s)", (wanted,))
            values = change({name: json.loads(value) for name, value in cur.fetchall()})
            now = time.time()
            rows = [(k, dump_value(v), now) for k, v in sorted(values.items())]
            cur.executemany(_UPSERT_KEY, rows)
            return values

        return self.db.run("update user keys", update)
