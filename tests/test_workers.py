"""``run --events --workers N``: one batch spread over worker processes.

What only a batch over workers has. (What a user sees of any batch, with and without
workers alike, is in ``test_batch.py``: records, order, stdin, history, pushes, dry
runs, interrupts.) The real CLI runs in a subprocess against a real loopback sink and a
real state file: the concurrency shared between the workers, fewer lines than workers,
a byte-order mark after the first line, a flow key that merely looks like a push, a
worker killed mid-batch, the usage errors, and how ``--concurrency`` is split
(:func:`flowrunner.batch.workers.shares`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# the sink fixture is imported from test_batch, then requested by name as a parameter
# ruff: noqa: F811
from test_batch import (  # noqa: F401
    Sink,
    event,
    flowrunner,
    free_port,
    project,
    sink,
    start_batch,
)

from flowrunner.batch.workers import shares

SUMMARY = re.compile(
    r"(\d+) executions: (\d+) completed, (\d+) failed, (\d+) invalid"
    r"(?:, (\d+) interrupted)?, (\d+) pushes pending"
)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an output file, which must end with a whole line."""
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def summary_counts(stderr: str) -> dict[str, int]:
    """The counts of the summary line (exactly one) on stderr."""
    found = SUMMARY.findall(stderr)
    assert len(found) == 1, stderr
    total, completed, failed, invalid, interrupted, pending = found[0]
    return {
        "total": int(total),
        "completed": int(completed),
        "failed": int(failed),
        "invalid": int(invalid),
        "interrupted": int(interrupted or 0),
        "pending": int(pending),
    }


def children(pid: int) -> list[int]:
    """The process ids of the children of ``pid`` (Linux)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:  # the process has ended
        return []
    return [int(child) for child in text.split()]


def worker_with_share(parent: int, share: int) -> int | None:
    """The child of ``parent`` running a worker with ``--concurrency share``, once it has
    started the worker program (a child's command line is its parent's until then)."""
    for child in children(parent):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
        except FileNotFoundError:
            continue
        if "--worker" in argv and argv[-3:-1] == ["--concurrency", str(share)]:
            return child
    return None


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


# ---- records ----------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "concurrency"), [(2, 4), (3, 16)])
async def test_concurrency_bound_across_workers(
    tmp_path: Path, sink: tuple[Sink, int], workers: int, concurrency: int
) -> None:
    state, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(
        b"".join(event(f"+{i}", delay=0.01) for i in range(120))
    )
    done = await flowrunner(
        root,
        "--events", "events.jsonl", "--no-on-complete",
        "--concurrency", str(concurrency), "--workers", str(workers),
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert [r["line"] for r in done.records] == list(range(1, 121))
    assert state.requests == 120
    assert 2 <= state.max_in_flight <= concurrency


async def test_fewer_lines_than_workers(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    state, port = sink
    root = project(tmp_path, port)
    one = await flowrunner(
        root, "--events", "-", "--no-on-complete", "--workers", "4", stdin=event("+1")
    )
    empty = await flowrunner(root, "--events", "-", "--no-on-complete", "--workers", "3", stdin=b"")

    assert one.code == 0, one.stderr
    assert [(r["line"], r["keys"]["caller"]) for r in one.records] == [(1, "+1")]
    assert "1 executions: 1 completed, 0 failed, 0 invalid, 0 pushes pending;" in one.stderr
    assert (empty.code, empty.records) == (0, []), empty.stderr
    assert "0 executions: 0 completed, 0 failed, 0 invalid, 0 pushes pending;" in empty.stderr
    assert state.requests == 1


async def test_a_byte_order_mark_is_skipped_at_the_start_of_the_input_only(
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    _, port = sink
    root = project(tmp_path, port)
    bom = b"\xef\xbb\xbf"
    data = bom + event("+1") + bom + event("+2") + bom + event("+3")
    done = await flowrunner(root, "--events", "-", "--no-on-complete", "--workers", "2", stdin=data)
    outcomes = [(r["line"], r["status"], (r["error"] or {}).get("reason")) for r in done.records]
    # as without --workers: line 1 runs, a BOM anywhere else makes the line invalid JSON
    assert outcomes == [
        (1, "COMPLETED", None),
        (2, "INVALID", "INVALID_JSON"),
        (3, "INVALID", "INVALID_JSON"),
    ]
    assert done.code == 1


async def test_a_flow_key_named_on_complete_is_not_counted_as_a_push(
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    _, port = sink
    root = project(tmp_path, port)
    data = b'{"call": {"cli": "+1"}, "keys": {"on_complete": {"status": "dead"}}}\n'
    done = await flowrunner(root, "--events", "-", "--no-on-complete", "--workers", "2", stdin=data)
    assert [r["on_complete"] for r in done.records] == [None]
    assert done.records[0]["keys"]["on_complete"] == {"status": "dead"}
    assert "1 executions: 1 completed, 0 failed, 0 invalid, 0 pushes pending;" in done.stderr
    assert "pushes dead" not in done.stderr
    assert done.code == 0


# ---- a worker that dies ------------------------------------------------------------


async def test_a_killed_worker_fails_its_lines_and_the_batch_goes_on(
    tmp_path: Path, sink: tuple[Sink, int]
) -> None:
    state, port = sink
    root = project(tmp_path, port)
    count = 200
    # --concurrency 5 gives worker 1 three slots and worker 2 two; every line takes a
    # while, so each worker always has lines in hand (the window holds 20)
    (tmp_path / "events.jsonl").write_bytes(
        b"".join(event(f"+{i}", delay=0.02) for i in range(count))
    )
    proc = await start_batch(root, "--concurrency", "5", "--workers", "2", "--no-on-complete")
    await until(lambda: worker_with_share(proc.pid, 2) is not None)
    victim = worker_with_share(proc.pid, 2)
    assert victim is not None
    await until(lambda: state.requests >= 20)
    os.kill(victim, signal.SIGKILL)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    stderr = err.decode()

    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    records = read_records(tmp_path / "out.jsonl")
    assert [r["line"] for r in records] == list(range(1, count + 1))
    failed = [r for r in records if r["status"] == "FAILED"]
    assert failed, stderr
    assert {r["error"]["reason"] for r in failed} == {"WORKER_LOST"}
    assert len(failed) <= 2 * 4  # at most the lines worker 2 had in hand (its window)
    assert {r["status"] for r in records} == {"COMPLETED", "FAILED"}
    # after the kill worker 1 took every line
    after = [r for r in records if r["line"] > failed[-1]["line"]]
    assert len(after) > 100
    assert {r["status"] for r in after} == {"COMPLETED"}
    assert "worker 2 of 2 ended unexpectedly (killed by SIGKILL)" in stderr
    assert f"{len(failed)} lines given to it are recorded FAILED" in stderr
    counts = summary_counts(stderr)
    assert (counts["total"], counts["failed"]) == (count, len(failed))
    assert counts["completed"] == count - len(failed)


async def test_an_interrupt_while_the_workers_start(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    state, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(b"".join(event(f"+{i}") for i in range(50)))
    proc = await start_batch(root, "--no-on-complete", "--workers", "2")
    await until(lambda: len(children(proc.pid)) == 2)  # spawned, still importing
    workers = children(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    records = read_records(tmp_path / "out.jsonl")
    assert [r["line"] for r in records] == list(range(1, len(records) + 1))
    assert {r["status"] for r in records} <= {"COMPLETED", "INTERRUPTED"}
    await until(lambda: not any(running(pid) for pid in workers))  # none is left behind


def running(pid: int) -> bool:
    """Is ``pid`` a live process (not gone, not a zombie)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# ---- options ----------------------------------------------------------------------


async def test_usage_errors(tmp_path: Path) -> None:
    root = project(tmp_path, free_port())
    (tmp_path / "events.jsonl").write_bytes(event("+1"))
    without_events = await flowrunner(root, "--workers", "2")
    too_many = await flowrunner(
        root, "--events", "events.jsonl", "--workers", "5", "--concurrency", "4"
    )

    assert without_events.code == 2
    (message,) = without_events.stderr.splitlines()
    assert "--workers" in message
    assert without_events.records == []
    assert too_many.code == 2
    assert too_many.records == []
    (message,) = too_many.stderr.splitlines()
    assert "--workers (5)" in message
    assert "--concurrency (4)" in message
    for done in (without_events, too_many):
        assert "Traceback" not in done.stderr
    assert not (tmp_path / ".flowrunner").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("two", "--workers: 'two' is not a number of workers or 'auto'"),
        ("0", "--workers: 0 is not in the range 1 to 256"),
        ("257", "--workers: 257 is not in the range 1 to 256"),
        ("-3", "--workers: -3 is not in the range 1 to 256"),
    ],
)
async def test_bad_worker_counts(tmp_path: Path, value: str, message: str) -> None:
    root = project(tmp_path, free_port())
    (tmp_path / "events.jsonl").write_bytes(event("+1"))
    done = await flowrunner(root, "--events", "events.jsonl", "--workers", value)
    assert done.code == 2
    assert done.stderr.splitlines() == [f"flowrunner: {message}"]
    assert done.records == []


async def test_auto_runs_one_worker_per_usable_cpu(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    state, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(b"".join(event(f"+{i}", delay=0.3) for i in range(8)))
    proc = await start_batch(root, "--no-on-complete", "--workers", "auto", "--concurrency", "8")
    cpus = min(len(os.sched_getaffinity(0)), 8)
    expected = cpus if cpus > 1 else 0  # one worker: the batch runs in this process
    seen: set[int] = set()

    def all_started() -> bool:
        seen.update(children(proc.pid))
        return state.requests >= 1 and len(seen) >= expected

    await until(all_started)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert len(seen) == expected
    assert len(read_records(tmp_path / "out.jsonl")) == 8


@pytest.mark.parametrize("workers", [1, 2, 3, 7, 16])
def test_shares(workers: int) -> None:
    for concurrency in range(workers, 200):
        parts = shares(concurrency, workers)
        assert len(parts) == workers
        assert sum(parts) == concurrency
        assert max(parts) - min(parts) <= 1
        assert min(parts) >= 1
    assert shares(5, 2) == [3, 2]
