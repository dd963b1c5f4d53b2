"""The schema of the PostgreSQL store, as numbered migrations.

Each migration runs once, in its own transaction, recorded in ``flowrunner_migrations``.
Opening a store applies what is missing under a transaction-level advisory lock, so two
processes starting at once never race: the second waits, then finds nothing left to do.
A database migrated by a newer flowrunner is refused rather than misread.
"""

from __future__ import annotations

import time

from flowrunner.errors import StateError
from flowrunner.source.model import PostgresPlace
from flowrunner.state.postgres.connection import Cursor, PgConnection
from flowrunner.state.records import SchemaStatus

LOCK_CLASS = 0x466C6F77  # the first key of flowrunner's advisory locks ("Flow")
MIGRATION_LOCK = 1  # the second key: the migration lock
USER_KEY_LOCK = 2  # the second key of a user key's lock is its hash; this is the first

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS flowrunner_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at double precision NOT NULL
)"""

_INITIAL = """
CREATE TABLE user_keys (
    name text PRIMARY KEY,
    value text NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE user_keys_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version bigint NOT NULL
);
INSERT INTO user_keys_version VALUES (true, 0);
CREATE FUNCTION flowrunner_user_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE user_keys_version SET version = version + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER user_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON user_keys
    FOR EACH STATEMENT EXECUTE FUNCTION flowrunner_user_keys_changed();
CREATE TABLE runs (
    execution_id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    flow text NOT NULL,
    status text NOT NULL,
    started_at double precision NOT NULL,
    ended_at double precision NOT NULL,
    record text NOT NULL
);
CREATE INDEX runs_started ON runs (started_at DESC, seq DESC);
CREATE TABLE outbox (
    id text PRIMARY KEY,
    execution_id text NOT NULL,
    webhook text NOT NULL,
    url text NOT NULL,
    headers text NOT NULL,
    payload bytea NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL,
    last_attempt_at double precision,
    last_error text,
    lease_owner text,
    lease_until double precision,
    created_at double precision NOT NULL,
    delivered_at double precision
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_execution ON outbox (execution_id);
CREATE INDEX outbox_created ON outbox (created_at, id);
"""

_QUEUE = """
CREATE TABLE queue (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id text NOT NULL UNIQUE,
    request_id text NOT NULL,
    flow text NOT NULL,
    inputs text NOT NULL,
    enqueued_at double precision NOT NULL,
    lease_owner text,
    lease_until double precision
);
CREATE INDEX queue_waiting ON queue (seq) WHERE lease_owner IS NULL;
CREATE INDEX queue_lease ON queue (lease_until) WHERE lease_owner IS NOT NULL;
CREATE INDEX queue_owner ON queue (lease_owner);
CREATE TABLE requests (
    request_id text PRIMARY KEY,
    flow text NOT NULL,
    answer text NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX requests_created ON requests (created_at);
CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    fingerprint text NOT NULL,
    request_id text NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX idempotency_created ON idempotency_keys (created_at);
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "user keys, runs, outbox", _INITIAL),
    (2, "execution queue, requests, idempotency keys", _QUEUE),
)
LATEST = MIGRATIONS[-1][0]


def _applied(cur: Cursor) -> list[tuple[int, str, float | None]]:
    cur.execute("SELECT to_regclass('flowrunner_migrations') IS NOT NULL")
    row = cur.fetchone()
    if row is None or not row[0]:
        return []
    cur.execute("SELECT version, name, applied_at FROM flowrunner_migrations ORDER BY version")
    return [(int(v), str(n), float(at)) for v, n, at in cur.fetchall()]


def _status(conn: PgConnection, applied: list[tuple[int, str, float | None]]) -> SchemaStatus:
    version = max((v for v, _, _ in applied), default=0)
    return SchemaStatus(
        backend="postgresql",
        where=conn.name,
        version=version,
        latest=LATEST,
        applied=tuple(applied),
        pending=tuple((v, n) for v, n, _ in MIGRATIONS if v > version),
    )


def migrate(conn: PgConnection) -> SchemaStatus:
    """Apply every missing migration, each in its own transaction, under the advisory
    lock; returns the status afterwards. Raises :class:`StateError` for a newer schema."""

    def step(cur: Cursor) -> bool:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
        cur.execute(_VERSION_TABLE)
        done = max((v for v, _, _ in _applied(cur)), default=0)
        _refuse_newer(conn, done)
        todo = [m for m in MIGRATIONS if m[0] > done]
        if not todo:
            return False
        version, name, sql = todo[0]
        cur.execute(sql.encode())
        cur.execute(
            "INSERT INTO flowrunner_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
            (version, name, time.time()),
        )
        return len(todo) > 1

    while conn.run("migrate the schema", step):
        pass
    return _status(conn, conn.run("read the schema version", _applied))


def _refuse_newer(conn: PgConnection, version: int) -> None:
    if version > LATEST:
        raise StateError(
            f"{conn.name}: migrated by a newer flowrunner (schema {version}, this one "
            f"knows {LATEST})"
        )


def current(conn: PgConnection) -> int:
    """The schema version applied to the database (0: none)."""
    return max((v for v, _, _ in conn.run("read the schema version", _applied)), default=0)


def read_status(place: PostgresPlace, password: str | None) -> SchemaStatus:
    """The schema status of the database at ``place``, changing nothing."""
    conn = PgConnection(place, password)
    try:
        conn.connect()
        return _status(conn, conn.run("read the schema version", _applied))
    finally:
        conn.close()
