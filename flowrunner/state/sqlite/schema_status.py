"""``flowrunner db status`` for a SQLite file: its schema version, read without writing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flowrunner.errors import StateError
from flowrunner.state.records import SchemaStatus
from flowrunner.state.sqlite.store import SCHEMA_VERSION

# SQLite keeps one number (PRAGMA user_version); each version's name, for people
NAMES = {1: "user keys, runs, outbox", 2: "execution queue, requests, idempotency keys"}


def read_status(path: Path) -> SchemaStatus:
    """The schema version of the state file at ``path`` (0 when there is no file yet).

    Raises :class:`StateError` when the file is not a readable SQLite database.
    """
    version = 0
    if path.exists():
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot read the schema version ({exc})") from None
    known = sorted(NAMES.items())
    return SchemaStatus(
        backend="sqlite",
        where=str(path),
        version=version,
        latest=SCHEMA_VERSION,
        applied=tuple((v, n, None) for v, n in known if v <= version),
        pending=tuple((v, n) for v, n in known if v > version),
    )
