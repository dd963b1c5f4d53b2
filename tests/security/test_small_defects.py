"""Smaller defects found by the adversarial pass: exact big integers, a closed output
pipe, SIGTERM on ``deliveries drain``, a FIFO given to ``validate``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from .helpers import Recorder, cli, write_project

BIG = 123456789012345678901234567890


def test_big_integers_stay_exact_in_events_lines_and_answers(
    tmp_path: Path, server: Recorder
) -> None:
    answer = quote(json.dumps({"n": BIG, "m": -(2**70), "small": 2**63 - 1}))
    method = {"m": {"response": {"n": "n", "m": "m", "small": "small"}}}
    flow = (
        "flow: f\nsteps:\n  - id: c\n    webhook: h\n    method: m\n"
        "  - id: a\n    operation: assign\n    set: {echo: $call.big}\n"
    )
    hooks = {"h": {"url": f"{server.url}/raw?body={answer}", "methods": method}}
    root = write_project(tmp_path, hooks, {"f": flow}).root
    events = tmp_path / "events.jsonl"
    events.write_text(f'{{"call": {{"big": {BIG}}}}}\n')
    out = tmp_path / "records.jsonl"
    result = cli(root, "run", "f", "--events", str(events), "--output", str(out))
    assert result.exit_code == 0, result.stderr
    line = out.read_text()
    assert f'"echo":{BIG}' in line and f'"n":{BIG}' in line and f'"m":{-(2**70)}' in line
    keys = json.loads(line)["keys"]
    assert (keys["echo"], keys["n"], keys["m"], keys["small"]) == (BIG, BIG, -(2**70), 2**63 - 1)


def flowrunner_process(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowrunner", "--project", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("schema", "flow"),
        ("deliveries", "list"),
        ("deliveries", "list", "--json"),
        ("runs", "list", "--json"),
        ("webhooks", "list"),
        ("validate", "--format", "json"),
        ("run", "f", "--json"),
        ("run", "f", "--events", "EVENTS"),
    ],
)
def test_a_closed_output_pipe_ends_the_command_quietly(
    tmp_path: Path, server: Recorder, args: tuple[str, ...]
) -> None:
    flow = "flow: f\non_complete: true\nsteps:\n  - id: a\n    operation: assign\n    set: {x: 1}\n"
    hooks = {"h": {"url": f"{server.url}/ok", "default": True}}
    root = write_project(tmp_path, hooks, {"f": flow}).root
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n" * 2000)
    for _ in range(3):  # something to list
        assert cli(root, "run", "f").exit_code == 0
    proc = flowrunner_process(root, *[str(events) if a == "EVENTS" else a for a in args])
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before anything is written
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert "Exception ignored" not in stderr and "BrokenPipeError" not in stderr


def test_sigterm_on_drain_releases_its_leases(tmp_path: Path, server: Recorder) -> None:
    flow = "flow: f\non_complete: true\nsteps:\n  - id: a\n    operation: assign\n    set: {x: 1}\n"
    hooks = {"h": {"url": f"{server.url}/status/503", "default": True, "timeout": 10}}
    root = write_project(tmp_path, hooks, {"f": flow}).root
    assert cli(root, "run", "f").exit_code == 75  # a pending push
    state = root / ".flowrunner" / "state.db"
    with sqlite3.connect(state) as conn:
        conn.execute("UPDATE outbox SET url = ?", (f"{server.url}/slow",))  # 3 s to answer
    server.hits.clear()
    proc = flowrunner_process(root, "deliveries", "drain", "--now", "--timeout", "30")
    deadline = time.monotonic() + 20
    while not server.hits and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.hits, "the drain never sent the push"
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait(timeout=10) == 130
    assert stderr == "flowrunner: interrupted\n"
    with sqlite3.connect(state) as conn:
        row = conn.execute("SELECT status, lease_owner, lease_until FROM outbox").fetchone()
    assert row == ("pending", None, None)


def test_a_fifo_given_to_validate_is_named_as_such(tmp_path: Path) -> None:
    root = write_project(tmp_path, {}, {}).root
    fifo = tmp_path / "flow.yaml"
    os.mkfifo(fifo)
    result = cli(root, "validate", str(fifo))
    assert result.exit_code == 2
    assert result.stderr == (
        f"flowrunner: {fifo}: is a named pipe (FIFO); validate reads files and folders "
        "(pipe YAML in with '-')\n"
    )
