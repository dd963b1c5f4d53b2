"""A real PostgreSQL server for the tests: a fresh database per test session, a fresh
schema per test.

``FLOWRUNNER_TEST_POSTGRES`` names the server (default: the local one, trust auth). When
no server answers, the PostgreSQL tests are skipped with one line saying so; under
``CI=true`` they fail instead, so CI never passes by skipping them.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from flowrunner.source.model import PostgresPlace

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_schemas = itertools.count(1)


def server_url() -> str:
    return os.environ.get("FLOWRUNNER_TEST_POSTGRES", DEFAULT_URL)


def with_database(url: str, name: str) -> str:
    split = urlsplit(url)
    return urlunsplit((split.scheme, split.netloc, f"/{name}", split.query, ""))


def with_schema(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (created on first use by the test)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


class PgServer:
    """The session's database on the test server."""

    def __init__(self, admin_url: str, url: str) -> None:
        self.admin_url = admin_url
        self.url = url

    def fresh_place(self) -> PostgresPlace:
        """A place in a new, empty schema of the session's database."""
        import psycopg

        schema = f"t{next(_schemas)}_{os.getpid()}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
        return PostgresPlace(url=with_schema(self.url, schema))

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run ``sql`` on the session's database as the administrator."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params)
            return cur.fetchall() if cur.description else []


def _unavailable(reason: str, *, module: bool = False) -> None:
    line = f"PostgreSQL tests not run: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(line + "; under CI they must run", pytrace=False)
    pytest.skip(line, allow_module_level=module)


def require_driver() -> None:
    """At the top of a test module that imports the PostgreSQL store: skip the module
    (fail it under CI) when psycopg is not installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'flowrunner[postgres]')", module=True)


def start_server() -> Iterator[PgServer]:
    """Create the session database, yield it, drop it."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'flowrunner[postgres]')")
        raise
    admin = server_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        first = str(exc).splitlines()[0]
        _unavailable(f"no server answers at {admin} ({first}); set FLOWRUNNER_TEST_POSTGRES")
        raise
    name = f"flowrunner_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield PgServer(admin, with_database(admin, name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
