"""schemathesis (property-based API testing from the OpenAPI document) against a real
``flowrunner serve``: no server error, no answer that breaks the document."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_project

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-token-789"
CONFIG = Path(__file__).parent.parent / ".ci" / "schemathesis.toml"
HELLO = """\
flow: hello
keys: {n: 0}
steps:
  - id: count
    operation: assign
    set:
      n: "{{ $flow.key.n }}"
"""


def _start(root: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    log = root / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowrunner", "--project", str(root), "serve", "--port", "0",
             "--log-format", "json"],
            stderr=sink, env={**os.environ, "API_TOKEN": TOKEN},
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().split("\n")[:-1]:  # whole lines only
            event = json.loads(line)
            if event["event"] == "start":
                return proc, int(event["port"]), log
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(log.read_text())


def test_schemathesis_finds_no_server_error_and_no_broken_answer(tmp_path: Path) -> None:
    write_project(
        tmp_path, {}, {"hello": HELLO},
        serve={"tokens": [{"secret": "API_TOKEN"}], "max_backlog": 1_000_000},
    )  # fmt: skip
    proc, port, log = _start(tmp_path)
    try:
        st = Path(sys.executable).parent / "st"
        result = subprocess.run(
            [str(st), "--config-file", str(CONFIG), "run",
             f"http://127.0.0.1:{port}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
             "--checks", "all", "--max-examples", "25", "--no-color", "--workers", "2"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    output = result.stdout + result.stderr
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-3000:]
    print(f"\nschemathesis: {generated.group(1)} generated requests")
    assert result.returncode == 0, output[-3000:]
    statuses = [json.loads(x).get("status", 0) for x in log.read_text().split("\n") if x]
    assert not [s for s in statuses if isinstance(s, int) and s >= 500]
    assert len(statuses) >= int(generated.group(1))  # every request reached the server
