"""Where state lives: user keys, execution history and the on-complete outbox, behind the
:class:`~flowrunner.state.protocol.StateStore` seam; SQLite (:mod:`flowrunner.state.sqlite`)
is the embedded implementation, PostgreSQL (:mod:`flowrunner.state.postgres`) the shared one.

:func:`open_store` opens the store a project names (a path: SQLite; a
:class:`~flowrunner.source.model.PostgresPlace`: PostgreSQL); :func:`open_recorder` gives
the group committer of execution ends that fits it; :func:`read_user_keys` reads user keys
without writing anything; :func:`schema_status` and :func:`migrate` serve ``flowrunner db``.
Each process, and each thread in it, opens its own store object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowrunner.source.model import PostgresPlace, StatePlace
from flowrunner.state.protocol import Recorder, StateStore
from flowrunner.state.records import SchemaStatus

if TYPE_CHECKING:
    from flowrunner.secrets import Secrets

# The backends are imported when a store is opened: importing this package (for the
# protocol, say) must not import sqlite3 or a PostgreSQL driver.


def open_store(
    place: StatePlace, secrets: Secrets | None = None, *, reading: bool = False
) -> StateStore:
    """Open (creating and migrating it as needed) the state store at ``place``;
    ``secrets`` resolve a PostgreSQL password (default: the environment). ``reading``:
    the caller only reads, so a SQLite file it cannot write is opened read-only.

    Raises :class:`~flowrunner.errors.StateError` when it is not a usable store, and
    :class:`~flowrunner.errors.SecretError` when its password secret is not set.
    """
    if isinstance(place, PostgresPlace):
        from flowrunner.state.postgres.store import PgStore

        return PgStore.open(place, _password(place, secrets))
    from flowrunner.state.sqlite.store import Store

    return Store.open_for_reading(place) if reading else Store.open(place)


def integrity_problems(
    place: StatePlace, secrets: Secrets | None = None, limit: int = 20
) -> list[str]:
    """The full check of the store at ``place``, reading without writing: its first
    ``limit`` problems, none when it is sound. For SQLite, the file's integrity check;
    PostgreSQL checks its own pages, so there it is a schema that this flowrunner
    cannot use. Raises :class:`~flowrunner.errors.StateError` when it cannot be read."""
    if isinstance(place, PostgresPlace):
        status = schema_status(place, secrets)
        if status.version == status.latest:
            return []
        return [f"schema version {status.version} of {status.latest} (run 'flowrunner db migrate')"]
    from flowrunner.state.sqlite.store import integrity_problems as sqlite_problems

    return sqlite_problems(place, limit)


def open_recorder(store: StateStore) -> Recorder:
    """The group committer of execution ends for ``store`` (an async context manager)."""
    from flowrunner.state.sqlite.store import Store

    if isinstance(store, Store):
        from flowrunner.state.sqlite.recorder import AsyncRecorder

        return AsyncRecorder(store)
    from flowrunner.state.postgres.recorder import PgRecorder
    from flowrunner.state.postgres.store import PgStore

    assert isinstance(store, PgStore), f"no recorder for {type(store).__name__}"
    return PgRecorder(store)


def read_user_keys(place: StatePlace, secrets: Secrets | None = None) -> dict[str, Any]:
    """The user keys stored at ``place``, read without creating or changing anything
    (none when there is no store there yet)."""
    if isinstance(place, PostgresPlace):
        from flowrunner.state.postgres.store import stored_user_keys as pg_user_keys

        return pg_user_keys(place, _password(place, secrets))
    from flowrunner.state.sqlite.store import stored_user_keys

    return stored_user_keys(place)


def schema_status(place: StatePlace, secrets: Secrets | None = None) -> SchemaStatus:
    """The schema version of the store at ``place`` and the migrations still to apply;
    changes nothing. Raises :class:`~flowrunner.errors.StateError` when unreachable."""
    if isinstance(place, PostgresPlace):
        from flowrunner.state.postgres.migrations import read_status

        return read_status(place, _password(place, secrets))
    from flowrunner.state.sqlite.schema_status import read_status as sqlite_status

    return sqlite_status(place)


def migrate(place: StatePlace, secrets: Secrets | None = None) -> SchemaStatus:
    """Apply the migrations the store at ``place`` lacks (creating it as needed) under
    the store's own lock; returns the status afterwards."""
    open_store(place, secrets).close()
    return schema_status(place, secrets)


def describe(place: StatePlace) -> str:
    """``place`` for a person: a path, or the URL without its password."""
    if isinstance(place, PostgresPlace):
        from flowrunner.state.postgres.url import redacted

        return redacted(place.url)
    return str(place)


def _password(place: PostgresPlace, secrets: Secrets | None) -> str | None:
    if place.password is None:
        return None
    if secrets is None:
        from flowrunner.secrets import Secrets

        secrets = Secrets()
    return secrets.resolve(place.password)


__all__ = [
    "Recorder",
    "SchemaStatus",
    "StateStore",
    "describe",
    "integrity_problems",
    "migrate",
    "open_recorder",
    "open_store",
    "read_user_keys",
    "schema_status",
]
