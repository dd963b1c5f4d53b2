"""``LISTEN`` for queued executions: a daemon thread with its own connection that calls
``wake`` on every notification, and once after each (re)connection, since a
notification sent while it was away is lost. It reconnects with backoff for ever."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from flowrunner.state.postgres.connection import PgConnection, backoff
from flowrunner.state.postgres.queue import CHANNEL

POLL = 0.5  # seconds between looks at the stop flag


class Listener:
    """Listens on the queue channel of the store that ``db`` connects to."""

    def __init__(self, db: PgConnection, wake: Callable[[], None]) -> None:
        self._db = db
        self._wake = wake
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowrunner-listen", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening (returns within :data:`POLL` seconds)."""
        self._stop.set()
        self._thread.join(POLL * 4)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._listen()
                attempt = 0
            except psycopg.Error:
                self.connected.clear()
                time.sleep(backoff(attempt))
                attempt += 1

    def _listen(self) -> None:
        kwargs = self._db.connect_kwargs()
        with psycopg.connect(self._db.place.url, autocommit=True, **kwargs) as conn:
            conn.execute(f"LISTEN {CHANNEL}".encode())
            self.connected.set()
            self._wake()  # what was queued while this connection was away
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=POLL, stop_after=1):
                    self._wake()
