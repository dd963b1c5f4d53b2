"""The engine: step order, `when`, `next`, `on_failure`, the step limit, failures that end
an execution, `$sys`, and user keys in a real state file across runs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Receiver, execute, invoke_async, plan_of, write_project

from flowrunner.execution.context import Inputs, MemoryUserKeys, Services, truthy
from flowrunner.execution.engine import STEP_LIMIT, Engine
from flowrunner.net.http import HttpClient
from flowrunner.secrets import Secrets
from flowrunner.source.model import HttpPolicy
from flowrunner.state.sqlite.store import Store

LOOPBACK = HttpPolicy(allow_http=True, allowlist=("127.0.0.1",))


def hook(receiver: Receiver, **options: Any) -> dict[str, Any]:
    return {"url": receiver.at("/hook"), "methods": {"m": {}}, **options}


def flow_project(tmp_path: Path, flow: str, receiver: Receiver | None = None, **extra: Any) -> Any:
    hooks = {"hook": hook(receiver)} if receiver else {}
    write_project(tmp_path, hooks, {"f": flow}, **extra)
    return plan_of(tmp_path, "f")


def outcomes(record: Any) -> list[tuple[str, str]]:
    return [(s.id, s.outcome) for s in record.steps]


# ---- order, next, on_failure -----------------------------------------------------

FAILING = """\
flow: f
keys: {message: none}
steps:
  - id: call
    webhook: hook
    method: m
    %s
  - id: after-call
    operation: assign
    set: {message: answered}
    next: end
  - id: sorry
    operation: assign
    set: {message: "sorry ($flow.key.error_reason)"}
"""


async def test_a_failed_call_goes_to_on_failure(receiver: Receiver, tmp_path: Path) -> None:
    receiver.status("/hook", 503)
    plan = flow_project(tmp_path, FAILING % "on_failure: sorry", receiver)
    record = await execute(plan)
    assert record.status == "COMPLETED" and record.error is None
    assert outcomes(record) == [("call", "failed"), ("sorry", "ok")]
    assert record.keys["message"] == "sorry (SERVER_ERROR)"


async def test_a_successful_call_takes_next_not_on_failure(
    receiver: Receiver, tmp_path: Path
) -> None:
    plan = flow_project(tmp_path, FAILING % "on_failure: sorry", receiver)
    record = await execute(plan)
    assert outcomes(record) == [("call", "ok"), ("after-call", "ok")]
    assert record.keys["message"] == "answered"


async def test_a_failed_call_without_on_failure_ends_failed(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status("/hook", 404, "no such order")
    plan = flow_project(tmp_path, FAILING % "document: no on_failure", receiver)
    record = await execute(plan)
    assert record.status == "FAILED"
    assert record.error == {"step": "call", "reason": "CLIENT_ERROR", "message": "HTTP 404"}
    assert outcomes(record) == [("call", "failed")]
    assert record.keys["message"] == "none"
    assert record.keys["response_raw"] == "no such order"
    assert record.as_dict()["steps"][0]["error"] == "HTTP 404"


async def test_on_failure_end_ends_completed(receiver: Receiver, tmp_path: Path) -> None:
    receiver.status("/hook", 500)
    plan = flow_project(tmp_path, FAILING % "on_failure: end", receiver)
    record = await execute(plan)
    assert record.status == "COMPLETED"
    assert outcomes(record) == [("call", "failed")]


LOOP = """\
flow: f
keys: {n: 0, trail: ""}
steps:
  - id: add
    operation: assign
    set:
      n: "{{ $flow.key.n + 1 }}"
      trail: "$flow.key.trail$flow.key.n,"
  - id: again
    when: "{{ $flow.key.n < 3 }}"
    operation: assign
    set: {looping: true}
    next: add
  - id: done
    operation: assign
    set: {finished: true}
"""


async def test_next_jumps_back_and_when_exits_the_loop(tmp_path: Path) -> None:
    record = await execute(flow_project(tmp_path, LOOP))
    assert record.status == "COMPLETED"
    assert outcomes(record) == [
        ("add", "ok"), ("again", "ok"), ("add", "ok"), ("again", "ok"),
        ("add", "ok"), ("again", "skipped"), ("done", "ok"),
    ]  # fmt: skip
    assert record.keys == {"n": 3, "trail": "1,2,3,", "looping": True, "finished": True}


SKIP = """\
flow: f
keys: {ran: []}
steps:
  - id: first
    when: %s
    operation: assign
    set: {ran: "{{ $flow.key.ran + ['first'] }}"}
    next: end
  - id: second
    operation: assign
    set: {ran: "{{ $flow.key.ran + ['second'] }}"}
"""


@pytest.mark.parametrize(
    ("when", "runs"),
    [
        ("false", False),
        ("true", True),
        ('"{{ 1 > 2 }}"', False),
        ('"{{ 2 > 1 }}"', True),
        ('"false"', False),
        ('"{% if 1 > 2 %}true{% else %}false{% endif %}"', False),
        ('"{% if 2 > 1 %}true{% else %}false{% endif %}"', True),
        ("$call.vip", False),  # --call vip=false is the text "false"
        ("$call.zero", False),
        ("$call.name", True),
        ('"{{ $call.list }}"', False),
    ],
)
async def test_when(tmp_path: Path, when: str, runs: bool) -> None:
    call = {"vip": "false", "zero": 0, "name": "Ann", "list": []}
    record = await execute(flow_project(tmp_path, SKIP % when), call=call)
    if runs:
        assert outcomes(record) == [("first", "ok")]  # and its `next: end` applied
        assert record.keys["ran"] == ["first"]
    else:
        assert outcomes(record) == [("first", "skipped"), ("second", "ok")]  # next ignored
        assert record.keys["ran"] == ["second"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True), (False, False), (None, False), (0, False), (1, True), (0.0, False),
        ("", False), ("  ", False), ("false", False), ("False", False), (" FALSE\n", False),
        ("0", False), ("null", False), ("None", False), ("true", True), ("no", True),
        ("0.0", True), ("x", True), ([], False), ([0], True), ({}, False),
    ],
)  # fmt: skip
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


async def test_a_skipped_webhook_step_sends_nothing(receiver: Receiver, tmp_path: Path) -> None:
    flow = """\
    flow: f
    steps:
      - {id: call, when: "{{ false }}", webhook: hook, method: m, next: end}
      - {id: after, operation: assign, set: {done: true}}
    """
    record = await execute(flow_project(tmp_path, flow, receiver))
    assert outcomes(record) == [("call", "skipped"), ("after", "ok")]
    assert receiver.requests == []
    assert "response_status" not in record.keys
    assert record.steps[0].as_dict() == {
        "id": "call", "kind": "webhook", "outcome": "skipped",
        "duration_ms": round(record.steps[0].duration_ms, 3),
    }  # fmt: skip


# ---- the step limit --------------------------------------------------------------

FOREVER = """\
flow: f
keys: {n: 0}
steps:
  - id: inc
    operation: assign
    set: {n: "{{ $flow.key.n + 1 }}"}
  - id: skip
    when: false
    operation: assign
    set: {never: true}
    next: end
  - id: back
    operation: assign
    set: {looped: true}
    next: inc
"""


async def test_the_step_limit_ends_a_loop_failed(tmp_path: Path) -> None:
    record = await execute(flow_project(tmp_path, FOREVER))
    assert record.status == "FAILED"
    assert len(record.steps) == STEP_LIMIT == 1000
    # skipped steps count: inc, skip, back, inc, ... the 1000th is an `inc`
    assert [s.id for s in record.steps[:4]] == ["inc", "skip", "back", "inc"]
    assert record.steps[-1].id == "inc"
    assert record.error == {
        "step": "skip",
        "reason": "STEP_LIMIT",
        "message": "more than 1000 steps ran (a loop without an exit?)",
    }
    assert record.keys["n"] == 334


# ---- failures of the flow itself -------------------------------------------------


async def test_a_template_error_ends_failed_even_with_on_failure(
    receiver: Receiver, tmp_path: Path
) -> None:
    flow = """\
    flow: f
    steps:
      - id: call
        webhook: hook
        method: m
        params: {ratio: "{{ 1 / 0 }}"}
        on_failure: sorry
      - {id: sorry, operation: assign, set: {message: sorry}}
    """
    record = await execute(flow_project(tmp_path, flow, receiver))
    assert record.status == "FAILED"
    assert record.error == {
        "step": "call",
        "reason": "TEMPLATE_ERROR",
        "message": "in 'params.ratio': could not render template: division by zero",
    }
    assert outcomes(record) == [("call", "failed")]
    assert receiver.requests == []
    assert "response_status" not in record.keys


async def test_an_undefined_call_value_is_a_template_error(tmp_path: Path) -> None:
    flow = "flow: f\nsteps:\n  - {id: a, operation: assign, set: {x: $call.nope}}\n"
    record = await execute(flow_project(tmp_path, flow), call={"nop": 1})
    assert record.error == {
        "step": "a",
        "reason": "TEMPLATE_ERROR",
        "message": "in 'set.x': undefined variable $call.nope (did you mean $call.nop?)",
    }


async def test_a_line_break_in_a_header_is_refused(receiver: Receiver, tmp_path: Path) -> None:
    flow = "flow: f\nsteps:\n  - {id: call, webhook: hook, method: m, on_failure: end}\n"
    write_project(tmp_path, {"hook": hook(receiver, headers={"X-Caller": "$call.cli"})},
                  {"f": flow})  # fmt: skip
    record = await execute(plan_of(tmp_path, "f"), call={"cli": "x\r\nX-Evil: 1"})
    assert record.status == "FAILED"
    assert record.error == {
        "step": "call",
        "reason": "TEMPLATE_ERROR",
        "message": "in 'headers.X-Caller': header value contains a line break",
    }
    assert receiver.requests == []


async def test_a_missing_secret_inside_a_step_ends_failed(
    receiver: Receiver, tmp_path: Path
) -> None:
    # the runner refuses such a run up front; the engine alone still fails cleanly
    flow = "flow: f\nsteps:\n  - {id: call, webhook: hook, method: m, on_failure: end}\n"
    auth = {"bearer": {"token": {"secret": "NOT_SET_ANYWHERE"}}}
    write_project(tmp_path, {"hook": hook(receiver, auth=auth)}, {"f": flow})
    plan = plan_of(tmp_path, "f")
    async with HttpClient(LOOPBACK) as client:
        services = Services(client=client, secrets=Secrets(env={}), users=MemoryUserKeys())
        record = await Engine(plan, services).execute(Inputs())
    assert record.status == "FAILED"
    assert record.error is not None
    assert record.error["reason"] == "SECRET_MISSING"
    assert "NOT_SET_ANYWHERE" in record.error["message"]
    assert receiver.requests == []


async def test_assignments_apply_in_order_and_stop_at_a_failure(tmp_path: Path) -> None:
    flow = """\
    flow: f
    keys: {a: 1}
    steps:
      - id: set
        operation: assign
        set:
          a: "{{ $flow.key.a + 1 }}"
          b: "{{ $flow.key.a * 10 }}"
          c: "{{ $flow.key.b // 0 }}"
          d: never
    """
    record = await execute(flow_project(tmp_path, flow))
    assert record.status == "FAILED"
    assert record.keys == {"a": 2, "b": 20}  # the assignments before the failing one stay


# ---- $sys ------------------------------------------------------------------------


async def test_sys_values(receiver: Receiver, tmp_path: Path) -> None:
    flow = """\
    flow: f
    steps:
      - id: one
        operation: assign
        set: {t1: $sys.datetime, id: $sys.execution_id, name: $sys.flow}
      - id: wait
        webhook: hook
        method: m
      - id: two
        operation: assign
        set: {t2: $sys.datetime}
    """

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.json_response({})

    receiver.on("/hook", slow)
    record = await execute(flow_project(tmp_path, flow, receiver), execution_id="exec-1")
    keys = record.keys
    assert keys["id"] == record.execution_id == "exec-1"
    assert keys["name"] == "f"
    t1, t2 = datetime.fromisoformat(keys["t1"]), datetime.fromisoformat(keys["t2"])
    assert len(keys["t1"]) == len("2026-11-28T10:00:00.000+00:00")
    assert keys["t1"].endswith("+00:00")
    assert (t2 - t1).total_seconds() >= 0.05  # the time each step started
    shown = record.as_dict()  # the same ISO form, to the millisecond
    assert shown["started_at"] <= keys["t1"] <= keys["t2"] <= shown["ended_at"]


async def test_one_engine_runs_executions_concurrently(tmp_path: Path) -> None:
    flow = """\
    flow: f
    keys: {items: []}
    steps:
      - {id: a, operation: assign, set: {items: "{{ $flow.key.items + [$call.n] }}"}}
    """
    plan = flow_project(tmp_path, flow)
    services = Services(client=None, secrets=Secrets(env={}), users=MemoryUserKeys())
    engine = Engine(plan, services)
    records = await asyncio.gather(*(engine.execute(Inputs(call={"n": i})) for i in range(20)))
    assert [r.keys["items"] for r in records] == [[i] for i in range(20)]
    assert len({r.execution_id for r in records}) == 20
    assert plan.flow.keys == {"items": []}


# ---- user keys in the state file -------------------------------------------------

COUNTER = """\
flow: f
steps:
  - id: count
    operation: assign
    set:
      $user.key.calls: "{{ $user.key.calls + 1 }}"
      tier_seen: $user.key.tier
      calls_seen: $user.key.calls
"""


def stored(root: Path) -> dict[str, Any]:
    store = Store.open(root / "state.db")
    try:
        return store.user_keys()
    finally:
        store.close()


async def test_user_keys_persist_across_runs(tmp_path: Path) -> None:
    seeds = {"calls": 0, "tier": "gold"}
    first = await execute(flow_project(tmp_path, COUNTER, user_keys=seeds))
    second = await execute(flow_project(tmp_path, COUNTER, user_keys=seeds))
    assert first.keys["calls_seen"] == 1 and second.keys["calls_seen"] == 2
    assert stored(tmp_path) == {"calls": 2, "tier": "gold"}


async def test_seeds_do_not_overwrite_stored_values(tmp_path: Path) -> None:
    await execute(flow_project(tmp_path, COUNTER, user_keys={"calls": 0, "tier": "gold"}))
    changed = {"calls": 100, "tier": "silver", "fresh": "new"}
    record = await execute(flow_project(tmp_path, COUNTER, user_keys=changed))
    assert record.keys["calls_seen"] == 2
    assert record.keys["tier_seen"] == "gold"
    assert stored(tmp_path) == {"calls": 2, "tier": "gold", "fresh": "new"}


async def test_a_user_key_override_applies_to_one_execution(tmp_path: Path) -> None:
    plan = flow_project(tmp_path, COUNTER, user_keys={"calls": 0, "tier": "gold"})
    first = await execute(plan, user_keys={"tier": "platinum", "calls": 41})
    assert first.keys["tier_seen"] == "platinum"
    assert first.keys["calls_seen"] == 42  # the override is read; the assignment persists
    assert stored(tmp_path) == {"calls": 42, "tier": "gold"}
    second = await execute(plan)
    assert second.keys["tier_seen"] == "gold"


async def test_user_key_override_from_the_command_line(tmp_path: Path) -> None:
    flow_project(tmp_path, COUNTER, user_keys={"calls": 0, "tier": "gold"})
    result = await invoke_async(tmp_path, "run", "f", "--user-key", "tier=bronze", "--json")
    assert result.exit_code == 0, result.output
    assert '"tier_seen": "bronze"' in result.output
    assert stored(tmp_path) == {"calls": 1, "tier": "gold"}


async def test_a_dry_run_writes_no_user_key(tmp_path: Path) -> None:
    plan = flow_project(tmp_path, COUNTER, user_keys={"calls": 0, "tier": "gold"})
    record = await execute(plan, dry_run=True)
    assert record.keys["calls_seen"] == 1
    assert not (tmp_path / "state.db").exists()
