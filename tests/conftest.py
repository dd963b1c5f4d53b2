"""Shared helpers: a project written into a temporary folder, and a recording receiver.

``write_project`` writes ``flowrunner.yaml`` (with ``allow_http: true`` and a loopback
allowlist, so tests talk to servers on 127.0.0.1) and flow files; ``plan_of`` loads a
flow the way ``flowrunner run`` does. ``Receiver`` is a real aiohttp server that records
every request and answers with what a test scripts per path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner, Result
from pg import PgServer, start_server

from flowrunner.cli.main import main
from flowrunner.execution.context import Inputs
from flowrunner.execution.record import ExecutionRecord
from flowrunner.plan.types import Plan
from flowrunner.project import load_plan
from flowrunner.runner import Runner
from flowrunner.secrets import Secrets
from flowrunner.source.model import PostgresPlace, StatePlace

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_HTTP = {"enabled": True, "allow_http": True, "allowlist": ["127.0.0.1"]}


def free_port() -> int:
    """A loopback port nobody listens on (for connection-refused cases)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_project(
    root: Path,
    webhooks: dict[str, Any],
    flows: dict[str, str] | None = None,
    **extra: Any,
) -> Path:
    """Write a project into ``root``: ``flows`` maps a file stem to flow YAML text."""
    project: dict[str, Any] = {
        "version": 1,
        "http": dict(LOOPBACK_HTTP),
        "webhooks": webhooks,
        "state": "state.db",
    }
    project.update(extra)
    (root / "flowrunner.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    (root / "flows").mkdir(exist_ok=True)
    for name, text in (flows or {}).items():
        (root / "flows" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def plan_of(root: Path, flow: str) -> Plan:
    """The plan of a flow of the project in ``root`` (raises InvalidProject when invalid)."""
    return load_plan(root, flow)


async def execute(
    plan: Plan,
    env: dict[str, str] | None = None,
    *,
    on_complete: bool = True,
    dry_run: bool = False,
    **inputs: Any,
) -> ExecutionRecord:
    """One execution through a :class:`Runner` (state file, HTTP client, push).

    Secrets come from ``env``, or from the process environment when it is None.
    """
    secrets = Secrets(env=env, masked=dry_run)
    async with Runner(plan, secrets, on_complete=on_complete, dry_run=dry_run) as runner:
        return await runner.run(Inputs(**inputs))


@dataclass
class Seen:
    """One request as the receiver saw it."""

    method: str
    path: str
    query: str  # the raw query string, as it came over the wire
    headers: dict[str, str]
    body: bytes
    content_type: str | None


@dataclass
class Receiver:
    """A loopback server: records requests, answers by path (default: ``{}`` as JSON)."""

    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    fallback: Answer | None = None  # for paths without an answer; None: {} as JSON

    def at(self, path: str) -> str:
        return self.url + path

    def on(self, path: str, answer: Answer) -> None:
        self.answers[path] = answer

    def json(self, path: str, data: Any, status: int = 200) -> None:
        async def answer(_: web.Request) -> web.StreamResponse:
            return web.json_response(data, status=status)

        self.on(path, answer)

    def status(self, path: str, status: int, text: str = "", **headers: str) -> None:
        async def answer(_: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text=text, headers=headers)

        self.on(path, answer)

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Seen(
                method=request.method,
                path=request.path,
                query=request.raw_path.partition("?")[2],  # as sent, still encoded
                headers=dict(request.headers),
                body=await request.read(),
                content_type=request.headers.get("Content-Type"),
            )
        )
        answer = self.answers.get(request.path, self.fallback)
        if answer is None:
            return web.json_response({})
        return await answer(request)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    server = await aiohttp_server(app)
    rec.url = str(server.make_url("")).rstrip("/")
    return rec


def verify_signature(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance: float = 300
) -> bool:
    """Check ``webhook-signature`` as a Standard Webhooks receiver does.

    Written from the specification, sharing no code with ``flowrunner.net.signing``: the
    key is the base64 after ``whsec_`` (a secret without the prefix is its UTF-8
    bytes), the signed content ``id.timestamp.body``, the header a space-separated list
    of ``v1,<base64 HMAC-SHA256>``; the timestamp must be recent.
    """
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret[len("whsec_") :])
    else:
        key = secret.encode()
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


def invoke(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``flowrunner --project root ARGS`` through click's runner."""
    return CliRunner().invoke(main, ["--project", str(root), *args], env=env)


async def invoke_async(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """:func:`invoke` off the event loop that serves the test's receiver."""
    return await asyncio.to_thread(invoke, root, *args, env=env)


# ---- state places: SQLite and PostgreSQL ------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's own database on the PostgreSQL test server (see tests/pg.py)."""
    yield from start_server()


@pytest.fixture
def pg_place(pg_server: PgServer) -> PostgresPlace:
    """A PostgreSQL state place in a new, empty schema."""
    return pg_server.fresh_place()


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> StatePlace:
    """A fresh state place on each backend: the tests that take it run on both."""
    if request.param == "sqlite":
        return tmp_path / "deep" / "folder" / "state.db"
    pg: PgServer = request.getfixturevalue("pg_server")
    return pg.fresh_place()


@pytest.fixture(params=["fast", "aiohttp"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each HTTP transport in turn: ``FLOWRUNNER_TRANSPORT`` is set for the test, so the
    command line, ``Runner`` and ``open_client`` all use it."""
    monkeypatch.setenv("FLOWRUNNER_TRANSPORT", request.param)
    return str(request.param)
