"""The webhook step against real loopback servers: the wire format of each body kind,
headers and auth, the outcome keys of every kind of answer, the response mapping."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from conftest import (
    Receiver,
    execute,
    free_port,
    invoke_async,
    plan_of,
    verify_signature,
    write_project,
)

from flowrunner import __version__
from flowrunner.net.http import MAX_BODY

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

CALL = {"cli": "+15551234567", "n": 3}

# keys of every flattened kind: text, number, boolean, null, object, list
KEYS_FLOW = """\
flow: wire
keys:
  attempts: 0
  text: hello world
  flag: true
  nothing: null
  obj: {a: 1, b: [x, 2]}
steps:
  - id: count
    operation: assign
    set:
      attempts: "{{ $flow.key.attempts + 1 }}"
  - id: call
    webhook: hook
    method: lookup
    %s
"""

FLAT = [
    ("method", "lookup"),
    ("call.cli", "+15551234567"),
    ("call.n", "3"),
    ("flow.key.attempts", "1"),
    ("flow.key.text", "hello world"),
    ("flow.key.flag", "true"),
    ("flow.key.nothing", ""),
    ("flow.key.obj", '{"a":1,"b":["x",2]}'),
    ("hint", "4567"),
]
# the form body: exactly what urllib.parse.urlencode gives
FLAT_TEXT = (
    "method=lookup&call.cli=%2B15551234567&call.n=3&flow.key.attempts=1"
    "&flow.key.text=hello+world&flow.key.flag=true&flow.key.nothing="
    "&flow.key.obj=%7B%22a%22%3A1%2C%22b%22%3A%5B%22x%22%2C2%5D%7D&hint=4567"
)
# the query string on the wire: the same, but the URL library leaves the characters a
# query may hold unescaped (":" "," "$" "/" "?" "@"); every value decodes the same
FLAT_QUERY = FLAT_TEXT.replace("%3A", ":").replace("%2C", ",")
PARAMS = 'params: {hint: "{{ $call.cli[-4:] }}"}'


def hook(receiver: Receiver, path: str = "/hook", **options: Any) -> dict[str, Any]:
    webhook: dict[str, Any] = {"url": receiver.at(path), "methods": {"lookup": {}}}
    webhook.update(options)
    return webhook


def project(tmp_path: Path, webhook: dict[str, Any], step: str = PARAMS, **extra: Any) -> Path:
    return write_project(tmp_path, {"hook": webhook}, {"wire": KEYS_FLOW % step}, **extra)


async def run_wire(root: Path, call: dict[str, Any] | None = None, **inputs: Any) -> Any:
    return await execute(plan_of(root, "wire"), call=dict(call or CALL), **inputs)


# ---- the wire format -------------------------------------------------------------


async def test_body_none_puts_everything_in_the_query_string(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = project(tmp_path, hook(receiver, method="GET", body="none"))
    record = await run_wire(root)
    assert record.status == "COMPLETED", record.error
    [seen] = receiver.requests
    assert seen.method == "GET"
    assert seen.query == FLAT_QUERY
    assert parse_qsl(seen.query, keep_blank_values=True) == FLAT
    assert seen.body == b""
    assert seen.content_type is None


async def test_body_none_appends_to_a_url_with_a_query(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, hook(receiver, "/hook?v=2", body="none"))
    await run_wire(root)
    assert receiver.requests[0].query == "v=2&" + FLAT_QUERY


async def test_body_none_query_values_survive_special_characters(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = project(tmp_path, hook(receiver), step="parameters: [call]")
    tricky = "a&b=c+d %25 #x ;y é/?@:$"
    await run_wire(root, call={"cli": tricky})
    assert parse_qsl(receiver.requests[0].query) == [("method", "lookup"), ("call.cli", tricky)]


async def test_body_form_sends_the_flat_names_form_encoded(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = project(tmp_path, hook(receiver, body="form"))
    await run_wire(root)
    [seen] = receiver.requests
    assert seen.method == "POST"
    assert seen.query == ""
    assert seen.body == FLAT_TEXT.encode()
    assert seen.content_type == "application/x-www-form-urlencoded"


async def test_body_json_sends_the_selected_groups(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, hook(receiver, body="json", method="PUT"))
    await run_wire(root)
    [seen] = receiver.requests
    assert seen.method == "PUT"
    assert seen.content_type == "application/json"
    assert json.loads(seen.body) == {
        "method": "lookup",
        "call": {"cli": "+15551234567", "n": 3},
        "flow": {
            "key": {
                "attempts": 1,
                "text": "hello world",
                "flag": True,
                "nothing": None,
                "obj": {"a": 1, "b": ["x", 2]},
            }
        },
        "params": {"hint": "4567"},
    }


async def test_body_json_has_params_only_when_the_step_has_params(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = project(tmp_path, hook(receiver, body="json"), step="parameters: [call]")
    await run_wire(root)
    assert json.loads(receiver.requests[0].body) == {
        "method": "lookup",
        "call": {"cli": "+15551234567", "n": 3},
    }


@pytest.mark.parametrize("body", ["none", "json"])
async def test_user_keys_are_sent_only_when_selected(
    receiver: Receiver, tmp_path: Path, body: str
) -> None:
    webhook = hook(receiver, body=body)
    root = project(tmp_path, webhook, step="parameters: [user.key]", user_keys={"tier": "gold"})
    await run_wire(root)
    root = project(tmp_path, webhook, step="params: {x: 1}", user_keys={"tier": "gold"})
    await run_wire(root)
    selected, default = receiver.requests
    if body == "none":
        assert selected.query == "method=lookup&user.key.tier=gold"
        assert "user.key" not in default.query
        assert "call.cli" in default.query and "flow.key.attempts" in default.query
    else:
        assert json.loads(selected.body) == {"method": "lookup", "user": {"key": {"tier": "gold"}}}
        assert set(json.loads(default.body)) == {"method", "call", "flow", "params"}


async def test_headers_templated_idempotency_key_and_user_agent(
    receiver: Receiver, tmp_path: Path
) -> None:
    webhook = hook(receiver, headers={"X-Team": "ivr", "X-Caller": "caller $call.cli"})
    record = await run_wire(project(tmp_path, webhook))
    headers = receiver.requests[0].headers
    assert headers["X-Team"] == "ivr"
    assert headers["X-Caller"] == "caller +15551234567"
    assert headers["Idempotency-Key"] == f"{record.execution_id}:call"
    assert headers["User-Agent"] == f"flowrunner/{__version__}"
    assert "Authorization" not in headers
    assert "webhook-signature" not in headers


async def test_the_url_is_templated(receiver: Receiver, tmp_path: Path) -> None:
    webhook = {"url": receiver.at("/users/$call.cli/orders"), "methods": {"lookup": {}}}
    await run_wire(project(tmp_path, webhook))
    assert receiver.requests[0].path == "/users/+15551234567/orders"


async def test_parameters_go_before_a_fragment_of_the_url(
    receiver: Receiver, tmp_path: Path
) -> None:
    # a reference in the URL is not encoded: a "#" in it starts a fragment, which is
    # never sent; the parameters must still arrive
    webhook = {"url": receiver.at("/users/$call.tag"), "methods": {"lookup": {}}}
    await run_wire(project(tmp_path, webhook, step="parameters: [call]"), call={"tag": "a#b"})
    [seen] = receiver.requests
    assert seen.path == "/users/a"
    assert parse_qsl(seen.query) == [("method", "lookup"), ("call.tag", "a#b")]


async def test_basic_auth(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_PASSWORD", "pä:ss")
    auth = {"basic": {"username": "flow", "password": {"secret": "HOOK_PASSWORD"}}}
    await run_wire(project(tmp_path, hook(receiver, auth=auth)))
    expected = "Basic " + base64.b64encode("flow:pä:ss".encode()).decode()
    assert receiver.requests[0].headers["Authorization"] == expected


async def test_bearer_auth_and_secret_headers(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "t0ken")
    monkeypatch.setenv("HOOK_KEY", "k3y")
    webhook = hook(
        receiver, auth={"bearer": {"token": {"secret": "HOOK_TOKEN"}}},
        headers={"X-Api-Key": {"secret": "HOOK_KEY"}},
    )  # fmt: skip
    await run_wire(project(tmp_path, webhook))
    headers = receiver.requests[0].headers
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["X-Api-Key"] == "k3y"


async def test_a_missing_secret_refuses_the_run_before_sending(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_PASSWORD", "visible-if-leaked")
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    hooks = {
        "hook": hook(receiver, auth={"bearer": {"token": {"secret": "HOOK_TOKEN"}}}),
        "other": hook(
            receiver, "/other",
            auth={"basic": {"username": "u", "password": {"secret": "OTHER_PASSWORD"}}},
        ),
    }  # fmt: skip
    flow = KEYS_FLOW % PARAMS + "  - {id: other, webhook: other, method: lookup}\n"
    write_project(tmp_path, hooks, {"wire": flow})
    result = await invoke_async(tmp_path, "run", "wire", "--call", "cli=+1")
    assert result.exit_code == 2
    assert result.output == (
        "flowrunner: secret HOOK_TOKEN is not set (set the environment variable HOOK_TOKEN "
        "or pass --secrets-file)\n"
    )
    assert "visible-if-leaked" not in result.output
    assert receiver.requests == []
    assert not (tmp_path / "state.db").exists()


async def test_a_signed_webhook_signs_mid_flow_calls(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "whsec_" + base64.b64encode(b"mid-flow-key").decode()
    monkeypatch.setenv("SIGN_KEY", secret)
    webhook = hook(receiver, body="json", signing_secret={"secret": "SIGN_KEY"})
    record = await run_wire(project(tmp_path, webhook))
    seen = receiver.requests[0]
    assert seen.headers["webhook-id"] == f"{record.execution_id}:call"
    assert verify_signature(secret, seen.headers, seen.body)


# ---- outcomes --------------------------------------------------------------------

OUTCOME_FLOW = """\
flow: outcome
steps:
  - id: call
    webhook: hook
    method: lookup
    on_failure: after
  - id: after
    operation: assign
    set: {seen: $flow.key.response_status}
"""


async def slow(_: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3)
    return web.Response(text="late")


async def too_large(_: web.Request) -> web.StreamResponse:
    return web.Response(body=b"x" * (MAX_BODY + 1))


async def exactly_max(_: web.Request) -> web.StreamResponse:
    return web.Response(body=b"y" * MAX_BODY)


def ok(status: int | None, raw: str | None) -> dict[str, Any]:
    return {"response_status": "SUCCESS", "response_status_code": status,
            "response_status_type": None, "error_reason": None, "response_raw": raw,
            "response_error": False}  # fmt: skip


def failed(status: int | None, kind: str, reason: str, raw: str | None) -> dict[str, Any]:
    return {"response_status": "FAILED", "response_status_code": status,
            "response_status_type": kind, "error_reason": reason, "response_raw": raw,
            "response_error": True}  # fmt: skip


OUTCOMES: dict[str, tuple[Any, dict[str, Any]]] = {
    "200": (("status", 200, "fine"), ok(200, "fine")),
    "204 empty": (("status", 204, ""), ok(204, None)),
    "302 not followed": (
        ("status", 302, "moved", {"Location": "/elsewhere"}),
        failed(302, "Redirection", "REDIRECTION", "moved"),
    ),
    "404": (("status", 404, "nope"), failed(404, "ClientError", "CLIENT_ERROR", "nope")),
    "429": (("status", 429, ""), failed(429, "ClientError", "CLIENT_ERROR", None)),
    "500": (("status", 500, "boom"), failed(500, "ServerError", "SERVER_ERROR", "boom")),
    "503": (("status", 503, ""), failed(503, "ServerError", "SERVER_ERROR", None)),
    "timeout": (("answer", slow), failed(None, "Timeout", "TIMEOUT", None)),
    "too large": (("answer", too_large), failed(200, "TooLarge", "RESPONSE_TOO_LARGE", None)),
    "exactly 1 MiB": (("answer", exactly_max), ok(200, "y" * MAX_BODY)),
}


@pytest.mark.parametrize("case", list(OUTCOMES))
async def test_outcome_keys(receiver: Receiver, tmp_path: Path, case: str) -> None:
    script, expected = OUTCOMES[case]
    if script[0] == "status":
        receiver.status("/hook", script[1], script[2], **(script[3] if len(script) > 3 else {}))
    else:
        receiver.on("/hook", script[1])
    write_project(tmp_path, {"hook": hook(receiver, timeout=1)}, {"outcome": OUTCOME_FLOW})
    record = await execute(plan_of(tmp_path, "outcome"))
    keys = record.keys
    assert {k: keys[k] for k in expected} == expected
    assert isinstance(keys["response_duration"], float) and keys["response_duration"] >= 0
    assert record.status == "COMPLETED"  # the failure (if any) went to on_failure
    assert keys["seen"] == expected["response_status"]
    step = record.steps[0].as_dict()
    assert step["outcome"] == ("failed" if expected["response_error"] else "ok")
    assert step["response"] == {"status": expected["response_status_code"]}
    assert [r.path for r in receiver.requests] == ["/hook"]  # a redirect is not followed
    if case == "timeout":
        assert keys["response_duration"] < 2.5
        assert step["error"] == "no answer within 1 s"


async def test_connection_refused(tmp_path: Path) -> None:
    webhook = {"url": f"http://127.0.0.1:{free_port()}/hook", "methods": {"lookup": {}}}
    write_project(tmp_path, {"hook": webhook}, {"outcome": OUTCOME_FLOW})
    record = await execute(plan_of(tmp_path, "outcome"))
    expected = failed(None, "ConnectionError", "CONNECTION_ERROR", None)
    assert {k: record.keys[k] for k in expected} == expected
    assert record.steps[0].error == "connection refused"


async def test_a_destination_off_the_allowlist_is_refused(
    receiver: Receiver, tmp_path: Path
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    webhook = {"url": f"http://127.0.0.2:{port}/hook", "methods": {"lookup": {}}}
    write_project(tmp_path, {"hook": webhook}, {"outcome": OUTCOME_FLOW})
    record = await execute(plan_of(tmp_path, "outcome"))
    expected = failed(None, "Refused", "NOT_ALLOWED", None)
    assert {k: record.keys[k] for k in expected} == expected
    assert receiver.requests == []


async def test_http_disabled(receiver: Receiver, tmp_path: Path) -> None:
    http = {"enabled": False, "allow_http": True, "allowlist": ["127.0.0.1"]}
    write_project(tmp_path, {"hook": hook(receiver)}, {"outcome": OUTCOME_FLOW}, http=http)
    record = await execute(plan_of(tmp_path, "outcome"))
    expected = failed(None, "Refused", "HTTP_DISABLED", None)
    assert {k: record.keys[k] for k in expected} == expected
    assert receiver.requests == []


# ---- response mapping ------------------------------------------------------------

MAPPED_FLOW = """\
flow: mapped
keys:
  sku: before
steps:
  - id: call
    webhook: hook
    method: lookup
  - id: use
    operation: assign
    set:
      message: "Order $flow.key.order_id: $flow.key.sku"
      again: "{{ $flow.key.raw_template }}"
      said: "said $flow.key.raw_template"
"""
MAPPING = {
    "order_status": "status",
    "order_id": "order.id",
    "sku": "items.0.sku",
    "second": "items.1.sku",
    "missing": "order.nope.deeper",
    "whole": "order",
    "raw_template": "note",
}


def mapped_project(tmp_path: Path, receiver: Receiver) -> Path:
    webhook = {"url": receiver.at("/hook"), "methods": {"lookup": {"response": MAPPING}}}
    return write_project(tmp_path, {"hook": webhook}, {"mapped": MAPPED_FLOW})


async def test_response_mapping(receiver: Receiver, tmp_path: Path) -> None:
    receiver.json("/hook", {"status": "shipped", "order": {"id": "A-1", "n": 2},
                            "items": [{"sku": "X1"}], "note": "{{ 7*7 }}"})  # fmt: skip
    record = await execute(plan_of(mapped_project(tmp_path, receiver), "mapped"))
    keys = record.keys
    assert keys["order_status"] == "shipped"
    assert keys["order_id"] == "A-1"
    assert keys["sku"] == "X1"
    assert keys["second"] is None
    assert keys["missing"] is None
    assert keys["whole"] == {"id": "A-1", "n": 2}
    assert keys["message"] == "Order A-1: X1"
    # an answer is data: a template in it is never rendered, however it is used later
    assert keys["raw_template"] == "{{ 7*7 }}"
    assert keys["again"] == "{{ 7*7 }}"
    assert keys["said"] == "said {{ 7*7 }}"


@pytest.mark.parametrize(
    "body",
    [
        b"OK, noted",
        b"",
        b"[" * 200_000,
        b'"just a string"',
        b"\xff\xfe garbage",
        b'{"status": NaN, "order": {"id": Infinity}}',  # not JSON, though Python reads it
        b'{"status": "\\ud800"}',  # a lone surrogate could be neither stored nor sent on
    ],
)
async def test_a_2xx_that_is_not_a_json_object_maps_null(
    receiver: Receiver, tmp_path: Path, body: bytes
) -> None:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="text/plain")

    receiver.on("/hook", answer)
    record = await execute(plan_of(mapped_project(tmp_path, receiver), "mapped"))
    assert record.status == "COMPLETED"
    assert record.keys["response_status"] == "SUCCESS"
    assert all(record.keys[name] is None for name in MAPPING)
    expected_raw = body.decode("utf-8", "replace") if body else None
    assert record.keys["response_raw"] == expected_raw


async def test_a_failed_call_maps_nothing(receiver: Receiver, tmp_path: Path) -> None:
    receiver.json("/hook", {"items": [{"sku": "X1"}]}, status=500)
    record = await execute(plan_of(mapped_project(tmp_path, receiver), "mapped"))
    assert record.status == "FAILED"
    assert record.keys["sku"] == "before"
    assert "order_id" not in record.keys


# ---- values are data -------------------------------------------------------------


@pytest.mark.parametrize("body", ["json", "form"])
async def test_a_caller_template_arrives_as_those_characters(
    receiver: Receiver, tmp_path: Path, body: str
) -> None:
    root = project(tmp_path, hook(receiver, body=body), step="parameters: [call]")
    result = await invoke_async(root, "run", "wire", "--call", "cli={{ 7*7 }}",
                                "--call", "x=$flow.key.text")  # fmt: skip
    assert result.exit_code == 0, result.output
    seen = receiver.requests[0]
    if body == "json":
        assert json.loads(seen.body)["call"] == {"cli": "{{ 7*7 }}", "x": "$flow.key.text"}
    else:
        assert seen.body == b"method=lookup&call.cli=%7B%7B+7%2A7+%7D%7D&call.x=%24flow.key.text"
        assert parse_qsl(seen.body.decode()) == [
            ("method", "lookup"), ("call.cli", "{{ 7*7 }}"), ("call.x", "$flow.key.text"),
        ]  # fmt: skip
