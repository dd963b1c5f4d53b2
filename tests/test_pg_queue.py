"""The queue of executions on a real PostgreSQL server: claims, leases, idempotency,
``enqueue`` and ``worker``, and workers killed with ``kill -9`` or cut off from the
server mid-run, losing no execution and no push."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Receiver, invoke, write_project
from pg import PgServer, require_driver

require_driver()  # before the store's modules import psycopg

from flowrunner.source.model import PostgresPlace  # noqa: E402
from flowrunner.state.postgres.store import PgStore  # noqa: E402
from flowrunner.state.queue_values import NewRequest, QueuedCall  # noqa: E402

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


def request(ids: list[str], key: str | None = None, flow: str = "crash") -> NewRequest:
    calls = tuple(QueuedCall(execution_id=i, inputs={"call": {"i": i}}) for i in ids)
    return NewRequest(request_id=f"r-{ids[0] if ids else key}", flow=flow, calls=calls,
                      answer=json.dumps({"n": len(ids)}), idempotency_key=key,
                      fingerprint="f1")  # fmt: skip


# ---- the store -------------------------------------------------------------------


def test_claims_from_four_connections_never_overlap(pg_place: PostgresPlace) -> None:
    store = PgStore.open(pg_place, None)
    store.enqueue_many([request([f"e{i}" for i in range(400)])], now=time.time())
    taken: dict[str, list[str]] = {}

    def claimer(name: str) -> None:
        mine = PgStore.open(pg_place, None)
        got: list[str] = []
        while rows := mine.claim(name, now=time.time(), seconds=60, limit=7):
            got += [r.execution_id for r in rows]
        taken[name] = got
        mine.close()

    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [i for got in taken.values() for i in got]
    assert len(everything) == 400 and set(everything) == {f"e{i}" for i in range(400)}
    assert sum(1 for got in taken.values() if got) >= 2  # they really competed
    assert store.queue_counts(now=time.time()) == (0, 400)
    store.close()


def test_a_lease_that_ran_out_is_taken_over_and_one_record_kept(pg_place: PostgresPlace) -> None:
    store = PgStore.open(pg_place, None)
    now = time.time()
    store.enqueue_many([request(["a", "b"])], now=now)
    assert [r.execution_id for r in store.claim("dead", now=now, seconds=5, limit=9)] == ["a", "b"]
    assert store.claim("live", now=now + 1, seconds=5, limit=9) == []  # still held
    assert store.renew("dead", now=now + 1, seconds=5) == 2
    assert store.claim("live", now=now + 5, seconds=5, limit=9) == []  # renewed until +6
    taken = store.claim("live", now=now + 7, seconds=5, limit=9)
    assert [r.execution_id for r in taken] == ["a", "b"]
    assert taken[0].inputs == {"call": {"i": "a"}}
    for status in ("FAILED", "COMPLETED"):  # the dead worker and the live one finish "a"
        rec = {"execution_id": "a", "flow": "crash", "status": status,
               "started_at": "2026-11-28T10:00:00.000+00:00"}  # fmt: skip
        store.finish([(rec, None)])
    assert [r["status"] for r in store.runs(0)] == ["COMPLETED"]  # one record, the last
    assert store.execution_states(["a", "b"], now=now + 8)["b"]["status"] == "RUNNING"
    assert store.release("live") == 1
    assert store.execution_states(["b"], now=now + 8)["b"]["status"] == "QUEUED"
    assert store.requeue(now=now + 8, dead_owners=["nobody"]) == 0
    store.close()


def test_an_idempotency_key_queues_once(pg_place: PostgresPlace) -> None:
    store = PgStore.open(pg_place, None)
    first = store.enqueue_many([request(["x1"], key="k1")], now=time.time())[0]
    again = store.enqueue_many([request(["x2"], key="k1")], now=time.time())[0]
    assert not first.replayed and again.replayed and again.answer == first.answer
    assert store.queue_counts(now=time.time()) == (1, 0)
    assert store.idempotent_answer("k1") == ("f1", first.answer)
    store.close()


# ---- enqueue -----------------------------------------------------------------------


def test_enqueue_prints_each_line_and_reports_bad_ones(
    tmp_path: Path, pg_place: PostgresPlace
) -> None:
    root = write_project(tmp_path, {}, {"bump": "flow: bump\nsteps:\n  - id: x\n    "
                                             "operation: assign\n    set: {a: 1}\n"})  # fmt: skip
    events = tmp_path / "in.jsonl"
    events.write_text('{"call": {"n": 1}}\n\n[1]\n{"keys": {"a": 2}}\n')
    result = invoke(root, "--state", pg_place.url, "enqueue", "bump", "--events", str(events))
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["line"] for line in lines] == [1, 3, 4]
    assert lines[1]["status"] == "INVALID" and lines[1]["error"]["reason"] == "NOT_AN_OBJECT"
    store = PgStore.open(pg_place, None)
    assert store.queue_counts(now=time.time()) == (2, 0)
    ids = {lines[0]["execution_id"], lines[2]["execution_id"]}
    assert set(store.execution_states(list(ids), now=time.time())) == ids
    store.close()
    unknown = invoke(root, "--state", pg_place.url, "enqueue", "nope", "--events", str(events))
    assert unknown.exit_code == 2


def test_enqueue_works_on_a_sqlite_store_too(tmp_path: Path) -> None:
    bump = "flow: bump\nsteps:\n  - id: x\n    operation: assign\n    set: {a: 1}\n"
    root = write_project(tmp_path, {}, {"bump": bump})
    (tmp_path / "in.jsonl").write_text("{}\n{}\n")
    result = invoke(root, "enqueue", "bump", "--events", str(tmp_path / "in.jsonl"))
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


# ---- workers against a live queue ----------------------------------------------------


def _project(root: Path, receiver: Receiver) -> None:
    webhooks = {
        "api": {
            "url": receiver.at("/api"),
            "body": "json",
            "timeout": 2,
            "methods": {"lookup": {"response": {"status": "status"}}},
        },
        "events": {"url": receiver.at("/events"), "default": True, "timeout": 2},
    }
    write_project(root, webhooks, {"crash": FLOW}, workers={"lease": 2},
                  delivery={"retry_schedule": [0.2], "lease": 2})  # fmt: skip


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(0.01)
    return web.json_response({"status": "ok"})


async def _flowrunner(root: Path, place: PostgresPlace, *args: str) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FLOWRUNNER_STATE": place.url,
             "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip


async def _enqueue(root: Path, place: PostgresPlace, count: int) -> set[str]:
    events = root / "events.jsonl"
    events.write_text("".join(json.dumps({"call": {"i": i}}) + "\n" for i in range(count)))
    proc = await _flowrunner(root, place, "enqueue", "crash", "--events", str(events))
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return {json.loads(line)["execution_id"] for line in out.splitlines()}


async def _wait_for(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def _recorded(place: PostgresPlace) -> tuple[int, int, int]:
    """(runs, distinct execution ids among them, executions still queued)."""
    store = PgStore.open(place, None)
    try:
        rows = store.db.read(
            "SELECT count(*), count(DISTINCT execution_id), (SELECT count(*) FROM queue) FROM runs"
        )
        return int(rows[0][0]), int(rows[0][1]), int(rows[0][2])
    finally:
        store.close()


async def _stop(workers: list[Any]) -> None:
    for proc in workers:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, err
            assert b"Traceback" not in err


async def _check_everything_once(
    root: Path, place: PostgresPlace, receiver: Receiver, ids: set[str]
) -> dict[str, int]:
    drain = await _flowrunner(root, place, "deliveries", "drain", "--now", "--timeout", "30")
    out, err = await drain.communicate()
    assert drain.returncode == 0, (out, err)
    store = PgStore.open(place, None)
    runs = {r["execution_id"]: r for r in store.runs(0)}
    pending = store.pending_count()
    store.close()
    assert set(runs) == ids  # every execution id ended, once (the primary key)
    assert all(r["status"] == "COMPLETED" for r in runs.values())
    assert pending == 0
    pushes = Counter(r.headers["webhook-id"] for r in receiver.hits("/events"))
    lost = {f"msg_{i}" for i in ids} - set(pushes)
    assert not lost, f"{len(lost)} pushes lost"
    calls = Counter(r.headers["Idempotency-Key"] for r in receiver.hits("/api"))
    return {
        "executions": len(runs),
        "pushes_lost": len(lost),
        "push_duplicates": sum(n - 1 for n in pushes.values()),
        "executions_run_again": sum(n - 1 for n in calls.values()),
    }


@pytest.mark.slow
async def test_kill_9_of_one_of_three_workers_loses_nothing(
    tmp_path: Path, receiver: Receiver, pg_place: PostgresPlace,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    receiver.on("/api", _slow)
    _project(tmp_path, receiver)
    ids = await _enqueue(tmp_path, pg_place, 2000)
    assert len(ids) == 2000
    workers = [await _flowrunner(tmp_path, pg_place, "worker", "--concurrency", "16")
               for _ in range(3)]  # fmt: skip
    await _wait_for(lambda: _recorded(pg_place)[0] >= 300, 120)
    workers[0].send_signal(signal.SIGKILL)
    await _wait_for(lambda: _recorded(pg_place)[0] >= 2000, 180)
    await _stop(workers)
    assert workers[0].returncode == -signal.SIGKILL
    runs, distinct, queued = _recorded(pg_place)
    assert (runs, distinct, queued) == (2000, 2000, 0)
    figures = await _check_everything_once(tmp_path, pg_place, receiver, ids)
    with capsys.disabled():
        print(f"\nkill -9 of 1 of 3 workers: {figures}")


@pytest.mark.slow
async def test_workers_reconnect_when_their_connections_are_cut(
    tmp_path: Path, receiver: Receiver, pg_place: PostgresPlace, pg_server: PgServer,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    receiver.on("/api", _slow)
    _project(tmp_path, receiver)
    ids = await _enqueue(tmp_path, pg_place, 600)
    workers = [await _flowrunner(tmp_path, pg_place, "worker", "--concurrency", "8")
               for _ in range(2)]  # fmt: skip
    cut = 0
    for target in (100, 300):
        await _wait_for(lambda t=target: _recorded(pg_place)[0] >= t, 120)
        cut += len(pg_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'flowrunner' AND datname = current_database()"
        ))  # fmt: skip
    await _wait_for(lambda: _recorded(pg_place)[0] >= 600, 180)
    assert all(proc.returncode is None for proc in workers)  # no worker gave up
    await _stop(workers)
    assert cut >= 4  # every worker had connections cut, twice
    figures = await _check_everything_once(tmp_path, pg_place, receiver, ids)
    with capsys.disabled():
        print(f"\nconnections cut ({cut} backends): {figures}")


async def test_a_worker_waits_for_its_server_and_stops_cleanly(tmp_path: Path) -> None:
    write_project(tmp_path, {})
    secret = "Pw-of-an-absent-server"
    absent = PostgresPlace(url=f"postgresql://u:{secret}@127.0.0.1:1/x?connect_timeout=1")
    proc = await _flowrunner(tmp_path, absent, "worker")
    assert proc.stderr is not None
    seen = b""
    while b"trying again" not in seen:
        seen += await asyncio.wait_for(proc.stderr.readline(), 30)
    assert proc.returncode is None  # still waiting, not exited
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert secret.encode() not in seen + err and b"Traceback" not in seen + err


def test_a_worker_without_a_secret_of_its_flows_does_not_start(
    tmp_path: Path, pg_place: PostgresPlace
) -> None:
    auth = {"bearer": {"token": {"secret": "API_KEY"}}}
    hooks = {"api": {"url": "http://127.0.0.1:9/x", "auth": auth, "methods": {"m": {}}}}
    flow = "flow: f\nsteps:\n  - id: s\n    webhook: api\n    method: m\n"
    root = write_project(tmp_path, hooks, {"f": flow})
    result = invoke(root, "--state", pg_place.url, "worker")
    assert result.exit_code == 2 and "API_KEY" in result.output
    assert "Traceback" not in result.output
