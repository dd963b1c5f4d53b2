"""``flowrunner run`` through click's runner: human and JSON output, dry runs, typed
inputs, and the clean one-line errors with their exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conftest import Receiver, invoke, invoke_async, write_project

RECORD_FIELDS = {"execution_id", "flow", "status", "error", "started_at", "ended_at",
                 "duration_ms", "steps", "keys", "on_complete"}  # fmt: skip
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\Z")

FLOW = """\
flow: order-status
on_complete: true
keys:
  attempts: 0
steps:
  - id: count
    operation: assign
    set:
      attempts: "{{ $flow.key.attempts + 1 }}"
  - id: lookup
    webhook: shop
    method: getOrderStatus
    params: {hint: $call.cli}
    on_failure: sorry
  - id: shipped
    when: "{{ $flow.key.order_status == 'shipped' }}"
    operation: assign
    set: {message: "Order $flow.key.order_id has shipped."}
    next: end
  - id: sorry
    operation: assign
    set: {message: sorry}
"""

ENV = {"SHOP_TOKEN": "real-token-value", "SINK_KEY": "whsec_c2luay1rZXk="}


def project(tmp_path: Path, receiver: Receiver) -> Path:
    hooks = {
        "shop": {
            "url": receiver.at("/shop"),
            "body": "json",
            "auth": {"bearer": {"token": {"secret": "SHOP_TOKEN"}}},
            "methods": {"getOrderStatus": {"response": {"order_status": "status",
                                                        "order_id": "order.id"}}},
        },
        "sink": {"url": receiver.at("/sink"), "default": True,
                 "signing_secret": {"secret": "SINK_KEY"}},
    }  # fmt: skip
    receiver.json("/shop", {"status": "shipped", "order": {"id": "A-1"}})
    return write_project(tmp_path, hooks, {"order-status": FLOW})


async def run(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    result = await invoke_async(root, "run", "order-status", *args, env=ENV if env is None else env)
    assert "Traceback" not in result.output
    return result


async def test_human_output(receiver: Receiver, tmp_path: Path) -> None:
    result = await run(project(tmp_path, receiver), "--call", "cli=+1555")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"order-status: COMPLETED in \d+\.\d ms \(execution [0-9a-f-]{36}\)",
                        lines[0])  # fmt: skip
    url = receiver.at("/shop")
    step = r"  {:<8} {:<24} +\d+\.\d ms"
    assert re.fullmatch(step.format("ok", "count"), lines[1])
    assert re.fullmatch(step.format("ok", "lookup") + re.escape(f"  POST {url} -> 200"), lines[2])
    assert re.fullmatch(step.format("ok", "shipped"), lines[3])
    assert lines[4] == "keys:"
    assert lines[5:7] == ["  attempts = 1", '  response_status = "SUCCESS"']
    assert '  message = "Order A-1 has shipped."' in lines
    assert re.fullmatch(r"on-complete: delivered to webhook 'sink' \(webhook-id msg_[0-9a-f-]{36}, "
                        r"1 attempt\(s\)\)", lines[-1])  # fmt: skip
    assert result.stderr == ""


async def test_human_output_of_a_failed_execution(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, receiver)
    text = (root / "flows" / "order-status.yaml").read_text()
    (root / "flows" / "order-status.yaml").write_text(text.replace("    on_failure: sorry\n", ""))
    receiver.status("/shop", 500)
    result = await run(root, "--call", "cli=+1555", "--no-on-complete")
    assert result.exit_code == 1
    assert re.search(r"\n  failed   lookup +\d+\.\d ms  POST \S+ -> 500  \(HTTP 500\)\n",
                     result.stdout)  # fmt: skip
    assert "\nerror: step 'lookup': SERVER_ERROR: HTTP 500\n" in result.stdout


async def test_json_record(receiver: Receiver, tmp_path: Path) -> None:
    result = await run(project(tmp_path, receiver), "--call", "cli=+1555", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1  # one line
    record = json.loads(result.stdout)
    assert set(record) == RECORD_FIELDS
    assert record["flow"] == "order-status" and record["status"] == "COMPLETED"
    assert record["error"] is None
    assert ISO.match(record["started_at"]) and ISO.match(record["ended_at"])
    assert isinstance(record["duration_ms"], float)
    count, lookup, shipped = record["steps"]
    assert set(count) == {"id", "kind", "outcome", "duration_ms"}
    assert (count["id"], count["kind"], count["outcome"]) == ("count", "operation", "ok")
    assert lookup["kind"] == "webhook"
    assert lookup["request"] == {"method": "POST", "url": receiver.at("/shop")}
    assert lookup["response"] == {"status": 200}
    assert shipped["outcome"] == "ok"
    assert record["keys"]["attempts"] == 1
    assert record["keys"]["order_id"] == "A-1"
    assert record["on_complete"] == {
        "webhook": "sink",
        "webhook_id": "msg_" + record["execution_id"],
        "status": "delivered",
        "attempts": 1,
    }
    shown = await invoke_async(tmp_path, "runs", "show", record["execution_id"])
    assert json.loads(shown.stdout)["keys"] == record["keys"]


async def test_dry_run_sends_nothing_and_masks_secrets(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, receiver)
    result = await run(root, "--call", "cli=+1555", "--dry-run", env={})  # no secret set
    assert result.exit_code == 0, result.output
    assert receiver.requests == []
    assert not (tmp_path / "state.db").exists()
    out = result.stdout
    assert "  ok       lookup " in out and f"POST {receiver.at('/shop')}\n" in out
    assert "      Authorization: Bearer ***\n" in out
    assert "      Content-Type: application/json\n" in out
    assert re.search(r"      Idempotency-Key: [0-9a-f-]{36}:lookup\n", out)
    body = re.search(r"      body: (.*)\n", out)
    assert body is not None and json.loads(body.group(1))["params"] == {"hint": "+1555"}
    assert "  skipped  shipped " in out  # the empty answer maps null
    assert "  order_status = null\n" in out and '  message = "sorry"\n' in out
    assert "on-complete" not in out


async def test_dry_run_json(receiver: Receiver, tmp_path: Path) -> None:
    result = await run(project(tmp_path, receiver), "--dry-run", "--json", "--call", "cli=+1")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    lookup = record["steps"][1]
    assert lookup["outcome"] == "ok" and "response" not in lookup
    assert lookup["request"]["headers"]["Authorization"] == "Bearer ***"
    assert json.loads(lookup["request"]["body"])["method"] == "getOrderStatus"
    assert record["keys"]["response_status"] == "SUCCESS"
    assert record["keys"]["response_status_code"] is None
    assert record["keys"]["order_id"] is None
    assert record["on_complete"] is None
    assert "real-token-value" not in result.output


async def test_no_on_complete(receiver: Receiver, tmp_path: Path) -> None:
    result = await run(
        project(tmp_path, receiver), "--call", "cli=+1", "--no-on-complete", "--json"
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout)["on_complete"] is None
    assert receiver.hits("/sink") == []


async def test_typed_values(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, receiver)
    result = await run(root, "--call", "cli=+1", "--call", "n:=3", "--call", 'obj:={"a": [1]}',
                       "--call", "text=3", "--key", "attempts:=41", "--key", "extra:=null",
                       "--no-on-complete")  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(receiver.hits("/shop")[0].body)
    assert body["call"] == {"cli": "+1", "n": 3, "obj": {"a": [1]}, "text": "3"}
    assert body["flow"]["key"] == {"attempts": 42, "extra": None}


async def test_a_flow_given_as_a_path(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, receiver)
    flow = str(root / "flows" / "order-status.yaml")
    result = await invoke_async(root, "run", flow, "--call", "cli=+1", "--no-on-complete", env=ENV)
    assert result.exit_code == 0, result.output


def test_bad_inputs_are_one_line_exit_2(tmp_path: Path) -> None:
    flow = "flow: f\nsteps:\n  - {id: a, operation: assign, set: {x: 1}}\n"
    write_project(tmp_path, {}, {"f": flow})
    cases = {
        ("--call", "novalue"): "flowrunner: --call novalue: expected NAME=VALUE or NAME:=JSON "
        "(NAME is letters, digits and _, not starting with a digit)\n",
        ("--call", "1x=secret-ish"): "flowrunner: --call …: expected NAME=VALUE or NAME:=JSON "
        "(NAME is letters, digits and _, not starting with a digit)\n",
        ("--key", "n:={bad"): None,
        ("--user-key", "=v"): None,
    }
    for args, expected in cases.items():
        result = invoke(tmp_path, "run", "f", *args)
        assert result.exit_code == 2, args
        assert result.stdout == ""
        assert result.stderr.startswith("flowrunner: ") and result.stderr.count("\n") == 1
        if expected:
            assert result.stderr == expected
    bad_json = invoke(tmp_path, "run", "f", "--key", "n:={bad")
    assert "--key n: not valid JSON after ':='" in bad_json.stderr
    assert not (tmp_path / "state.db").exists()


def test_unknown_flow_suggests(tmp_path: Path) -> None:
    write_project(tmp_path, {}, {"order-status": "flow: order-status\nsteps:\n"
                                 "  - {id: a, operation: assign, set: {x: 1}}\n"})  # fmt: skip
    result = invoke(tmp_path, "run", "ordr-status")
    assert result.exit_code == 2
    assert result.stderr.startswith("flowrunner: no flow named 'ordr-status' in ")
    assert result.stderr.endswith(" (did you mean 'order-status'?)\n")
    assert invoke(tmp_path, "run", "flows/missing.yaml").exit_code == 2


def test_an_invalid_flow_prints_diagnostics_and_runs_nothing(tmp_path: Path) -> None:
    flow = """\
    flow: broken
    steps:
      - id: say
        operation: assign
        set: {x: $flow.key.ordr}
      - id: call
        webhook: shpo
        method: m
    """
    write_project(tmp_path, {"shop": {"url": "http://127.0.0.1:9/x"}}, {"broken": flow})
    result = invoke(tmp_path, "run", "broken")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert re.fullmatch(r".*flows/broken\.yaml:5:14: error: step 'say': undefined variable "
                        r"\$flow\.key\.ordr.*\[undefined-key\]", lines[0])  # fmt: skip
    assert re.fullmatch(r".*flows/broken\.yaml:7:14: error: unknown webhook 'shpo' "
                        r"\(did you mean 'shop'\?\) \[unknown-webhook\]", lines[1])  # fmt: skip
    assert lines[-1] == "2 error(s), 0 warning(s)"
    assert "Traceback" not in result.output
    assert not (tmp_path / "state.db").exists()


def test_no_project(tmp_path: Path) -> None:
    result = invoke(tmp_path, "run", "f")
    assert result.exit_code == 2
    assert result.stderr == f"flowrunner: {tmp_path}: no flowrunner.yaml in this folder\n"


async def test_no_on_complete_needs_no_push_secret(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, receiver)
    result = await run(
        root, "--call", "cli=+1555", "--no-on-complete", "--json",
        env={"SHOP_TOKEN": "real-token-value"},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, ""), result.stdout
    assert json.loads(result.stdout)["on_complete"] is None


async def test_a_push_that_cannot_be_built_is_recorded_dead(
    receiver: Receiver, tmp_path: Path
) -> None:
    root = project(tmp_path, receiver)
    text = (root / "flowrunner.yaml").read_text()
    (root / "flowrunner.yaml").write_text(text.replace("/sink", "/sink/$flow.key.nope"))
    result = await run(root, "--call", "cli=+1555", "--json")
    record = json.loads(result.stdout)
    assert result.exit_code == 1
    assert record["status"] == "COMPLETED"
    push = record["on_complete"]
    assert (push["status"], push["attempts"]) == ("dead", 0)
    assert "undefined variable $flow.key.nope" in push["last_error"]
    assert receiver.hits("/sink/x") == [] and len(receiver.requests) == 1  # only the lookup
    shown = await invoke_async(root, "runs", "show", record["execution_id"])
    assert shown.exit_code == 0  # the execution is in the history all the same


async def test_history_is_pruned_to_keep_runs(receiver: Receiver, tmp_path: Path) -> None:
    root = project(tmp_path, receiver)
    with (root / "flowrunner.yaml").open("a") as project_file:
        project_file.write("history: {keep_runs: 2}\n")
    ids = []
    for _ in range(4):
        result = await run(root, "--call", "cli=+1555", "--json")
        assert result.exit_code == 0
        ids.append(json.loads(result.stdout)["execution_id"])
    listed = await invoke_async(root, "runs", "list", "--json", "--limit", "0")
    # pruned when the last run opened the state file: the newest 2 then, and the last run
    assert [r["execution_id"] for r in json.loads(listed.stdout)] == [ids[3], ids[2], ids[1]]


def test_events_do_not_mix_with_single_run_options(tmp_path: Path) -> None:
    flow = "flow: f\nsteps:\n  - id: a\n    operation: assign\n    set: {x: 1}\n"
    root = write_project(tmp_path, {}, {"f": flow})
    events = str(tmp_path / "e.jsonl")
    (tmp_path / "e.jsonl").write_text("{}\n")
    for extra in (["--call", "cli=1"], ["--json"], ["--key", "x=1"]):
        result = invoke(root, "run", "f", "--events", events, *extra)
        assert result.exit_code == 2
        assert "--events takes each execution's values from its line" in result.stderr
    result = invoke(root, "run", "f", "--output", str(tmp_path / "o.jsonl"))
    assert (result.exit_code, result.stderr.strip()) == (
        2,
        "flowrunner: --output applies to --events only",
    )


def test_settle_runs_a_coroutine_that_waits_in_an_event_loop():
    import asyncio

    from flowrunner.cli.run import settle

    starts = []

    async def waits() -> int:
        starts.append(1)
        await asyncio.sleep(0)
        return 7

    async def never_waits() -> int:
        return 8

    assert settle(never_waits) == 8
    assert settle(waits) == 7 and len(starts) == 2  # closed, then run again in a loop
