"""The on-complete push: the payload (checked with the schema of schemas/), its headers
and signature (checked by an independent Standard Webhooks verifier), the record's
``on_complete``, and exit codes when the receiver is down."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
from flowrunner.errors import StateError
from flowrunner.execution.context import Inputs
from flowrunner.execution.record import ExecutionRecord
from flowrunner.oncomplete.delivery import PushBatcher
from flowrunner.oncomplete.payload import build_payload, call_details, key_value
from flowrunner.runner import Runner
from flowrunner.secrets import Secrets
from flowrunner.source.schema import payload_errors

SECRET = "whsec_" + base64.b64encode(b"the sink's signing key").decode()

FLOW = """\
flow: pushed
on_complete: %s
keys:
  attempts: 0
  nothing: null
steps:
  - id: assign
    operation: assign
    set:
      attempts: "{{ $flow.key.attempts + 1 }}"
      profile: {name: $call.cli, tags: [a, b]}
      ratio: 0.5
      vip: true
  - id: call
    webhook: shop
    method: lookup
"""

CALL = {
    "uuid": "call-1",
    "request_id": "req-9",
    "cli": "+15551234567",
    "cdr": "cdr-7",
    "start": "2026-11-28T10:00:00Z",
    "connect": "2026-11-28T10:00:02Z",
    "end": "2026-11-28T10:01:00Z",
    "dnis": "+15550000002",
    "did": "+15550000001",
    "duration": 58,
    "hangup_cause": "NORMAL_CLEARING",
    "direction": "inbound",
}


def setup(
    tmp_path: Path,
    receiver: Receiver,
    on_complete: str = "true",
    sink_url: str | None = None,
    secret: str | None = SECRET,
) -> Path:
    sink: dict[str, Any] = {"url": sink_url or receiver.at("/sink"), "default": True}
    if secret is not None:
        sink["signing_secret"] = {"secret": "SINK_KEY"}
    lookup = {"lookup": {"response": {"order_id": "order.id"}}}
    hooks = {
        "shop": {"url": receiver.at("/shop"), "methods": lookup},
        "sink": sink,
        "other": {"url": receiver.at("/other")},
    }
    receiver.json("/shop", {"order": {"id": "A-1"}})
    return write_project(tmp_path, hooks, {"pushed": FLOW % on_complete})


def pushed(receiver: Receiver, path: str = "/sink") -> tuple[dict[str, Any], Any]:
    [seen] = receiver.hits(path)
    return json.loads(seen.body), seen


async def test_completed_payload(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINK_KEY", SECRET)
    record = await execute(plan_of(setup(tmp_path, receiver), "pushed"), call=dict(CALL))
    payload, seen = pushed(receiver)
    assert payload_errors(payload) == []
    shown = record.as_dict()
    assert {k: v for k, v in payload.items() if k != "keys"} == {
        "phonon-uuid": "call-1",
        "request-id": "req-9",
        "cli": "+15551234567",
        "flow": "pushed",
        "flowStatus": "COMPLETED",
        "error": None,
        "callDetails": [
            {
                "cdrId": "cdr-7",
                "startTime": "2026-11-28T10:00:00Z",
                "connectTime": "2026-11-28T10:00:02Z",
                "endTime": "2026-11-28T10:01:00Z",
                "calleeNumber": "+15550000002",
                "didNumber": "+15550000001",
                "duration": "58",
                "hangupCause": "NORMAL_CLEARING",
                "incoming": True,
            }
        ],
        "recordingUrls": [],
        "startedAt": shown["started_at"],
        "endedAt": shown["ended_at"],
    }
    duration = str(record.keys["response_duration"])
    assert payload["keys"] == [
        {"name": f"$flow.key.{name}", "value": value}
        for name, value in [
            ("attempts", "1"),  # declared keys first, in declaration order
            ("nothing", None),
            ("profile", '{"name":"+15551234567","tags":["a","b"]}'),  # then assigned ones
            ("ratio", "0.5"),
            ("vip", "true"),
            ("response_status", "SUCCESS"),
            ("response_status_code", "200"),
            ("response_status_type", None),
            ("error_reason", None),
            ("response_duration", duration),
            ("response_raw", '{"order": {"id": "A-1"}}'),
            ("response_error", "false"),
            ("order_id", "A-1"),
        ]
    ]
    assert record.on_complete == {
        "webhook": "sink",
        "webhook_id": f"msg_{record.execution_id}",
        "status": "delivered",
        "attempts": 1,
    }
    headers = seen.headers
    assert seen.method == "POST"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"flowrunner/{__version__}"
    assert headers["webhook-id"] == f"msg_{record.execution_id}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert verify_signature(SECRET, headers, seen.body)
    assert not verify_signature("whsec_" + base64.b64encode(b"wrong").decode(), headers, seen.body)
    tampered = seen.body.replace(b"COMPLETED", b"FAILED")
    assert not verify_signature(SECRET, headers, tampered)


async def test_failed_payload(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINK_KEY", SECRET)
    root = setup(tmp_path, receiver)
    receiver.status("/shop", 502, "bad gateway")
    record = await execute(plan_of(root, "pushed"), call={"cli": "+1", "direction": "outbound"})
    assert record.status == "FAILED"
    payload, seen = pushed(receiver)
    assert payload_errors(payload) == []
    assert payload["flowStatus"] == "FAILED"
    assert payload["error"] == {"step": "call", "reason": "SERVER_ERROR", "message": "HTTP 502"}
    assert payload["phonon-uuid"] == record.execution_id  # the call has no uuid
    assert payload["request-id"] is None
    assert payload["callDetails"] == [{"incoming": False}]
    names = [k["name"] for k in payload["keys"]]
    assert "$flow.key.order_id" not in names  # a failed call maps nothing
    assert {"name": "$flow.key.response_raw", "value": "bad gateway"} in payload["keys"]
    assert verify_signature(SECRET, seen.headers, seen.body)
    assert record.on_complete is not None and record.on_complete["status"] == "delivered"


async def test_a_push_to_a_named_webhook_unsigned(receiver: Receiver, tmp_path: Path) -> None:
    root = setup(tmp_path, receiver, on_complete="other")
    record = await execute(plan_of(root, "pushed"), call={"cli": "+1"})
    payload, seen = pushed(receiver, "/other")
    assert receiver.hits("/sink") == []
    assert payload_errors(payload) == []
    assert seen.headers["webhook-id"] == f"msg_{record.execution_id}"
    assert "webhook-timestamp" in seen.headers
    assert "webhook-signature" not in seen.headers
    assert record.on_complete is not None and record.on_complete["webhook"] == "other"


async def test_a_secret_without_whsec_is_used_as_its_bytes(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINK_KEY", "plain passphrase")
    await execute(plan_of(setup(tmp_path, receiver), "pushed"), call={"cli": "+1"})
    _, seen = pushed(receiver)
    assert verify_signature("plain passphrase", seen.headers, seen.body)


async def test_no_push_when_on_complete_is_off(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINK_KEY", SECRET)
    plan = plan_of(setup(tmp_path, receiver, on_complete="false"), "pushed")
    record = await execute(plan, call={"cli": "+1"})
    assert record.status == "COMPLETED" and record.on_complete is None
    assert receiver.hits("/sink") == []
    plan = plan_of(setup(tmp_path, receiver), "pushed")
    record = await execute(plan, call={"cli": "+1"}, on_complete=False)
    assert record.status == "COMPLETED"
    assert record.on_complete is None
    assert receiver.hits("/sink") == []


# ---- the receiver is down --------------------------------------------------------


async def test_receiver_down_leaves_the_push_pending_exit_75(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = setup(tmp_path, receiver, sink_url=f"http://127.0.0.1:{free_port()}/sink")
    env = {"SINK_KEY": SECRET}
    result = await invoke_async(root, "run", "pushed", "--call", "cli=+1", "--json", env=env)
    assert result.exit_code == 75, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "COMPLETED"
    push_id = f"msg_{record['execution_id']}"
    assert record["on_complete"] == {
        "webhook": "sink", "webhook_id": push_id, "status": "pending", "attempts": 1,
    }  # fmt: skip
    assert result.stderr == (
        "flowrunner: the on-complete push is waiting in the outbox; "
        "'flowrunner deliveries drain' sends it\n"
    )
    listed = json.loads((await invoke_async(root, "deliveries", "list", "--json")).stdout)
    assert [(d["id"], d["status"]) for d in listed] == [(push_id, "pending")]


async def test_a_failed_execution_with_a_pending_push_exits_1(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = setup(tmp_path, receiver, sink_url=f"http://127.0.0.1:{free_port()}/sink")
    receiver.status("/shop", 500)
    result = await invoke_async(
        root, "run", "pushed", "--call", "cli=+1", "--json", env={"SINK_KEY": SECRET}
    )
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["status"] == "FAILED"
    assert record["on_complete"]["status"] == "pending"


async def test_a_retried_push_keeps_its_webhook_id_and_body(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = setup(tmp_path, receiver)
    statuses = [503, 200]

    async def flaky(_: web.Request) -> web.StreamResponse:
        return web.Response(status=statuses.pop(0))

    receiver.on("/sink", flaky)
    env = {"SINK_KEY": SECRET}
    result = await invoke_async(root, "run", "pushed", "--call", "cli=+1", "--json", env=env)
    assert result.exit_code == 75
    drained = await invoke_async(root, "deliveries", "drain", "--now", env=env)
    assert drained.exit_code == 0, drained.output
    first, second = receiver.hits("/sink")
    execution_id = json.loads(result.stdout)["execution_id"]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{execution_id}"
    assert first.body == second.body
    assert verify_signature(SECRET, second.headers, second.body)


# ---- the builder alone -----------------------------------------------------------


def record_of(call: dict[str, Any], keys: dict[str, Any], **extra: Any) -> ExecutionRecord:
    moment = datetime(2026, 11, 28, 10, 0, 0, 120000, tzinfo=UTC)
    return ExecutionRecord(
        execution_id="e-1", flow="f", status="COMPLETED", started_at=moment,
        ended_at=moment, call=call, keys=keys, **extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [True, False, 0, -5, 2**70, 1.5, 0.1, 1e300, 5e-324, -0.0, math.nan, math.inf, [1], {"a": 1}],
)
def test_key_values_of_scalars_are_their_json(value: Any) -> None:
    assert key_value(value) == json.dumps(value, separators=(",", ":"))


def test_key_values_are_strings_null_stays_null() -> None:
    values = [None, "text", "", 0, 1.5, True, False, [1, "a"], {"b": None, "é": 1}]
    assert [key_value(v) for v in values] == [
        None, "text", "", "0", "1.5", "true", "false", '[1,"a"]', '{"b":null,"é":1}',
    ]  # fmt: skip


def test_call_details_leave_absent_inputs_out() -> None:
    assert call_details({}) == {}
    assert call_details({"did": "+1", "direction": "inbound", "cdr": None}) == {
        "didNumber": "+1",
        "incoming": True,
    }
    assert call_details({"duration": 12, "direction": "outbound"}) == {
        "duration": "12",
        "incoming": False,
    }


def test_payload_of_an_empty_call_is_valid() -> None:
    payload = build_payload(record_of({}, {}))
    assert payload_errors(payload) == []
    assert payload["phonon-uuid"] == "e-1"
    assert payload["cli"] is None and payload["callDetails"] == [{}]
    assert payload["startedAt"] == "2026-11-28T10:00:00.120+00:00"


def test_payload_recording_urls_and_typed_call_values() -> None:
    call = {"uuid": 42, "cli": 15551234567, "recording_urls": ["https://r/1.wav"]}
    payload = build_payload(record_of(call, {"n": 1}))
    assert payload_errors(payload) == []
    assert payload["phonon-uuid"] == "42" and payload["cli"] == "15551234567"
    assert payload["recordingUrls"] == ["https://r/1.wav"]


def test_payload_errors_reports_a_bad_payload() -> None:
    payload = build_payload(record_of({}, {}))
    payload["flowStatus"] = "DONE"
    del payload["keys"]
    assert payload_errors(payload) != []


async def test_a_push_batcher_never_leaves_a_caller_waiting() -> None:
    """Statuses that lack a push of the lot (its row gone from the outbox) fail that
    push's caller with a StateError, which the run reports as pending, instead of
    leaving it waiting forever; the others get their status."""

    class LosesTheSecond:
        async def send_leased(self, pushes: list[Any]) -> dict[str, dict[str, Any]]:
            return {pushes[0].id: {"status": "delivered"}}

    batcher = PushBatcher(LosesTheSecond())  # type: ignore[arg-type]
    sends = (batcher.send(SimpleNamespace(id="a")), batcher.send(SimpleNamespace(id="b")))
    first, second = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
    assert first == {"status": "delivered"}
    assert isinstance(second, StateError)
    assert "push b is missing" in str(second)


@pytest.mark.parametrize("batch", [False, True], ids=["one-run", "batch"])
async def test_a_push_renders_its_url_and_headers_for_each_execution(
    receiver: Receiver, tmp_path: Path, batch: bool
) -> None:
    """References in the push's URL and headers are rendered per execution, by a single
    run and by a batch's runner alike; the batch also reuses the record's written
    times for the payload and ``$sys.datetime``."""
    sink = {
        "url": receiver.at("/sink") + "?caller=$call.cli",
        "default": True,
        "headers": {"X-Flow": "$sys.flow", "X-Ended": "$sys.datetime", "X-Fixed": "same"},
    }
    hooks = {"shop": {"url": receiver.at("/shop"), "methods": {"lookup": {}}}, "sink": sink}
    root = write_project(tmp_path, hooks, {"pushed": FLOW % "true"})
    plan = plan_of(root, "pushed")
    calls = [dict(CALL, cli=f"1555000000{i}") for i in range(3)]
    if batch:
        runner = Runner(plan, Secrets(env={}), group_commit=True, transport="fast")
        async with runner:
            records = [(await runner.run_encoded(Inputs(call=c)))[0] for c in calls]
    else:
        records = [await execute(plan, call=c) for c in calls]
    seen = receiver.hits("/sink")
    assert [s.query for s in seen] == [f"caller=1555000000{i}" for i in range(3)]
    for record, request in zip(records, seen, strict=True):
        shown, payload = record.as_dict(), json.loads(request.body)
        assert request.headers["X-Flow"] == "pushed"
        assert request.headers["X-Ended"] == shown["ended_at"] == payload["endedAt"]
        assert request.headers["X-Fixed"] == "same"
        assert payload["startedAt"] == shown["started_at"]
        assert record.on_complete is not None and record.on_complete["status"] == "delivered"
