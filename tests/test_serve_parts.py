"""Parts of ``serve``: log lines (one line per event, nothing a terminal would interpret)
and the lease owners found dead at start."""

from __future__ import annotations

import io
import json

from flowrunner.server.logs import Log


def test_text_log_lines_quote_control_characters() -> None:
    stream = io.StringIO()
    Log("text", stream).event("request", path="/v1/x\x1b[31m\u2028y", status=404)
    line = stream.getvalue()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert "\x1b" not in line and "\u2028" not in line
    assert 'path="/v1/x\\u001b[31m\\u2028y" status=404' in line


def test_json_log_lines_are_one_object_a_line() -> None:
    stream = io.StringIO()
    log = Log("json", stream)
    log.event("execution", execution_id="e1", status="FAILED", reason=None)
    log.event("request", path="/a\nb")
    lines = stream.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 3
    first, second = (json.loads(x) for x in lines[:2])
    assert first["event"] == "execution" and "reason" not in first
    assert second["path"] == "/a\nb"


def test_dead_local_owners() -> None:
    import os
    import socket
    import subprocess
    import sys

    from flowrunner.oncomplete.delivery import dead_local_owners

    host = socket.gethostname()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    gone = f"{host}:{child.stdout.strip()}:abc"
    alive = f"{host}:{os.getppid()}:abc"
    mine = f"{host}:{os.getpid()}:old"
    other_host = f"{host}-elsewhere:{child.stdout.strip()}:abc"
    owners = [gone, alive, mine, other_host, "not-an-owner"]
    assert dead_local_owners(owners) == [gone, mine]
