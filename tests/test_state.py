"""The state stores: user keys, runs, the outbox, several processes on one store.

Tests that take ``store`` or ``place`` run on SQLite and on PostgreSQL (one contract);
the rest are about the SQLite file itself.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowrunner.errors import StateError
from flowrunner.source.model import StatePlace
from flowrunner.state import StateStore, open_recorder, open_store
from flowrunner.state.records import NewPush
from flowrunner.state.sqlite.store import SCHEMA_VERSION, Store

UNIQUE = "UNIQUE|unique"  # how each backend names a duplicate key


def record(execution_id: str, *, started: str = "2026-11-28T10:00:00.000+00:00") -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "flow": "order-status",
        "status": "COMPLETED",
        "error": None,
        "started_at": started,
        "ended_at": started.replace("00.000", "00.120"),
        "duration_ms": 120.0,
        "steps": [],
        "keys": {"attempts": 1},
        "on_complete": {"webhook": "sink", "webhook_id": f"msg_{execution_id}",
                        "status": "pending", "attempts": 0},
    }  # fmt: skip


def push(execution_id: str, *, created: float | None = None) -> NewPush:
    return NewPush(
        id=f"msg_{execution_id}",
        execution_id=execution_id,
        webhook="sink",
        url="http://127.0.0.1:9/hook",
        headers={"X-Team": "ivr"},
        payload=b'{"flow": "order-status"}',
        created_at=time.time() if created is None else created,
    )


@pytest.fixture
def store(place: StatePlace) -> Iterator[StateStore]:
    opened = open_store(place)
    yield opened
    opened.close()


# ---- opening -------------------------------------------------------------------


def test_open_creates_folders_and_wal(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "deep" / "folder" / "state.db")
    assert store.path.is_file()
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert store.integrity_ok()


def test_a_file_that_is_not_sqlite_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StateError) as info:
        Store.open(path)
    message = str(info.value)
    assert str(path) in message and "not a usable flowrunner state file" in message
    assert "\n" not in message


def test_a_corrupted_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(path).close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page after the header
    path.write_bytes(bytes(data))
    (tmp_path / "state.db-wal").unlink(missing_ok=True)
    with pytest.raises(StateError, match="state.db"):
        store = Store.open(path)
        store.user_keys()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError, match="newer flowrunner"):
        Store.open(path)


def test_a_folder_that_cannot_be_made_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot create its folder"):
        Store.open(tmp_path / "file" / "state.db")


# ---- user keys -----------------------------------------------------------------


def test_user_keys_persist_and_seed_does_not_overwrite(place: StatePlace) -> None:
    first = open_store(place)
    first.seed_user_keys({"tier": "gold", "calls": 0, "last": None})
    first.set_user_key("calls", 7)
    first.set_user_key("profile", {"name": "Ana", "tags": ["vip"]})
    first.close()
    second = open_store(place)
    second.seed_user_keys({"tier": "silver", "calls": 0, "new": True})
    assert second.user_keys() == {
        "tier": "gold",
        "calls": 7,
        "last": None,
        "profile": {"name": "Ana", "tags": ["vip"]},
        "new": True,
    }
    second.close()


def test_update_user_key_reads_and_writes_in_one_transaction(store: StateStore) -> None:
    assert store.update_user_key("counter", lambda v: v + 1, default=0) == 1
    assert store.update_user_key("counter", lambda v: v + 1, default=0) == 2
    assert store.user_keys() == {"counter": 2}


def _writer(place: StatePlace, worker: int, count: int, start: Any) -> None:
    start.wait(30)  # both processes create the store and write at the same time
    store = open_store(place)
    for i in range(count):
        store.set_user_key(f"w{worker}_{i}", i)
        store.update_user_key("counter", lambda v: v + 1, default=0)
    store.close()


def test_two_processes_lose_no_writes(place: StatePlace) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_writer, args=(place, w, 200, start)) for w in range(2)]
    for proc in workers:
        proc.start()
    start.set()
    for proc in workers:
        proc.join(60)
        assert proc.exitcode == 0
    store = open_store(place)
    keys = store.user_keys()
    store.close()
    assert keys.pop("counter") == 400
    assert keys == {f"w{w}_{i}": i for w in range(2) for i in range(200)}


# ---- recording ends ------------------------------------------------------------


def test_record_end_stores_run_and_push(store: StateStore) -> None:
    store.record_end(record("e1"), push("e1"))
    store.record_end(record("e2"), None)
    assert [d["id"] for d in store.deliveries()] == ["msg_e1"]
    assert {r["execution_id"] for r in store.runs()} == {"e1", "e2"}
    assert store.run("e2") == record("e2")


def test_record_end_is_all_or_nothing(store: StateStore) -> None:
    store.record_end(record("e1"), push("e1"))
    clash = NewPush(**{**_fields(push("e1")), "execution_id": "e2"})  # same webhook-id
    with pytest.raises(StateError, match=UNIQUE):
        store.record_end(record("e2"), clash)
    assert store.run("e2") is None  # the runs row went with the refused outbox row
    assert len(store.deliveries()) == 1
    with pytest.raises(StateError):
        store.record_ends([(record("e3"), push("e3")), (record("e1"), None)])  # e1 exists
    assert store.run("e3") is None and store.outbox_row("msg_e3") is None


def _fields(p: NewPush) -> dict[str, Any]:
    return {name: getattr(p, name) for name in NewPush.__slots__}


async def test_async_recorder_group_commits(store: StateStore) -> None:
    recorder = open_recorder(store)
    ids = [f"a{i}" for i in range(2000)]
    await asyncio.gather(*(recorder.record_end(record(i), push(i)) for i in ids))
    assert recorder.commits < 50  # thousands of ends, a handful of transactions
    with pytest.raises(StateError, match=UNIQUE):
        await recorder.record_end(record("dup"), push("a1"))
    await recorder.aclose()
    assert len(store.runs(0)) == 2000
    assert store.pending_count() == 2000


async def test_a_recorder_holds_ends_without_a_push_for_company(store: StateStore) -> None:
    """``hold_ends``: on SQLite, ends wait until ``most`` of them wait (or ``wait``
    seconds pass, or ``flush``), then share one transaction; a store whose recorder
    commits in a thread anyway records them as they come."""
    from flowrunner.state.sqlite.store import Store

    recorder = open_recorder(store)
    recorder.hold_ends(30.0, 3)
    first = asyncio.ensure_future(recorder.record_end(record("h1"), None))
    for _ in range(5):
        await asyncio.sleep(0)
    held = not first.done()
    await asyncio.gather(first, *(recorder.record_end(record(i), None) for i in ("h2", "h3")))
    late = asyncio.ensure_future(recorder.record_end(record("h4"), None))
    for _ in range(5):
        await asyncio.sleep(0)
    recorder.flush()
    await asyncio.wait_for(late, 5)
    # an end with a push waits for company too, then for its commit and the log's sync
    pushed = asyncio.ensure_future(recorder.record_end(record("h5"), push("h5")))
    for _ in range(5):
        await asyncio.sleep(0)
    push_held = not pushed.done()
    recorder.flush()
    await asyncio.wait_for(pushed, 5)
    await recorder.aclose()
    assert {r["execution_id"] for r in store.runs(0)} == {"h1", "h2", "h3", "h4", "h5"}
    assert [d["id"] for d in store.deliveries()] == ["msg_h5"]
    if isinstance(store, Store):
        assert held and push_held
        assert recorder.commits == 3  # h1..h3 together, h4 and h5 each when flushed


async def test_async_recorder_isolates_a_bad_item(store: StateStore) -> None:
    store.record_end(record("taken"), None)
    recorder = open_recorder(store)
    results = await asyncio.gather(
        *(recorder.record_end(record(i), push(i)) for i in ("x1", "taken", "x2")),
        return_exceptions=True,
    )
    await recorder.aclose()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StateError)
    assert store.run("x1") and store.run("x2")


async def test_a_push_waits_for_the_log_on_disk_and_an_end_without_one_does_not(
    tmp_path: Path,
) -> None:
    """SQLite: a commit with pushes is written without its fsync, and the log is synced
    off the event loop; the callers of that commit resume only after the sync."""
    from flowrunner.state.sqlite.store import Store

    store = Store.open(tmp_path / "state.db")
    recorder = open_recorder(store)
    await recorder.record_end(record("plain"), None)
    assert recorder.syncs == 0  # nothing waits for the disk without a push
    await recorder.record_end(record("p1"), push("p1"))
    assert recorder.syncs == 1  # resumed after the sync, not before
    await asyncio.gather(*(recorder.record_end(record(f"g{i}"), push(f"g{i}")) for i in range(300)))
    assert 2 <= recorder.syncs <= recorder.commits  # commits made meanwhile share a sync
    await recorder.aclose()
    assert store.pending_count() == 301
    store.close()


async def test_pushes_whose_log_cannot_be_synced_fail_and_stay_pending(tmp_path: Path) -> None:
    from flowrunner.state.sqlite.store import Store

    path = tmp_path / "state.db"
    store = Store.open(path)
    recorder = open_recorder(store)
    await recorder.record_end(record("plain"), None)
    Path(f"{path}-wal").unlink()  # the log cannot be opened to sync it
    with pytest.raises(StateError, match=r"state\.db: cannot sync the state file \("):
        await recorder.record_end(record("p1"), push("p1"))
    await recorder.record_end(record("plain2"), None)  # the recorder goes on
    await recorder.aclose()
    assert recorder.syncs == 0
    assert store.pending_count() == 1  # written, never sent: a later drain sends it
    store.close()


async def test_a_cancelled_sync_fails_its_pushes_instead_of_leaving_them_waiting(
    tmp_path: Path,
) -> None:
    from flowrunner.state.sqlite.recorder import AsyncRecorder
    from flowrunner.state.sqlite.store import Store

    store = Store.open(tmp_path / "state.db")
    recorder = AsyncRecorder(store)
    pushed = asyncio.ensure_future(recorder.record_end(record("p1"), push("p1")))
    while recorder._syncing is None:  # the commit is written and its sync has started
        await asyncio.sleep(0)
    recorder._syncing.cancel()  # as a loop shutting down would
    with pytest.raises(StateError, match="cannot sync the state file"):
        await asyncio.wait_for(pushed, 5)
    await recorder.aclose()
    store.close()


async def test_a_commit_that_breaks_fails_its_callers_instead_of_leaving_them_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a refusal of the store (a StateError) but a bug: the callers of the commit
    hear of it, and the recorder goes on."""
    from flowrunner.state.sqlite.recorder import AsyncRecorder
    from flowrunner.state.sqlite.store import Store

    store = Store.open(tmp_path / "state.db")
    recorder = AsyncRecorder(store)
    recorder.hold_ends(0.005, 2)
    with monkeypatch.context() as patched:
        patched.setattr(store, "record_ends", lambda items, sync=True: 1 / 0)
        ends = [recorder.record_end(record(f"e{i}"), None) for i in range(2)]
        outcomes = await asyncio.wait_for(asyncio.gather(*ends, return_exceptions=True), 5)
    assert [type(o) for o in outcomes] == [ZeroDivisionError, ZeroDivisionError]
    await recorder.record_end(record("e3"), None)
    await recorder.aclose()
    assert store.run("e3") is not None and store.run("e0") is None
    store.close()


# ---- the outbox ----------------------------------------------------------------


def test_a_lease_is_exclusive_until_it_runs_out(place: StatePlace) -> None:
    a, b = open_store(place), open_store(place)
    a.record_end(record("e1"), push("e1"))
    now = time.time()
    assert [r.id for r in a.lease("A", now=now, seconds=10, limit=5)] == ["msg_e1"]
    assert b.lease("B", now=now, seconds=10, limit=5, ignore_schedule=True) == []
    assert not b.mark_delivered("msg_e1", "B", now=now)  # only the owner settles
    taken = b.lease("B", now=now + 11, seconds=10, limit=5)
    assert [r.id for r in taken] == ["msg_e1"]
    assert not a.mark_delivered("msg_e1", "A", now=now + 12)  # A's lease was taken over
    assert b.mark_delivered("msg_e1", "B", now=now + 12)
    assert (b.delivery("msg_e1") or {})["status"] == "delivered"
    a.close()
    b.close()


def test_a_push_recorded_with_its_lease_is_held_from_the_start(place: StatePlace) -> None:
    a, b = open_store(place), open_store(place)
    now = time.time()
    leased = NewPush(**{**_fields(push("e1")), "lease_owner": "A", "lease_until": now + 10})
    a.record_ends([(record("e1"), leased), (record("e2"), push("e2"))])
    taken = b.lease("B", now=now, seconds=10, limit=5, ignore_schedule=True)
    assert [r.id for r in taken] == ["msg_e2"]  # msg_e1 is A's until its lease runs out
    assert a.mark_delivered_many(["msg_e1", "msg_e2"], "A", now=now) == 1  # not e2: B's
    assert (a.delivery("msg_e1") or {})["status"] == "delivered"
    assert b.mark_delivered_many(["msg_e2"], "B", now=now) == 1
    late = NewPush(**{**_fields(push("e3")), "lease_owner": "A", "lease_until": now + 10})
    a.record_end(record("e3"), late)  # A dies before sending it
    assert b.lease("B", now=now + 5, seconds=10, limit=5) == []
    assert [r.id for r in b.lease("B", now=now + 11, seconds=10, limit=5)] == ["msg_e3"]
    a.close()
    b.close()


def test_many_pushes_are_marked_in_one_transaction(store: StateStore) -> None:
    ids = [f"e{i}" for i in range(1200)]  # more than one statement's worth of ids
    store.record_ends([(record(i), push(i)) for i in ids])
    now = time.time()
    assert len(store.lease("A", now=now, seconds=30, limit=2000)) == 1200
    marked = store.mark_delivered_many([f"msg_{i}" for i in ids] + ["msg_unknown"], "A", now=now)
    assert marked == 1200 and store.pending_count() == 0


def test_lease_respects_schedule_and_ids(store: StateStore) -> None:
    now = time.time()
    for name in ("e1", "e2", "e3"):
        store.record_end(record(name), push(name, created=now))
    assert [r.id for r in store.lease("A", now=now, seconds=5, limit=9, ids=["msg_e2"])] == [
        "msg_e2"
    ]
    assert store.mark_retry("msg_e2", "A", now=now, next_attempt_at=now + 100, error="HTTP 500")
    due = store.lease("A", now=now + 1, seconds=5, limit=9)
    assert sorted(r.id for r in due) == ["msg_e1", "msg_e3"]
    for row in due:
        store.mark_retry(row.id, "A", now=now + 1, next_attempt_at=now + 50, error="HTTP 503")
    assert store.lease("A", now=now + 2, seconds=5, limit=9) == []
    assert store.next_due() == pytest.approx(now + 50)
    everything = store.lease("A", now=now + 2, seconds=5, limit=9, ignore_schedule=True)
    assert len(everything) == 3


def test_marks_and_the_deliveries_shape(store: StateStore) -> None:
    now = time.time()
    for name in ("e1", "e2", "e3"):
        store.record_end(record(name), push(name, created=now))
    store.lease("A", now=now, seconds=5, limit=9)
    store.mark_delivered("msg_e1", "A", now=now)
    store.mark_dead("msg_e2", "A", now=now, error="HTTP 410 (not retried)")
    store.mark_blocked("msg_e3", "A", now=now, next_attempt_at=now + 5, error="secret X")
    rows = {d["id"]: d for d in store.deliveries()}
    assert set(rows["msg_e1"]) >= {"id", "execution_id", "webhook", "status", "attempts",
                                   "next_attempt_at", "last_error", "created_at"}  # fmt: skip
    assert rows["msg_e1"]["status"] == "delivered" and rows["msg_e1"]["attempts"] == 1
    assert rows["msg_e1"]["next_attempt_at"] is None
    assert rows["msg_e2"]["status"] == "dead" and rows["msg_e2"]["last_error"].startswith("HTTP")
    assert rows["msg_e3"]["status"] == "pending" and rows["msg_e3"]["attempts"] == 0
    assert rows["msg_e3"]["next_attempt_at"].endswith("+00:00")
    assert [d["id"] for d in store.deliveries(dead_only=True)] == ["msg_e2"]
    assert (store.run("e2") or {})["on_complete"]["status"] == "dead"


def test_retry_and_retry_all_dead(store: StateStore) -> None:
    now = time.time()
    for name in ("e1", "e2", "e3"):
        store.record_end(record(name), push(name, created=now))
    store.lease("A", now=now, seconds=5, limit=9)
    store.mark_dead("msg_e1", "A", now=now, error="HTTP 400 (not retried)")
    store.mark_dead("msg_e2", "A", now=now, error="HTTP 400 (not retried)")
    store.mark_delivered("msg_e3", "A", now=now)
    assert not store.retry("msg_e3")  # delivered stays delivered
    assert not store.retry("nope")
    assert store.retry("msg_e1", now=now + 1)
    row = store.outbox_row("msg_e1")
    assert row and row.status == "pending" and row.attempts == 0
    assert row.next_attempt_at == now + 1
    assert store.retry_all_dead() == 1
    assert store.pending_count() == 2


# ---- runs ----------------------------------------------------------------------


def test_runs_newest_first_with_limit(store: StateStore) -> None:
    for minute in range(5):
        store.record_end(record(f"e{minute}", started=f"2026-11-28T10:0{minute}:00.000+00:00"),
                         None)  # fmt: skip
    listed = store.runs(3)
    assert [r["execution_id"] for r in listed] == ["e4", "e3", "e2"]
    assert listed[0] == {
        "execution_id": "e4",
        "flow": "order-status",
        "status": "COMPLETED",
        "started_at": "2026-11-28T10:04:00.000+00:00",
        "ended_at": "2026-11-28T10:04:00.120+00:00",
        "on_complete_status": None,
    }
    assert len(store.runs(0)) == 5


def test_run_merges_the_current_push_status(store: StateStore) -> None:
    store.record_end(record("e1"), push("e1"))
    now = time.time()
    store.lease("A", now=now, seconds=5, limit=1)
    store.mark_retry("msg_e1", "A", now=now, next_attempt_at=now + 5, error="HTTP 503")
    shown = store.run("e1")
    assert shown is not None
    assert shown["on_complete"] == {"webhook": "sink", "webhook_id": "msg_e1",
                                    "status": "pending", "attempts": 1,
                                    "last_error": "HTTP 503"}  # fmt: skip
    assert store.run("unknown") is None


def test_pruning_keeps_runs_with_pending_pushes(store: StateStore) -> None:
    now = time.time()
    for day in range(1, 7):  # e1 (oldest) .. e6 (newest)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime(now - 86400 * (7 - day)))
        store.record_end(
            record(f"e{day}", started=stamp), push(f"e{day}", created=now) if day <= 3 else None
        )
    store.lease("A", now=now, seconds=5, limit=9, ids=["msg_e1", "msg_e2"])
    store.mark_delivered("msg_e1", "A", now=now)
    store.mark_dead("msg_e2", "A", now=now, error="HTTP 400 (not retried)")
    # older than 3.5 days: e1, e2, e3; e3's push is pending, so it stays
    assert store.prune_runs(older_than=3.5 * 86400, keep=None, now=now) == 2
    assert [r["execution_id"] for r in store.runs(0)] == ["e6", "e5", "e4", "e3"]
    assert store.outbox_row("msg_e1") is None  # delivered: gone with its run
    assert store.outbox_row("msg_e2") is not None  # dead letters stay for retry
    assert store.prune_runs(older_than=None, keep=1) == 2  # e5, e4; e3 still pending
    assert [r["execution_id"] for r in store.runs(0)] == ["e6", "e3"]


def test_an_id_with_a_nul_character_is_simply_unknown(store: StateStore) -> None:
    store.record_end(record("e1"), push("e1"))
    assert store.run("e1\x00") is None
    assert store.outbox_row("msg_e1\x00") is None
    assert store.outbox_rows(["msg_e1", "x\x00"]).keys() == {"msg_e1"}
    assert store.retry("x\x00") is False


@pytest.mark.parametrize(("older_than", "keep"), [(None, 7), (3600.0, None), (3600.0, 30)])
def test_pruning_in_small_batches_deletes_what_one_pass_would(
    tmp_path: Path, older_than: float | None, keep: int | None
) -> None:
    """Runs sharing a start time, pending pushes among the oldest: pruning 4 runs per
    transaction leaves exactly what one transaction for all would."""
    now = time.time()
    left = []
    for batch in (4, 1_000_000):
        store = Store.open(tmp_path / f"state-{batch}.db")
        for i in range(60):
            stamp = time.strftime(
                "%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime(now - 7200 + (i // 3) * 300)
            )  # three runs per start time, the first 24 over an hour old
            store.record_end(
                record(f"e{i:02}", started=stamp), push(f"e{i:02}") if i % 9 == 0 else None
            )
        deleted = store.prune_runs(older_than=older_than, keep=keep, now=now, batch=batch)
        remaining = sorted(r["execution_id"] for r in store.runs(0))
        assert deleted == 60 - len(remaining)
        left.append(remaining)
        store.close()
    assert left[0] == left[1]
    assert {f"e{i:02}" for i in range(0, 60, 9)} <= set(left[0])  # pending pushes stay
    if keep is not None and older_than is None:
        assert len(left[0]) == keep + sum(1 for i in range(0, 53, 9))
