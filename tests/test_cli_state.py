"""The ``deliveries`` and ``runs`` commands, through click's runner on a real project.

Every test runs on SQLite and on PostgreSQL: ``FLOWRUNNER_STATE`` points the commands
(and the helpers here) at the test's store.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from flowrunner.cli.main import main
from flowrunner.source.model import PostgresPlace, StatePlace
from flowrunner.source.to_model import STATE_ENV, parse_place
from flowrunner.state import StateStore, open_store
from flowrunner.state.records import NewPush


@pytest.fixture(autouse=True)
def backend(place: StatePlace, monkeypatch: pytest.MonkeyPatch) -> StatePlace:
    """The store of the test, for the commands and the helpers alike."""
    monkeypatch.setenv(STATE_ENV, place.url if isinstance(place, PostgresPlace) else str(place))
    return place


def opened_store() -> StateStore:
    import os

    return open_store(parse_place(os.environ[STATE_ENV], Path.cwd()))


SECRET = "whsec_c2VjcmV0LWtleS1vZi10aGUtc2luaw=="

PROJECT = """\
version: 1
http:
  allow_http: true
  allowlist: [127.0.0.1]
webhooks:
  sink:
    url: {url}
    default: true
    signing_secret: {{secret: HOOK_KEY}}
    timeout: 2
state: .flowrunner/state.db
delivery:
  retry_schedule: {schedule}
  lease: 5
"""

JSON_DELIVERY_FIELDS = {"id", "execution_id", "webhook", "status", "attempts",
                        "next_attempt_at", "last_error", "created_at"}  # fmt: skip
JSON_RUN_FIELDS = {"execution_id", "flow", "status", "started_at", "ended_at"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_project(root: Path, url: str, schedule: str = "[0.05, 0.05]") -> None:
    (root / "flowrunner.yaml").write_text(PROJECT.format(url=url, schedule=schedule))


def invoke(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--project", str(root), *args], env=env)


def record(root: Path, url: str, names: list[str], *, minute: int = 0) -> None:
    store = opened_store()
    for i, name in enumerate(names):
        started = f"2026-11-28T10:{minute + i:02d}:00.000+00:00"
        rec: dict[str, Any] = {"execution_id": name, "flow": "order-status", "status": "COMPLETED",
               "error": None, "started_at": started, "ended_at": started, "steps": [],
               "keys": {"n": i}, "on_complete": {"webhook": "sink", "webhook_id": f"msg_{name}",
                                                 "status": "pending", "attempts": 0}}  # fmt: skip
        body = json.dumps({"phonon-uuid": name}).encode()
        push = NewPush(id=f"msg_{name}", execution_id=name, webhook="sink", url=url,
                       headers={}, payload=body, created_at=time.time())  # fmt: skip
        store.record_end(rec, push)
    store.close()


def settle(root: Path, outcomes: dict[str, str]) -> None:
    """Give pushes a final status as a sender would (``dead`` or ``delivered``)."""
    store = opened_store()
    now = time.time()
    store.lease("test", now=now, seconds=5, limit=100, ids=list(outcomes), ignore_schedule=True)
    for push_id, outcome in outcomes.items():
        if outcome == "dead":
            store.mark_dead(push_id, "test", now=now, error="HTTP 410 (not retried)")
        else:
            store.mark_delivered(push_id, "test", now=now)
    store.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, "http://127.0.0.1:9/hook")
    return tmp_path


# ---- deliveries list / retry -----------------------------------------------------


def test_list_empty(project: Path) -> None:
    result = invoke(project, "deliveries", "list")
    assert (result.exit_code, result.output) == (0, "no deliveries\n")
    result = invoke(project, "deliveries", "list", "--json")
    assert (result.exit_code, json.loads(result.output)) == (0, [])


def test_list_text_and_json(project: Path) -> None:
    record(project, "http://127.0.0.1:9/hook", ["e1", "e2", "e3"])
    settle(project, {"msg_e1": "delivered", "msg_e2": "dead"})
    result = invoke(project, "deliveries", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "WEBHOOK", "STATUS", "ATTEMPTS", "NEXT", "ATTEMPT",
                                "(UTC)", "LAST", "ERROR"]  # fmt: skip
    assert lines[1].split()[:4] == ["msg_e1", "sink", "delivered", "1"]
    assert lines[2].startswith("msg_e2") and lines[2].endswith("HTTP 410 (not retried)")
    assert lines[3].split()[:4] == ["msg_e3", "sink", "pending", "0"]
    assert lines[4] == "3 deliveries: 1 pending, 1 delivered, 1 dead"

    listed = json.loads(invoke(project, "deliveries", "list", "--json").output)
    assert [d["id"] for d in listed] == ["msg_e1", "msg_e2", "msg_e3"]
    assert all(JSON_DELIVERY_FIELDS <= set(d) for d in listed)
    assert listed[2]["execution_id"] == "e3" and listed[2]["next_attempt_at"].endswith("+00:00")
    dead = json.loads(invoke(project, "deliveries", "list", "--dead", "--json").output)
    assert [d["id"] for d in dead] == ["msg_e2"]
    assert (
        invoke(project, "deliveries", "list", "--dead").output.splitlines()[1].startswith("msg_e2")
    )


def test_retry_one_and_all_dead(project: Path) -> None:
    record(project, "http://127.0.0.1:9/hook", ["e1", "e2", "e3"])
    settle(project, {"msg_e1": "dead", "msg_e2": "dead", "msg_e3": "delivered"})
    result = invoke(project, "deliveries", "retry", "msg_e1")
    assert (result.exit_code, result.output) == (0, "delivery msg_e1 is pending, due now\n")
    result = invoke(project, "deliveries", "retry", "--all-dead")
    assert (result.exit_code, result.output) == (0, "1 dead deliveries are pending again\n")
    statuses = {
        d["id"]: d for d in json.loads(invoke(project, "deliveries", "list", "--json").output)
    }
    assert statuses["msg_e1"]["status"] == statuses["msg_e2"]["status"] == "pending"
    assert statuses["msg_e1"]["attempts"] == 0

    result = invoke(project, "deliveries", "retry", "msg_e3")
    assert result.exit_code == 2
    assert result.output == "flowrunner: delivery 'msg_e3' was delivered already\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "flowrunner: no delivery with id 'nope' (see 'deliveries list')\n"),
        ([], "flowrunner: give either a delivery ID or --all-dead\n"),
        (["x", "--all-dead"], "flowrunner: give either a delivery ID or --all-dead\n"),
    ],
)
def test_retry_usage_errors(project: Path, args: list[str], message: str) -> None:
    result = invoke(project, "deliveries", "retry", *args)
    assert (result.exit_code, result.output) == (2, message)


# ---- deliveries drain ------------------------------------------------------------


async def in_thread(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run a sending command off the event loop that serves the test's receiver."""
    return await asyncio.to_thread(invoke, root, *args, env=env)


async def start_sink(aiohttp_server: Any, statuses: list[int]) -> tuple[str, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append({"id": request.headers["webhook-id"], "body": await request.read(),
                    "signed": "webhook-signature" in request.headers})  # fmt: skip
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), got


async def test_drain_delivers_everything(aiohttp_server: Any, tmp_path: Path) -> None:
    url, got = await start_sink(aiohttp_server, [500])
    write_project(tmp_path, url)
    record(tmp_path, url, ["e1", "e2"])
    result = await in_thread(tmp_path, "deliveries", "drain", "--timeout", "5",
                             env={"HOOK_KEY": SECRET})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "delivered 2, failed attempts 1, dead 0, still pending 0\n"
    assert len(got) == 3 and {g["id"] for g in got} == {"msg_e1", "msg_e2"}
    assert all(g["signed"] for g in got)


async def test_drain_reads_a_secrets_file_and_prints_json(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    url, got = await start_sink(aiohttp_server, [])
    write_project(tmp_path, url, schedule="[60]")
    record(tmp_path, url, ["e1"])
    (tmp_path / "secrets.env").write_text(f"HOOK_KEY={SECRET}\n")
    result = await in_thread(tmp_path, "deliveries", "drain", "--now", "--json",
                             "--secrets-file", str(tmp_path / "secrets.env"), env={})  # fmt: skip
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["delivered"] == 1 and counts["pending"] == 0 and len(got) == 1


async def test_drain_exits_75_while_something_is_pending(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens
    write_project(tmp_path, url, schedule="[60]")
    record(tmp_path, url, ["e1"])
    started = time.monotonic()
    result = await in_thread(tmp_path, "deliveries", "drain", "--timeout", "0.5",
                             env={"HOOK_KEY": SECRET})  # fmt: skip
    assert result.exit_code == 75
    assert result.output == "delivered 0, failed attempts 1, dead 0, still pending 1\n"
    assert time.monotonic() - started < 5
    listed = json.loads(invoke(tmp_path, "deliveries", "list", "--json").output)
    assert listed[0]["last_error"].startswith("connection error")


async def test_drain_with_a_missing_secret_keeps_the_push(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    write_project(tmp_path, url)
    record(tmp_path, url, ["e1"])
    result = await in_thread(tmp_path, "deliveries", "drain", "--timeout", "0", env={})
    assert result.exit_code == 75
    listed = json.loads(invoke(tmp_path, "deliveries", "list", "--json").output)
    assert "HOOK_KEY" in listed[0]["last_error"] and listed[0]["attempts"] == 0


# ---- runs ------------------------------------------------------------------------


def test_runs_list_and_show(project: Path) -> None:
    record(project, "http://127.0.0.1:9/hook", ["e1", "e2", "e3"])
    settle(project, {"msg_e2": "delivered"})
    result = invoke(project, "runs", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["EXECUTION", "ID", "FLOW", "STATUS", "STARTED", "(UTC)",
                                "ON-COMPLETE"]  # fmt: skip
    assert lines[1].split() == ["e3", "order-status", "COMPLETED", "2026-11-28", "10:02:00",
                                "pending"]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["e3", "e2", "e1"]

    listed = json.loads(invoke(project, "runs", "list", "--json", "--limit", "2").output)
    assert [r["execution_id"] for r in listed] == ["e3", "e2"]
    assert all(JSON_RUN_FIELDS <= set(r) for r in listed)
    assert listed[0]["started_at"] == "2026-11-28T10:02:00.000+00:00"
    everything = json.loads(invoke(project, "runs", "list", "--json", "--limit", "0").output)
    assert len(everything) == 3

    result = invoke(project, "runs", "show", "e2")
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert shown["keys"] == {"n": 1}
    assert shown["on_complete"]["status"] == "delivered"
    assert shown["on_complete"]["attempts"] == 1


def test_runs_show_unknown_id(project: Path) -> None:
    result = invoke(project, "runs", "show", "nope")
    assert result.exit_code == 2
    assert result.output == "flowrunner: no run with execution id 'nope' (see 'runs list')\n"


def test_runs_list_empty_and_bad_limit(project: Path) -> None:
    assert invoke(project, "runs", "list").output == "no runs recorded\n"
    assert invoke(project, "runs", "list", "--limit", "-1").exit_code == 2


# ---- broken projects and state files ---------------------------------------------


def test_an_invalid_project_prints_diagnostics(tmp_path: Path) -> None:
    (tmp_path / "flowrunner.yaml").write_text("version: 1\nwebhooks: {sink: {uri: x}}\n")
    result = invoke(tmp_path, "deliveries", "list")
    assert result.exit_code == 2
    assert "flowrunner.yaml:2:" in result.output and "error" in result.output
    assert not (tmp_path / ".flowrunner").exists()


def test_no_project_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(tmp_path, "runs", "list")
    assert result.exit_code == 2 and "no flowrunner.yaml" in result.output


def test_a_corrupt_state_file_is_one_clean_line(project: Path, backend: StatePlace) -> None:
    if not isinstance(backend, Path):
        pytest.skip("a SQLite file only")
    state = backend
    state.parent.mkdir(parents=True)
    state.write_bytes(b"garbage " * 1000)
    result = invoke(project, "runs", "list")
    assert result.exit_code == 3
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "not a usable flowrunner state file" in result.output
