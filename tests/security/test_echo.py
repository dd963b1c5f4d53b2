"""A receiver that echoes the request's headers back (a debug endpoint, an error page)
must not carry the credentials it was sent into anything flowrunner prints, stores or
pushes on: every output of ``run`` (text, ``--json``, ``--events`` to stdout, to
``--output``, through worker processes), the mapped flow key and ``response_raw``,
``runs show`` with and without the secrets in the environment, the state file's raw
bytes, and the on-complete payload another receiver gets.

The commands run as real processes: a process that never resolved the secrets (``runs
show`` without the environment) has nothing to scrub with, so the stored data itself
must already be clean.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import Recorder, write_project
from .test_secrets import ENV, FORMS, PASSWORD, TOKEN, USERNAME


def echo_project(root: Path, server: Recorder, code: int) -> Path:
    basic = {"basic": {"username": USERNAME, "password": {"secret": "CANARY_PASSWORD"}}}
    bearer = {"bearer": {"token": {"secret": "CANARY_TOKEN"}}}
    method = {"m": {"response": {"seen": "headers.Authorization"}}}
    url = f"{server.url}/echo/{code}"
    hooks = {
        "basic": {"url": url, "auth": basic, "body": "json", "methods": method},
        "bearer": {"url": url, "auth": bearer, "methods": method},
        "sink": {"url": f"{server.url}/ok", "default": True},
    }
    flows = {
        f"call-{name}": f"flow: call-{name}\non_complete: true\nsteps:\n"
        f"  - id: call\n    webhook: {name}\n    method: m\n    on_failure: after\n"
        "  - id: after\n    operation: assign\n    set: {copy: '{{ $flow.key.response_raw }}'}\n"
        for name in ("basic", "bearer")
    }
    write_project(root, hooks, flows)
    return root


def flowrunner(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run the real command line in a process of its own: (stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CANARY_")}
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "flowrunner", "--project", str(root), *args],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout, proc.stderr


def found(blobs: dict[str, bytes]) -> list[str]:
    return sorted({place for place, blob in blobs.items() for form in FORMS if form in blob})


@pytest.mark.parametrize("code", [200, 400, 500])
def test_echoed_credentials_never_leave(tmp_path: Path, server: Recorder, code: int) -> None:
    root = echo_project(tmp_path / "project", server, code)
    events = tmp_path / "events.jsonl"
    events.write_text('{"call": {"n": 1}}\n{"call": {"n": 2}}\n')
    out = tmp_path / "records.jsonl"
    runs = {
        "run --json": ("run", "call-basic", "--json"),
        "run text": ("run", "call-bearer"),
        "run --events": ("run", "call-basic", "--events", str(events)),
        "run --events --output": (
            "run", "call-bearer", "--events", str(events), "--output", str(out)
        ),
        "run --events --workers 2": (
            "run", "call-basic", "--events", str(events), "--workers", "2", "--concurrency", "2"
        ),
    }  # fmt: skip
    blobs: dict[str, bytes] = {}
    for name, args in runs.items():
        stdout, stderr = flowrunner(root, *args, env=ENV)
        blobs[name] = (stdout + stderr).encode()
    record: dict[str, Any] = json.loads(blobs["run --json"].decode().splitlines()[0])
    blobs["drain"] = "".join(flowrunner(root, "deliveries", "drain", "--now", env=ENV)).encode()
    listed = json.loads(flowrunner(root, "runs", "list", "--json")[0])
    for run in listed:
        for env in (ENV, None):
            shown = flowrunner(root, "runs", "show", run["execution_id"], env=env)
            blobs[f"runs show {run['execution_id']} env={bool(env)}"] = "".join(shown).encode()
    blobs["deliveries list"] = flowrunner(root, "deliveries", "list", "--json")[0].encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blobs[str(path.relative_to(tmp_path))] = path.read_bytes()
    pushed = [hit for hit in server.hits if hit["path"] == "/ok"]
    for i, hit in enumerate(pushed):
        blobs[f"payload #{i}"] = hit["body"]

    # not vacuous: the receiver got the credentials and echoed them, the pushes went out
    sent = {hit["headers"].get("Authorization") for hit in server.hits if "echo" in hit["path"]}
    basic = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert sent == {basic, f"Bearer {TOKEN}"}
    assert (len(pushed), len(listed)) == (8, 8), blobs["deliveries list"]
    flow = record["keys"]
    assert flow["response_status_code"] == code
    assert "Basic ***" in flow["response_raw"] and "Basic ***" in flow["copy"]
    assert flow.get("seen") == ("Basic ***" if code == 200 else None)
    assert found(blobs) == []
