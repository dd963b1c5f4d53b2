"""The embedded state store: user keys, execution history and the on-complete outbox.

One SQLite file (WAL mode) shared by every process of a project. Each process, and each
thread in it, uses its own :class:`Store` (SQLite connections belong to one thread).
Writes run in ``BEGIN IMMEDIATE`` transactions behind a busy timeout, with a bounded
retry on top, so concurrent writers wait for each other instead of failing; every
sqlite3 error becomes a :class:`~flowrunner.errors.StateError` naming the file.

Times are unix seconds (floats) inside the file and ISO 8601 strings in outputs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from flowrunner.errors import StateError

T = TypeVar("T")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
BUSY_RETRIES = 5  # on top of the busy timeout, for SQLITE_BUSY returned without waiting

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

_ROW_COLUMNS = (
    "id, execution_id, webhook, url, headers, payload, status, attempts, "
    "next_attempt_at, last_attempt_at, last_error, created_at, delivered_at"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewPush:
    """An on-complete push to record: ``id`` is its ``webhook-id``.

    ``headers`` are the rendered, non-secret headers of the webhook (no auth, no
    secrets); ``payload`` is the exact JSON body sent on every attempt.
    """

    id: str
    execution_id: str
    webhook: str
    url: str
    headers: dict[str, str]
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedRecord:
    """An execution record already written as JSON (``text``), with the fields the
    ``runs`` table indexes; :meth:`Store.record_ends` stores it without encoding again.
    """

    execution_id: str
    flow: str
    status: str
    started_at: float  # unix seconds
    ended_at: float
    text: str


Record = Mapping[str, Any] | EncodedRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    """One push as stored in the outbox."""

    id: str
    execution_id: str
    webhook: str
    url: str
    headers: dict[str, str]
    payload: bytes
    status: str
    attempts: int
    next_attempt_at: float
    last_attempt_at: float | None
    last_error: str | None
    created_at: float
    delivered_at: float | None

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> OutboxRow:
        (id_, execution_id, webhook, url, headers, payload, status, attempts) = row[:8]
        return cls(
            id=id_,
            execution_id=execution_id,
            webhook=webhook,
            url=url,
            headers=json.loads(headers),
            payload=bytes(payload),
            status=status,
            attempts=attempts,
            next_attempt_at=row[8],
            last_attempt_at=row[9],
            last_error=row[10],
            created_at=row[11],
            delivered_at=row[12],
        )

    def as_dict(self) -> dict[str, Any]:
        """The ``deliveries list --json`` shape (SPEC §7), plus ``delivered_at``."""
        return {
            "id": self.id,
            "execution_id": self.execution_id,
            "webhook": self.webhook,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at) if self.status == "pending" else None,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "delivered_at": iso(self.delivered_at),
        }


def iso(moment: float | None) -> str | None:
    """A unix time as ISO 8601 UTC with milliseconds; ``None`` stays ``None``."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def unix(text: Any) -> float:
    """An ISO 8601 string as unix seconds (naive means UTC); anything else: now."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return time.time()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _describe(exc: sqlite3.Error, action: str) -> str:
    """One line for a user: what could not be done, and why."""
    text = str(exc)
    if _is_busy(exc):
        return f"cannot {action}: another process kept the state file busy for too long"
    if "not a database" in text or "malformed" in text:
        return f"not a usable flowrunner state file ({text}); move it away to start a new one"
    return f"cannot {action} ({text})"


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Store:
    """A connection to the state file. Use it from the thread that opened it."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

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
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._translate("close"):
            self._conn.close()

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

    def integrity_ok(self) -> bool:
        """True when SQLite's quick check finds the file sound."""
        rows = self._read("PRAGMA quick_check")
        return len(rows) == 1 and rows[0][0] == "ok"

    # ---- user keys ---------------------------------------------------------------

    def seed_user_keys(self, values: Mapping[str, Any]) -> None:
        """Store each of ``values`` whose name is not stored yet (a stored value wins)."""
        now = time.time()
        rows = [(name, _dump(value), now) for name, value in values.items()]
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
        rows = [(name, _dump(value), now) for name, value in values.items()]
        with self._write("write user keys") as cur:
            cur.executemany(_UPSERT_KEY, rows)

    def update_user_key(self, name: str, update: Callable[[Any], Any], default: Any = None) -> Any:
        """Read, change and write one user key in one transaction; returns the new value.

        ``update`` gets the stored value (``default`` when unset). Concurrent updates
        from other processes wait for each other, so none is lost.
        """
        with self._write("update a user key") as cur:
            row = cur.execute("SELECT value FROM user_keys WHERE name = ?", (name,)).fetchone()
            value = update(default if row is None else json.loads(row[0]))
            cur.execute(_UPSERT_KEY, (name, _dump(value), time.time()))
        return value

    # ---- execution ends ----------------------------------------------------------

    def record_end(self, record: Record, push: NewPush | None) -> None:
        """Store an execution record and its push (if any) in one durable transaction.

        Both rows are written or neither; the push is on disk before this returns.
        """
        self.record_ends([(record, push)])

    def record_ends(self, items: Sequence[tuple[Record, NewPush | None]]) -> None:
        """Group commit of :meth:`record_end`: one transaction (and one fsync) for all."""
        runs = [_run_row(record) for record, _ in items]
        pushes = [_push_row(push) for _, push in items if push is not None]
        with self._write("record executions", durable=bool(pushes)) as cur:
            _insert_rows(cur, _INSERT_RUN, "(?, ?, ?, ?, ?, ?)", runs)
            _insert_rows(cur, _INSERT_PUSH, "(?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)", pushes)

    # ---- the outbox --------------------------------------------------------------

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
    ) -> list[OutboxRow]:
        """Claim up to ``limit`` pending pushes for ``owner`` until ``now + seconds``.

        A push is claimable when no live lease holds it and it is due: its next attempt
        is at or before ``due_by`` (default ``now``), or, with ``ignore_schedule``, it
        was not attempted since ``due_by``. ``ids`` restricts the claim to those pushes.
        One ``UPDATE ... RETURNING`` statement: two senders never claim the same push.
        """
        params: dict[str, Any] = {
            "owner": owner,
            "until": now + seconds,
            "now": now,
            "cutoff": now if due_by is None else due_by,
            "limit": limit,
        }
        params.update({f"id{i}": value for i, value in enumerate(ids or ())})
        sql = _lease_sql(ignore_schedule, None if ids is None else len(ids))
        with self._write("lease pushes") as cur:
            rows = cur.execute(sql, params).fetchall()
        return sorted((OutboxRow.from_db(r) for r in rows), key=lambda r: r.next_attempt_at)

    def mark_delivered(self, id: str, owner: str, *, now: float) -> bool:
        """Record a successful attempt; False when ``owner`` no longer holds the lease."""
        return self._mark(
            id,
            owner,
            "status = 'delivered', delivered_at = :now, last_error = NULL",
            {"now": now},
        )

    def mark_retry(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Record a failed attempt to be retried at ``next_attempt_at``."""
        return self._mark(
            id,
            owner,
            "next_attempt_at = :next, last_error = :error",
            {"now": now, "next": next_attempt_at, "error": error},
        )

    def mark_dead(self, id: str, owner: str, *, now: float, error: str) -> bool:
        """Record a failed attempt after which the push is given up (dead-lettered)."""
        return self._mark(
            id, owner, "status = 'dead', last_error = :error", {"now": now, "error": error}
        )

    def mark_blocked(
        self, id: str, owner: str, *, now: float, next_attempt_at: float, error: str
    ) -> bool:
        """Keep a push pending without counting an attempt (nothing could be sent)."""
        return self._mark(
            id,
            owner,
            "next_attempt_at = :next, last_error = :error",
            {"now": now, "next": next_attempt_at, "error": error},
            attempted=False,
        )

    def _mark(
        self, id: str, owner: str, changes: str, params: dict[str, Any], *, attempted: bool = True
    ) -> bool:
        count = ", attempts = attempts + 1" if attempted else ""
        sql = (
            f"UPDATE outbox SET {changes}{count}, last_attempt_at = :now, "
            "lease_owner = NULL, lease_until = NULL "
            "WHERE id = :id AND lease_owner = :owner AND status = 'pending'"
        )
        with self._write("update a push") as cur:
            cur.execute(sql, {**params, "id": id, "owner": owner})
            return cur.rowcount == 1

    def deliveries(self, *, dead_only: bool = False) -> list[dict[str, Any]]:
        """Every push, oldest first, in the ``deliveries list --json`` shape."""
        where = "WHERE status = 'dead'" if dead_only else ""
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM outbox {where} ORDER BY created_at, id")
        return [OutboxRow.from_db(r).as_dict() for r in rows]

    def delivery(self, id: str) -> dict[str, Any] | None:
        """One push in the ``deliveries list --json`` shape, or None when unknown."""
        row = self.outbox_row(id)
        return None if row is None else row.as_dict()

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

    # ---- execution history -------------------------------------------------------

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
                "started_at": iso(r[3]),
                "ended_at": iso(r[4]),
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
        self, *, older_than: float | None, keep: int | None, now: float | None = None
    ) -> int:
        """Delete history: runs started more than ``older_than`` seconds ago, and runs
        beyond the newest ``keep``. Returns how many runs were deleted.

        Runs whose push is still pending are kept; delivered pushes go with their run;
        dead pushes stay in the outbox (for ``deliveries list --dead`` and ``retry``).
        """
        cutoff = None if older_than is None else (now or time.time()) - older_than
        with self._write("prune runs") as cur:
            doomed = cur.execute(_doomed(cutoff, keep), {"cutoff": cutoff, "keep": keep}).fetchall()
            cur.executemany("DELETE FROM runs WHERE execution_id = ?", doomed)
            cur.executemany(
                "DELETE FROM outbox WHERE execution_id = ? AND status = 'delivered'", doomed
            )
        return len(doomed)


Item = tuple[Record, NewPush | None]


class AsyncRecorder:
    """Records execution ends from asyncio code without blocking the event loop.

    Callers queue up; one worker thread, with its own connection to ``store.path``,
    commits everything that queued while its previous commit ran in one transaction
    (group commit: one fsync for many executions). Each caller resumes only after the
    commit holding its record, so its push is on disk before anyone sends it.
    """

    def __init__(self, store: Store, *, max_batch: int = 2000) -> None:
        self.path = store.path
        self.commits = 0  # transactions committed, for tests and benchmarks
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowrunner-state")
        self._store: Store | None = None  # opened, used and closed in the worker thread
        self._queue: list[tuple[Item, asyncio.Future[None]]] = []
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncRecorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def record_end(self, record: Record, push: NewPush | None) -> None:
        """Like :meth:`Store.record_end`; returns once the record is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append(((record, push), future))
        if self._pump is None or self._pump.done():
            self._pump = loop.create_task(self._run())
        await future

    async def aclose(self) -> None:
        """Wait for queued records, then close the worker's connection and thread."""
        if self._pump is not None:
            await self._pump
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_store)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            items = [item for item, _ in batch]
            try:
                errors = await loop.run_in_executor(self._executor, self._commit, items)
            except Exception as exc:  # the worker itself failed: every caller hears of it
                errors = [exc] * len(batch)
            for (_, future), error in zip(batch, errors, strict=True):
                if future.done():
                    continue  # the caller was cancelled; its record is stored anyway
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def _commit(self, items: list[Item]) -> list[Exception | None]:
        if self._store is None:
            self._store = Store.open(self.path)
        try:
            self._store.record_ends(items)
            self.commits += 1
            return [None] * len(items)
        except StateError:
            if len(items) == 1:
                raise
        # one bad item must not fail its neighbours: commit them one by one
        return [self._commit_one(item) for item in items]

    def _commit_one(self, item: Item) -> Exception | None:
        assert self._store is not None
        try:
            self._store.record_ends([item])
        except StateError as exc:
            return exc
        self.commits += 1
        return None

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


_INSERT_RUN = "INSERT INTO runs (execution_id, flow, status, started_at, ended_at, record) VALUES "
_INSERT_PUSH = (
    "INSERT INTO outbox (id, execution_id, webhook, url, headers, payload, status, "
    "attempts, next_attempt_at, created_at) VALUES "
)
ROWS_PER_INSERT = 100  # 8 parameters a row at most: below SQLite's oldest limit of 999


def _insert_rows(cur: sqlite3.Cursor, head: str, row: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``rows`` with one multi-row statement per ROWS_PER_INSERT rows.

    sqlite3 lets go of the GIL once per statement step: one step for many rows keeps a
    recorder thread from trading the GIL with the event loop once per row.
    """
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        cur.execute(head + ", ".join([row] * len(chunk)), [v for r in chunk for v in r])


_UPSERT_KEY = (
    "INSERT INTO user_keys (name, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _run_row(record: Record) -> tuple[Any, ...]:
    if isinstance(record, EncodedRecord):
        return (
            record.execution_id,
            record.flow,
            record.status,
            record.started_at,
            record.ended_at,
            record.text,
        )
    started = unix(record.get("started_at"))
    ended = unix(record.get("ended_at")) if record.get("ended_at") else started
    return (
        str(record["execution_id"]),
        str(record.get("flow", "")),
        str(record.get("status", "")),
        started,
        ended,
        _dump(record),
    )


def _push_row(push: NewPush) -> tuple[Any, ...]:
    return (
        push.id,
        push.execution_id,
        push.webhook,
        push.url,
        _dump(push.headers),
        push.payload,
        push.created_at,
        push.created_at,
    )


_RETRY = (
    "UPDATE outbox SET attempts = CASE status WHEN 'dead' THEN 0 ELSE attempts END, "
    "status = 'pending', next_attempt_at = ? WHERE status IN ('pending', 'dead')"
)


def _doomed(cutoff: float | None, keep: int | None) -> str:
    """The query of runs that retention may delete (never those with a pending push)."""
    reasons = []
    if cutoff is not None:
        reasons.append("r.started_at < :cutoff")
    if keep is not None:
        reasons.append(
            "r.execution_id NOT IN (SELECT execution_id FROM runs "
            "ORDER BY started_at DESC, rowid DESC LIMIT :keep)"
        )
    return (
        f"SELECT r.execution_id FROM runs r WHERE ({' OR '.join(reasons) or '0'}) "
        "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.execution_id = r.execution_id "
        "AND o.status = 'pending')"
    )


def _lease_sql(ignore_schedule: bool, id_count: int | None) -> str:
    """The claiming statement of :meth:`Store.lease` (named parameters)."""
    due = (
        "COALESCE(last_attempt_at, -1) < :cutoff"
        if ignore_schedule
        else ("next_attempt_at <= :cutoff")
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
        f"(lease_until IS NULL OR lease_until <= :now) AND {due} "
        f"ORDER BY next_attempt_at LIMIT :limit) RETURNING {_ROW_COLUMNS}"
    )
