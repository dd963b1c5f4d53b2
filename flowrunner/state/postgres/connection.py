"""A connection to the PostgreSQL store: transactions, reconnection, error translation.

Every statement runs in a function given to :meth:`PgConnection.run`, inside one
transaction. When the server goes away (a restart, a dropped connection, a terminated
backend), the connection is opened again with exponential backoff and the function runs
again, for up to :data:`RECONNECT_SECONDS`; a serialization failure or a deadlock is
retried the same way. Every other driver error becomes a
:class:`~flowrunner.errors.StateError` naming the store by its URL without the password,
with every known secret masked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from flowrunner.errors import StateError
from flowrunner.secrets import SCRUBBER, remember
from flowrunner.source.model import PostgresPlace
from flowrunner.state.postgres.url import redacted, remember_password

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

CONNECT_TIMEOUT = 10  # seconds for one connection attempt
OPEN_SECONDS = 2.0  # how long opening a store keeps trying: a command fails fast
RECONNECT_SECONDS = 60.0  # how long an open store keeps trying to get its server back
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0

# what a fresh attempt may cure: the server went away or is starting, a lock was lost
_RETRIED_STATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003"})
# what it never cures, even when it comes while connecting
_FATAL_WORDS = ("password authentication", "does not exist", "no pg_hba.conf", "role ")


def transient(exc: psycopg.Error) -> bool:
    """Whether another attempt (on a new connection) may succeed."""
    if exc.sqlstate in _RETRIED_STATES:
        return True
    if isinstance(exc, psycopg.errors.OperationalError | psycopg.InterfaceError):
        text = str(exc).lower()
        return exc.sqlstate is None and not any(word in text for word in _FATAL_WORDS)
    return False


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: doubling, capped, with jitter."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.0))


def storable(text: str) -> bool:
    """Whether ``text`` can be a PostgreSQL text value (no NUL character): an id that
    cannot be stored is one that is not there."""
    return "\x00" not in text


def describe(exc: psycopg.Error) -> str:
    """The first line of a driver error, with every known secret masked."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return SCRUBBER.scrub(lines[0] if lines else type(exc).__name__)


class PgConnection:
    """One connection of a store, opened again when lost (one thread at a time)."""

    def __init__(self, place: PostgresPlace, password: str | None) -> None:
        remember_password(place.url)
        if password:
            remember(password)
        self.place = place
        self.name = redacted(place.url)
        self._password = password
        self._conn: psycopg.Connection[Any] | None = None
        self.reconnects = 0  # transactions tried again after a transient failure, for tests

    def connect(self, *, within: float = OPEN_SECONDS) -> None:
        """Open the connection, trying for ``within`` seconds on transient failures."""
        self.run("connect", lambda cur: None, within=within)

    def connect_kwargs(self) -> dict[str, Any]:
        """What :func:`psycopg.connect` needs besides the URL (and ``autocommit``)."""
        extra: dict[str, Any] = {} if self._password is None else {"password": self._password}
        return {"connect_timeout": CONNECT_TIMEOUT, "application_name": "flowrunner", **extra}

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.place.url, autocommit=True, **self.connect_kwargs())
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def run(
        self,
        action: str,
        fn: Callable[[Cursor], T],
        *,
        again: Callable[[Cursor], T] | None = None,
        within: float = RECONNECT_SECONDS,
    ) -> T:
        """``fn(cursor)`` in one transaction, retried on transient failures for up to
        ``within`` seconds; ``again`` (default ``fn``) is what a retry runs, for a write
        whose first commit may have landed before its connection was lost.

        Raises :class:`StateError` naming the store and ``action``.
        """
        deadline = time.monotonic() + within
        attempt = 0
        while True:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    return (fn if attempt == 0 or again is None else again)(cur)
            except psycopg.Error as exc:
                if not transient(exc):
                    raise StateError(f"{self.name}: cannot {action} ({describe(exc)})") from None
                self._drop()
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"{self.name}: cannot {action}: the server did not answer for "
                        f"{within:g} s ({describe(exc)})"
                    ) from None
            time.sleep(backoff(attempt))
            attempt += 1
            self.reconnects += 1

    def read(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of one query (retried like :meth:`run`)."""
        return self.run("read", lambda cur: cur.execute(sql, params).fetchall())

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._drop()

    def backend_pid(self) -> int:
        """The server process of this connection (for tests that cut it)."""
        return int(self.read("SELECT pg_backend_pid()")[0][0])

    def sibling(self) -> PgConnection:
        """A new, not yet opened connection to the same store."""
        return PgConnection(self.place, self._password)
