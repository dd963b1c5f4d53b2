"""A connection to the state file: transactions and sqlite3 error translation.

Writes run in ``BEGIN IMMEDIATE`` transactions behind a busy timeout, with a bounded
retry on top; every sqlite3 error becomes a :class:`~flowrunner.errors.StateError`
naming the file. :class:`~flowrunner.state.sqlite.store.Store` builds on this.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from flowrunner.errors import StateError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
BUSY_RETRIES = 5  # on top of the busy timeout, for SQLITE_BUSY returned without waiting


def _describe(exc: sqlite3.Error, action: str) -> str:
    """One line for a user: what could not be done, and why."""
    text = str(exc)
    if _is_busy(exc):
        return f"cannot {action}: another process kept the state file busy for too long"
    if "not a database" in text or "malformed" in text:
        return damaged(text)
    return f"cannot {action} ({text})"


def damaged(detail: str) -> str:
    """What to say about a damaged state file: keep it, it may hold pending pushes."""
    return (
        f"not a usable flowrunner state file, damaged ({detail}); 'flowrunner db check' "
        "lists the damage. Keep a copy before replacing it: it holds the pending pushes"
    )


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Connection:
    """The SQLite connection of a store and its transaction helpers (one thread)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ---- transactions and error translation --------------------------------------

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {_describe(exc, action)}") from None

    def _busy_retry(self, func: Callable[[], T]) -> T:
        for attempt in range(BUSY_RETRIES):
            try:
                return func()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == BUSY_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _write(self, action: str, *, durable: bool = False) -> Iterator[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` transaction; ``durable`` fsyncs it (synchronous=FULL)."""
        with self._translate(action):
            if durable:
                self._conn.execute("PRAGMA synchronous = FULL")
            try:
                self._busy_retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
                cur = self._conn.cursor()
                try:
                    yield cur
                    self._busy_retry(lambda: self._conn.execute("COMMIT"))
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            finally:
                if durable:
                    self._conn.execute("PRAGMA synchronous = NORMAL")

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._translate("read"):
            return self._conn.execute(sql, params).fetchall()
