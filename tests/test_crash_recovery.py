"""A batch killed with SIGKILL at random moments loses no on-complete push.

Each trial starts ``flowrunner run --events`` in a subprocess against a slow loopback
receiver, kills it with ``kill -9`` part-way, then runs ``flowrunner deliveries drain
--now`` as a new process. Every execution that reached its end in the history must have
its push delivered at least once; the state file must pass ``PRAGMA integrity_check``.
Duplicates (a push received twice because the kill came between the receiver's answer
and the outbox update) are allowed by at-least-once delivery: they are counted and
reported, not hidden.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from conftest import Receiver, write_project

FLOW = """\
flow: crash
on_complete: true
keys: {n: 0}
steps:
  - id: count
    operation: assign
    set:
      n: "{{ $flow.key.n + 1 }}"
  - id: call
    webhook: api
    method: lookup
"""
EVENTS = 1000
TRIALS = 3


def _project(root: Path, receiver: Receiver) -> None:
    webhooks = {
        "api": {
            "url": receiver.at("/api"),
            "body": "json",
            "timeout": 1,
            "methods": {"lookup": {"response": {"status": "status"}}},
        },
        "events": {"url": receiver.at("/events"), "default": True, "timeout": 1},
    }
    write_project(root, webhooks, {"crash": FLOW}, delivery={"retry_schedule": [0.1], "lease": 1})


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(0.02)
    return web.json_response({"status": "ok"})


async def _flowrunner(root: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flowrunner",
        "--project",
        str(root),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def _history(state: Path) -> tuple[set[str], dict[str, str], str]:
    """(execution ids in the history, push id -> status, integrity check result)."""
    with sqlite3.connect(state) as db:
        runs = {row[0] for row in db.execute("SELECT execution_id FROM runs")}
        pushes = dict(db.execute("SELECT execution_id, status FROM outbox").fetchall())
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    return runs, pushes, integrity


async def _trial(tmp: Path, receiver: Receiver, rng: random.Random) -> dict[str, int]:
    _project(tmp, receiver)
    events = tmp / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps({"call": {"cli": f"+1555{i:07d}", "uuid": f"c-{i}"}}) + "\n"
            for i in range(EVENTS)
        )
    )
    batch = await _flowrunner(
        tmp,
        "run",
        "crash",
        "--events",
        str(events),
        "--output",
        str(tmp / "out.jsonl"),
        "--concurrency",
        "16",
    )
    await asyncio.sleep(rng.uniform(0.6, 1.6))  # start-up is ~0.5 s: kill mid-batch
    killed = batch.returncode is None
    if killed:
        batch.send_signal(signal.SIGKILL)
    await batch.communicate()
    drain = await _flowrunner(tmp, "deliveries", "drain", "--now", "--timeout", "30")
    out, err = await drain.communicate()
    assert drain.returncode == 0, (out, err)
    assert b"Traceback" not in out + err
    runs, pushes, integrity = _history(tmp / "state.db")
    assert integrity == "ok"
    received = Counter(r.headers["webhook-id"] for r in receiver.hits("/events"))
    ended = {f"msg_{execution_id}" for execution_id in runs}
    lost = ended - set(received)
    assert not lost, f"{len(lost)} pushes of ended executions never arrived"
    assert all(status == "delivered" for status in pushes.values())
    assert set(pushes) == runs  # every recorded end has its push, and no push lacks a run
    return {
        "killed": int(killed),
        "ended": len(runs),
        "delivered": len(received),
        "duplicates": sum(n - 1 for n in received.values()),
        "lost": len(lost),
    }


@pytest.mark.slow
async def test_kill_9_mid_batch_loses_no_push(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20261128)
    receiver.on("/api", _slow)
    figures = []
    for trial in range(TRIALS):
        receiver.requests.clear()
        folder = tmp_path / f"trial-{trial}"
        folder.mkdir()
        figures.append(await _trial(folder, receiver, rng))
    assert any(f["killed"] for f in figures), "no trial was killed mid-batch"
    assert sum(f["ended"] for f in figures) > 0
    with capsys.disabled():
        for number, f in enumerate(figures, 1):
            print(f"\nkill -9 trial {number}: {f}")
