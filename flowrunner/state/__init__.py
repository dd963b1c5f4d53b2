"""The embedded state store: user keys, execution history and the on-complete outbox.

One SQLite file (WAL mode) shared by every process of a project. Each process, and each
thread in it, uses its own :class:`Store` (SQLite connections belong to one thread).
Writes run in ``BEGIN IMMEDIATE`` transactions behind a busy timeout, with a bounded
retry on top, so concurrent writers wait for each other instead of failing; every
sqlite3 error becomes a :class:`~flowrunner.errors.StateError` naming the file.

Times are unix seconds (floats) inside the file and ISO 8601 strings in outputs.
"""

from __future__ import annotations

from flowrunner.state.connection import BUSY_RETRIES, BUSY_TIMEOUT_MS
from flowrunner.state.history import ROWS_PER_INSERT
from flowrunner.state.recorder import AsyncRecorder
from flowrunner.state.records import EncodedRecord, Item, NewPush, OutboxRow, Record, iso, unix
from flowrunner.state.store import SCHEMA_VERSION, Store, integrity_problems, stored_user_keys

__all__ = [
    "BUSY_RETRIES",
    "BUSY_TIMEOUT_MS",
    "ROWS_PER_INSERT",
    "SCHEMA_VERSION",
    "AsyncRecorder",
    "EncodedRecord",
    "Item",
    "NewPush",
    "OutboxRow",
    "Record",
    "Store",
    "integrity_problems",
    "iso",
    "stored_user_keys",
    "unix",
]
