"""The trigger API against a real server on 127.0.0.1 (``serve`` run in-process, its
store a real SQLite file, webhooks a real loopback receiver)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from flowrunner.secrets import Secrets
from flowrunner.server.logs import Log
from flowrunner.server.main import Options, Server
from flowrunner.source.model import PostgresPlace, StatePlace
from tests.conftest import Receiver, invoke, write_project

TOKEN = "t0ken-for-tests-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HELLO = """\
flow: hello
keys: {n: 0}
steps:
  - id: count
    operation: assign
    set:
      n: "{{ $flow.key.n + 1 }}"
"""
LOOKUP = """\
flow: lookup
on_complete: true
steps:
  - id: ask
    webhook: crm
    method: getOrder
"""


class Running:
    """A started server, its base URL, a client session and its log."""

    def __init__(self, server: Server, session: aiohttp.ClientSession, log: io.StringIO) -> None:
        self.server = server
        self.session = session
        self.log = log
        self.url = f"http://127.0.0.1:{server.port}"

    async def post(self, flow: str, data: Any, **headers: str) -> aiohttp.ClientResponse:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        hdrs = {**AUTH, "Content-Type": "application/json", **headers}
        async with self.session.post(f"{self.url}/v1/flows/{flow}/executions", data=raw,
                                     headers=hdrs) as resp:  # fmt: skip
            await resp.read()
            return resp

    async def get(self, path: str, auth: bool = True) -> tuple[int, Any, Any]:
        async with self.session.get(self.url + path, headers=AUTH if auth else {}) as resp:
            text = await resp.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = text
            return resp.status, data, resp.headers

    async def wait_done(self, execution_id: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, data, _ = await self.get(f"/v1/executions/{execution_id}")
            if status == 200 and data["status"] in ("COMPLETED", "FAILED"):
                return dict(data)
            await asyncio.sleep(0.02)
        raise AssertionError(f"{execution_id} did not end")


async def start(root: Path, concurrency: int = 8, grace: float = 5.0) -> Running:
    log = io.StringIO()
    options = Options(root=root, port=0, concurrency=concurrency, grace=grace, signals=False)
    server = Server(options, Secrets(env={"API_TOKEN": TOKEN}), Log("json", log))
    server.task = asyncio.get_running_loop().create_task(server.run())  # type: ignore[attr-defined]
    for _ in range(500):
        if server.port or server.task.done():  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    if server.task.done():  # type: ignore[attr-defined]
        server.task.result()  # type: ignore[attr-defined]
    return Running(server, aiohttp.ClientSession(), log)


async def stop(running: Running) -> None:
    running.server.stop_event.set()
    await running.server.task  # type: ignore[attr-defined]
    await running.session.close()


def project(root: Path, receiver: Receiver | None = None, **serve: Any) -> Path:
    webhooks = {}
    if receiver is not None:
        webhooks = {
            "crm": {
                "url": receiver.at("/crm"),
                "body": "json",
                "default": True,
                "methods": {"getOrder": {"response": {"status": "status"}}},
            }
        }
    return write_project(
        root,
        webhooks,
        {"hello": HELLO, **({"lookup": LOOKUP} if receiver else {})},
        serve={"tokens": [{"secret": "API_TOKEN"}], **serve},
    )


@pytest.fixture
async def api(
    tmp_path: Path, place: StatePlace, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    """A running server on each state store (FLOWRUNNER_STATE names the test's)."""
    where = place.url if isinstance(place, PostgresPlace) else str(place)
    monkeypatch.setenv("FLOWRUNNER_STATE", where)
    running = await start(project(tmp_path))
    yield running
    await stop(running)


def assert_problem(resp: aiohttp.ClientResponse, status: int) -> None:
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/problem+json")


# ---- accepted executions --------------------------------------------------------------


async def test_list_and_mapping_keys_run_and_are_read_back(api: Running) -> None:
    body = {
        "calls": [
            {"client-identifier": "crm-1", "call": {"cli": "+1555", "uuid": "c-1"},
             "keys": [{"name": "$flow.key.n", "value": 41}]},
            {"keys": {"n": 9}, "user_keys": {"tier": "gold"}},
        ]
    }  # fmt: skip
    resp = await api.post("hello", body)
    assert resp.status == 202
    answer = json.loads(await resp.text())
    assert [e.get("client-identifier") for e in answer["executions"]] == ["crm-1", None]
    assert resp.headers["Location"] == f"/v1/requests/{answer['request-id']}"
    first, second = [await api.wait_done(e["execution_id"]) for e in answer["executions"]]
    assert first["status"] == "COMPLETED" and first["keys"] == {"n": 42}
    assert second["keys"] == {"n": 10}
    status, request, _ = await api.get(f"/v1/requests/{answer['request-id']}")
    assert status == 200
    assert request["flow"] == "hello"
    assert [e["status"] for e in request["executions"]] == ["COMPLETED", "COMPLETED"]
    assert request["executions"][0]["client-identifier"] == "crm-1"


async def test_one_log_line_per_request_and_per_execution_without_the_token(
    api: Running,
) -> None:
    resp = await api.post("hello", {"calls": [{}]})
    execution_id = json.loads(await resp.text())["executions"][0]["execution_id"]
    await api.wait_done(execution_id)
    lines = [json.loads(line) for line in api.log.getvalue().splitlines()]
    posts = [x for x in lines if x["event"] == "request" and x["method"] == "POST"]
    ends = [x for x in lines if x["event"] == "execution"]
    assert len(posts) == 1 and posts[0]["status"] == 202
    assert [x["execution_id"] for x in ends] == [execution_id]
    assert TOKEN not in api.log.getvalue()


# ---- problems ---------------------------------------------------------------------------


async def test_every_v1_route_needs_the_token(api: Running) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        async with api.session.post(
            f"{api.url}/v1/flows/hello/executions", json={"calls": [{}]}, headers=headers
        ) as resp:
            assert_problem(resp, 401)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    status, _, headers = await api.get("/v1/executions/x", auth=False)
    assert status == 401 and "WWW-Authenticate" in headers
    assert (await api.get("/healthz", auth=False))[0] == 200


async def test_unknown_flow_is_404_before_the_body_is_read(api: Running) -> None:
    resp = await api.post("nope", b"not json at all")
    assert_problem(resp, 404)
    for path in ("/v1/executions/nope", "/v1/executions/" + "x" * 300, "/v1/requests/%00"):
        status, data, _ = await api.get(path)
        assert status == 404 and data["status"] == 404 and data["type"].endswith("not-found")


async def test_bad_json_too_large_not_json_and_invalid_bodies(api: Running) -> None:
    resp = await api.post("hello", b'{"calls": [')
    assert_problem(resp, 400)
    resp = await api.post("hello", b'{"calls": [{}]}', **{"Content-Type": "text/plain"})
    assert_problem(resp, 415)
    big = {"calls": [{"call": {"pad": "x" * 1000}}] * 300}
    assert_problem(await api.post("hello", big), 413)
    bad = {"calls": [{"keys": [{"name": "not a name"}]}, {"call": [], "what": 1}]}
    async with api.session.post(f"{api.url}/v1/flows/hello/executions", json=bad,
                                headers=AUTH) as resp:  # fmt: skip
        assert_problem(resp, 422)
        problem = await resp.json(content_type=None)
    pointers = sorted(e["pointer"] for e in problem["errors"])
    assert pointers == ["/calls/0/keys", "/calls/1", "/calls/1/call"]
    assert problem["title"] and problem["detail"] and problem["instance"]
    assert_problem(await api.post("hello", {"calls": []}), 422)
    assert_problem(await api.post("hello", {"calls": [{}] * 501}), 422)


async def test_a_chunked_body_over_the_limit_is_413(api: Running) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"calls": [{"call": {"pad": "'
        for _ in range(40):
            yield b"x" * 8192
        yield b'"}}]}'

    async with api.session.post(
        f"{api.url}/v1/flows/hello/executions",
        data=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
    ) as resp:
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert_problem(resp, 413)


async def test_unknown_route_and_method_are_problems(api: Running) -> None:
    status, data, _ = await api.get("/nowhere")
    assert status == 404 and data["status"] == 404
    async with api.session.delete(f"{api.url}/healthz") as resp:
        assert_problem(resp, 405)


# ---- idempotency ------------------------------------------------------------------------


async def test_idempotent_replay_runs_once(tmp_path: Path, receiver: Receiver) -> None:
    receiver.json("/crm", {"status": "shipped"})
    running = await start(project(tmp_path, receiver))
    try:
        body = {"calls": [{"call": {"cli": "1"}}, {"call": {"cli": "2"}}]}
        first = await running.post("lookup", body, **{"Idempotency-Key": "order-77"})
        again = await running.post("lookup", body, **{"Idempotency-Key": "order-77"})
        assert first.status == again.status == 202
        assert await first.text() == await again.text()
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await running.post("lookup", {"calls": [{}]}, **{"Idempotency-Key": "order-77"})
        assert_problem(other, 422)
        ids = [e["execution_id"] for e in json.loads(await first.text())["executions"]]
        for execution_id in ids:
            assert (await running.wait_done(execution_id))["keys"]["status"] == "shipped"
        await running.server.deliverer.drain(timeout=5)
        steps = [json.loads(r.body)["method"] for r in receiver.hits("/crm") if b"method" in r.body]
        pushes = [r for r in receiver.hits("/crm") if "webhook-id" in r.headers]
        assert len(steps) == 2  # one webhook call per execution, none repeated
        assert sorted(r.headers["webhook-id"] for r in pushes) == sorted(set(
            r.headers["webhook-id"] for r in pushes))  # fmt: skip
        assert len(pushes) == 2
    finally:
        await stop(running)


async def test_a_key_still_being_recorded_is_409(api: Running) -> None:
    gate = threading.Event()
    blocker = asyncio.ensure_future(api.server.writer.call(lambda store: gate.wait(5)))
    try:
        first = asyncio.ensure_future(
            api.post("hello", {"calls": [{}]}, **{"Idempotency-Key": "k"})
        )
        await asyncio.sleep(0.2)
        second = await api.post("hello", {"calls": [{}]}, **{"Idempotency-Key": "k"})
        assert_problem(second, 409)
        assert second.headers["Retry-After"] == "1"
    finally:
        gate.set()
        await blocker
    assert (await first).status == 202


async def test_keys_are_kept_across_restarts_and_forgotten_after_a_day(tmp_path: Path) -> None:
    root = project(tmp_path)
    running = await start(root)
    key = {"Idempotency-Key": "keep-me"}
    first = await running.post("hello", {"calls": [{}]}, **key)
    old = await running.post("hello", {"calls": [{}]}, **{"Idempotency-Key": "old"})
    await stop(running)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:  # make "old" two days old
        conn.execute(
            "UPDATE idempotency_keys SET created_at = created_at - 172800 WHERE key = 'old'"
        )
    conn.close()
    running = await start(root)
    try:
        again = await running.post("hello", {"calls": [{}]}, **key)
        assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert await again.text() == await first.text()
        renewed = await running.post("hello", {"calls": [{}]}, **{"Idempotency-Key": "old"})
        assert renewed.status == 202 and "Idempotent-Replayed" not in renewed.headers
        assert await renewed.text() != await old.text()
    finally:
        await stop(running)


async def test_a_bad_idempotency_key_is_400(api: Running) -> None:
    resp = await api.post("hello", {"calls": [{}]}, **{"Idempotency-Key": "x" * 300})
    assert_problem(resp, 400)


# ---- backlog and stopping ---------------------------------------------------------------


async def test_backlog_full_is_429_with_retry_after_and_stopping_is_503(
    tmp_path: Path, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"status": "late"})

    receiver.on("/crm", slow)
    running = await start(project(tmp_path, receiver, max_backlog=3), concurrency=1, grace=10)
    try:
        busy = await running.post("lookup", {"calls": [{}]})
        busy_id = json.loads(await busy.text())["executions"][0]["execution_id"]
        for _ in range(100):
            if (await running.get(f"/v1/executions/{busy_id}"))[1]["status"] == "RUNNING":
                break
            await asyncio.sleep(0.02)
        # one at a time until the backlog is full: 3 wait (QUEUED); with one slot, the
        # executor may also hold one more claimed ahead (RUNNING), so 3 or 4 are taken
        accepted = 0
        last = ""
        while (full := await running.post("lookup", {"calls": [{}]})).status == 202:
            accepted += 1
            last = json.loads(await full.text())["executions"][0]["execution_id"]
            assert accepted <= 4
            await asyncio.sleep(0.05)
        assert accepted >= 3
        status, waiting, _ = await running.get(f"/v1/executions/{last}")
        assert status == 200 and waiting["status"] == "QUEUED" and waiting["flow"] == "lookup"
        assert_problem(full, 429)
        assert int(full.headers["Retry-After"]) >= 1
        running.server.stop_event.set()
        await asyncio.sleep(0.2)
        assert_problem(await running.post("hello", {"calls": [{}]}), 503)
        assert (await running.get("/readyz"))[0] == 503
    finally:
        running.server.stop_event.set()
        release.set()
        await running.server.task  # type: ignore[attr-defined]
        await running.session.close()
    # the running execution finished within the grace; the waiting ones stay queued
    from flowrunner.state.sqlite.store import Store

    store = Store.open(tmp_path / "state.db")
    try:
        assert store.queue_counts(now=time.time()) == (accepted, 0)
        assert store.run(busy_id)["status"] == "COMPLETED"  # type: ignore[index]
    finally:
        store.close()


# ---- metrics, openapi -------------------------------------------------------------------


async def test_metrics_count_executions_and_webhook_calls(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.json("/crm", {"status": "shipped"})
    running = await start(project(tmp_path, receiver))
    try:
        resp = await running.post("lookup", {"calls": [{}, {}, {}]})
        for e in json.loads(await resp.text())["executions"]:
            await running.wait_done(e["execution_id"])
        status, text, headers = await running.get("/metrics", auth=False)
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
    finally:
        await stop(running)
    assert samples[("flowrunner_executions_total",
                    (("flow", "lookup"), ("status", "COMPLETED")))] == 3  # fmt: skip
    assert samples[("flowrunner_execution_duration_seconds_count", (("flow", "lookup"),))] == 3
    hook = (("outcome", "ok"), ("webhook", "crm"))
    assert samples[("flowrunner_webhook_request_duration_seconds_count", hook)] == 3
    assert samples[("flowrunner_queued_executions", ())] == 0
    assert ("flowrunner_outbox_pending", ()) in samples
    assert ("flowrunner_outbox_dead", ()) in samples


async def test_openapi_document_served_and_printed(api: Running) -> None:
    status, served, _ = await api.get("/openapi.json", auth=False)
    assert status == 200 and served["openapi"] == "3.1.0"
    post = served["paths"]["/v1/flows/{flow}/executions"]["post"]
    assert post["parameters"][0]["schema"]["enum"] == ["hello"]
    assert set(post["responses"]) >= {"202", "400", "401", "404", "409", "413", "415", "422",
                                      "429", "503"}  # fmt: skip
    printed = invoke(api.server.options.root, "schema", "openapi")
    assert printed.exit_code == 0
    document = json.loads(printed.output)
    assert document["components"] == served["components"]
    assert "$ref" not in json.dumps(document["components"]["schemas"]["ExecutionsRequest"])


# ---- refusing to start ------------------------------------------------------------------


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    write_project(tmp_path, {}, {"hello": HELLO})
    result = invoke(tmp_path, "serve", "--port", "0")
    assert result.exit_code == 2
    assert "serve.tokens" in result.output


def test_serve_refuses_to_start_with_an_invalid_flow(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "flows" / "bad.yaml").write_text("flow: bad\nsteps:\n  - id: x\n    nope: 1\n")
    result = invoke(tmp_path, "serve", "--port", "0", env={"API_TOKEN": TOKEN})
    assert result.exit_code == 2
    assert "flows/bad.yaml:3:5: error: a step needs either" in result.output
    assert "Traceback" not in result.output


def test_serve_refuses_to_start_when_a_token_secret_is_unset(tmp_path: Path) -> None:
    project(tmp_path)
    result = invoke(tmp_path, "serve", "--port", "0", env={"API_TOKEN": ""})
    assert result.exit_code == 2
    assert "API_TOKEN" in result.output


async def test_a_bug_in_a_handler_is_a_500_problem_and_one_log_line(api: Running) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise ZeroDivisionError

    api.server.api.store.execution_states = broken  # a real server with one part broken
    status, data, headers = await api.get("/v1/executions/x")
    assert status == 500 and headers["Content-Type"].startswith("application/problem+json")
    assert data["title"] == "Internal error"
    lines = [json.loads(x) for x in api.log.getvalue().splitlines()]
    assert [x["detail"] for x in lines if x["event"] == "internal-error"] == ["ZeroDivisionError"]
    assert "Traceback" not in api.log.getvalue()
