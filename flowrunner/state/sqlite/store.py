"""The :class:`Store`: opening the state file, its schema, and the user keys.

The outbox, the execution history and the execution queue come from
:mod:`flowrunner.state.sqlite.outbox`, :mod:`flowrunner.state.sqlite.history` and
:mod:`flowrunner.state.sqlite.queue`, which the store inherits.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from flowrunner.errors import StateError
from flowrunner.state.records import dump_value
from flowrunner.state.sqlite.connection import BUSY_TIMEOUT_MS, damaged
from flowrunner.state.sqlite.history import HistoryMixin
from flowrunner.state.sqlite.outbox import OutboxMixin
from flowrunner.state.sqlite.queue import QUEUE_SCHEMA, QueueMixin

SCHEMA_VERSION = 2  # 2: the execution queue of serve (flowrunner.state.sqlite.queue)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_keys (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    execution_id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    url TEXT NOT NULL,
    headers TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    last_error TEXT,
    lease_owner TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_execution ON outbox (execution_id);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_at);
"""


def stored_user_keys(path: Path) -> dict[str, Any]:
    """The user keys stored in the state file at ``path``, read without writing
    anything: none when there is no file yet (a dry run creates none).

    Raises :class:`StateError` when the file is not a readable flowrunner state file.
    """
    if not path.exists():
        return {}
    try:
        conn = read_only_connection(path)
        try:
            rows = conn.execute("SELECT name, value FROM user_keys").fetchall()
        finally:
            conn.close()
        return {name: json.loads(value) for name, value in rows}
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"{path}: cannot read the user keys ({exc})") from None


def read_only_connection(path: Path) -> sqlite3.Connection:
    """A connection for reading ``path`` (the caller writes nothing through it).

    Where neither the file nor its folder can be written (a read-only mount, another
    user's folder), SQLite cannot create the shared-memory file a WAL reader needs
    unless a writer already has: the file is then opened read-only, or failing that
    read as immutable, which is right as long as nobody writes it, and nobody can.
    Raises sqlite3.Error when the file cannot be read."""
    if _writable(path):  # a plain connection leaves no -wal/-shm files behind
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    except BaseException:
        conn.close()
        raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def integrity_problems(path: Path, limit: int = 20) -> list[str]:
    """SQLite's full integrity check of the file at ``path`` (read without writing):
    its first ``limit`` problems, none when the file is sound. A file that is not a
    database at all is one problem. Raises StateError when it cannot be read."""
    try:
        conn = read_only_connection(path)
    except sqlite3.OperationalError as exc:
        raise StateError(f"{path}: cannot open the state file ({exc})") from None
    except sqlite3.DatabaseError as exc:  # not a database at all
        return [str(exc)]
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    return [] if rows == [("ok",)] else [str(row[0]) for row in rows]


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


QUICK_CHECK_BYTES = 16 << 20  # files checked whole before a command's side effects


class Store(OutboxMixin, HistoryMixin, QueueMixin):
    """A connection to the state file. Use it from the thread that opened it."""

    # ---- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating folders, file and schema as needed) the state file at ``path``.

        Raises :class:`StateError` when the file is not a usable SQLite database.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{path}: cannot create its folder ({exc.strerror})") from None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state file ({exc})") from None
        store = cls(path, conn)
        try:
            store._setup()
        except StateError:
            conn.close()
            raise
        return store

    @classmethod
    def open_for_reading(cls, path: Path) -> Store:
        """Like :meth:`open`, and where the file or its folder cannot be written, a
        read-only store instead (its writing methods then raise StateError).

        Raises :class:`StateError` when the file cannot be read."""
        try:
            return cls.open(path)
        except StateError:
            if not path.exists() or _writable(path):
                raise
        try:
            conn = read_only_connection(path)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state file ({exc})") from None
        store = cls(path, conn)
        version = store._read("PRAGMA user_version")[0][0]
        if version != SCHEMA_VERSION:
            conn.close()
            raise StateError(f"{path}: read-only, and of schema {version} (not {SCHEMA_VERSION})")
        return store

    def _setup(self) -> None:
        with self._translate("open"):
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._busy_retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            if mode.fetchone()[0].lower() != "wal":
                raise StateError(f"{self.path}: cannot use WAL mode on this file system")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        version = self._read("PRAGMA user_version")[0][0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: written by a newer flowrunner (schema {version}, "
                f"this one knows {SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        # executescript() commits on its own; run the statements one by one instead so
        # the whole migration is one transaction that a second process waits for.
        with self._write("migrate") as cur:
            if cur.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # another process migrated while we waited
            for statement in (_SCHEMA + QUEUE_SCHEMA).split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._translate("close"):
            self._conn.close()

    def integrity_ok(self) -> bool:
        """True when SQLite's quick check finds the file sound."""
        rows = self._read("PRAGMA quick_check")
        return len(rows) == 1 and rows[0][0] == "ok"

    def check_before_use(self) -> None:
        """Look for damage before a command does anything it cannot take back.

        A file up to :data:`QUICK_CHECK_BYTES` gets SQLite's whole quick check (about
        2 ms per MiB); a larger one the check of its user keys and schema only, the
        full check being ``flowrunner db check``. Raises StateError naming what is
        damaged."""
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        sql = "PRAGMA quick_check" if size <= QUICK_CHECK_BYTES else "PRAGMA quick_check(user_keys)"
        with self._translate("check the state file"):
            rows = self._conn.execute(sql).fetchmany(3)
        if rows != [("ok",)]:
            found = "; ".join(str(row[0]) for row in rows)
            raise StateError(f"{self.path}: {damaged(found)}")

    # ---- user keys ---------------------------------------------------------------

    def seed_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store each of ``values`` whose name is not stored yet (a stored value wins)."""
        now = time.time()
        rows = [(name, dump_value(value), now) for name, value in values.items()]
        with self._write("seed user keys") as cur:
            cur.executemany(
                "INSERT INTO user_keys (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                rows,
            )

    def user_keys(self) -> dict[str, Any]:
        """Every stored user key and its value."""
        rows = self._read("SELECT name, value FROM user_keys ORDER BY name")
        return {name: json.loads(value) for name, value in rows}

    def data_version(self) -> int:
        """A number that changes whenever another connection commits to the file.

        Reads no table (SQLite's ``PRAGMA data_version``): a cache of this file checks it
        to notice writes made by other connections and processes.
        """
        return int(self._read("PRAGMA data_version")[0][0])

    def set_user_key(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` at once; the last write wins."""
        self.set_user_keys({name: value})

    def set_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store several user keys in one transaction; the last write wins."""
        now = time.time()
        rows = [(name, dump_value(value), now) for name, value in values.items()]
        with self._write("write user keys") as cur:
            cur.executemany(_UPSERT_KEY, rows)

    def update_user_keys(
        self, names: Collection[str], change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read the stored values of ``names``, hand them to ``change`` (unset names are
        left out) and store the values it returns, in one write transaction; returns
        them. Writers in other processes wait for each other, so none is lost."""
        marks = ",".join("?" * len(names))
        with self._write("update user keys") as cur:
            rows = cur.execute(
                f"SELECT name, value FROM user_keys WHERE name IN ({marks})", tuple(names)
            ).fetchall()
            values = change({name: json.loads(value) for name, value in rows})
            now = time.time()
            cur.executemany(_UPSERT_KEY, [(k, dump_value(v), now) for k, v in values.items()])
        return values

    def update_user_key(self, name: str, update: Callable[[Any], Any], default: Any = None) -> Any:
        """Read, change and write one user key in one transaction; returns the new value.

        ``update`` gets the stored value (``default`` when unset). Concurrent updates
        from other processes wait for each other, so none is lost.
        """
        with self._write("update a user key") as cur:
            row = cur.execute("SELECT value FROM user_keys WHERE name = ?", (name,)).fetchone()
            value = update(default if row is None else json.loads(row[0]))
            cur.execute(_UPSERT_KEY, (name, dump_value(value), time.time()))
        return value


_UPSERT_KEY = (
    "INSERT INTO user_keys (name, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
