"""The execution queue of the state store: enqueue, claim, renew, finish, release.

The tests that take ``store`` run on SQLite and on PostgreSQL (one contract).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowrunner.source.model import StatePlace
from flowrunner.state import open_store
from flowrunner.state.queue_values import NewRequest, QueuedCall
from flowrunner.state.records import NewPush
from flowrunner.state.sqlite.store import Store


@pytest.fixture
def store(place: StatePlace) -> Iterator[Any]:
    opened: Any = open_store(place)
    yield opened
    opened.close()


def _request(rid: str, n: int, key: str | None = None, fingerprint: str = "f") -> NewRequest:
    calls = tuple(
        QueuedCall(execution_id=f"{rid}-{i}", inputs={"call": {"cli": str(i)}}) for i in range(n)
    )
    return NewRequest(
        request_id=rid,
        flow="hello",
        calls=calls,
        answer=f'{{"request-id":"{rid}"}}',
        idempotency_key=key,
        fingerprint=fingerprint,
    )


def _record(execution_id: str) -> dict[str, object]:
    return {
        "execution_id": execution_id,
        "flow": "hello",
        "status": "COMPLETED",
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T00:00:01+00:00",
    }


def test_enqueue_claim_finish_in_order(store: Any) -> None:
    store.enqueue_many([_request("r1", 3), _request("r2", 2)], now=100.0)
    assert store.queue_counts(now=100.0) == (5, 0)
    first = store.claim("a", now=100.0, seconds=30, limit=4)
    assert [c.execution_id for c in first] == ["r1-0", "r1-1", "r1-2", "r2-0"]
    assert first[0].inputs == {"call": {"cli": "0"}}
    assert store.queue_counts(now=100.0) == (1, 4)
    # a second owner gets only what is left
    assert [c.execution_id for c in store.claim("b", now=100.0, seconds=30, limit=9)] == ["r2-1"]
    store.finish([(_record("r1-0"), None)])
    states = store.execution_states(["r1-0", "r1-1", "nope"], now=100.0)
    assert states["r1-0"]["status"] == "COMPLETED"
    assert states["r1-1"]["status"] == "RUNNING"
    assert "nope" not in states
    assert store.queue_counts(now=100.0) == (0, 4)


def test_expired_leases_are_claimed_again_and_renewal_keeps_them(store: Any) -> None:
    store.enqueue_many([_request("r", 2)], now=0.0)
    store.claim("a", now=0.0, seconds=10, limit=2)
    assert store.claim("b", now=5.0, seconds=10, limit=2) == []
    assert store.renew("a", now=8.0, seconds=10) == 2
    assert store.claim("b", now=12.0, seconds=10, limit=2) == []
    taken = store.claim("b", now=18.5, seconds=10, limit=2)
    assert len(taken) == 2


def test_release_and_requeue_of_dead_owners(store: Any) -> None:
    store.enqueue_many([_request("r", 3)], now=0.0)
    store.claim("a", now=0.0, seconds=100, limit=1)
    store.claim("dead", now=0.0, seconds=100, limit=1)
    assert sorted(store.lease_owners()) == ["a", "dead"]
    assert store.release("a") == 1
    assert store.requeue(now=1.0, dead_owners=["dead"]) == 1
    assert store.queue_counts(now=1.0) == (3, 0)


def test_idempotency_key_replays_and_queues_nothing(store: Any) -> None:
    first = store.enqueue_many([_request("r1", 2, key="k", fingerprint="A")], now=0.0)
    again = store.enqueue_many([_request("r2", 2, key="k", fingerprint="B")], now=1.0)
    assert not first[0].replayed
    assert again[0].replayed and again[0].fingerprint == "A"
    assert again[0].answer == '{"request-id":"r1"}'
    assert store.queue_counts(now=1.0) == (2, 0)
    assert store.idempotent_answer("k") == ("A", '{"request-id":"r1"}')
    assert store.request_answer("r2") is None


def test_finish_twice_keeps_one_record_and_one_push(store: Any) -> None:
    store.enqueue_many([_request("r", 1)], now=0.0)
    push = NewPush(
        id="w1", execution_id="r-0", webhook="crm", url="https://x", headers={},
        payload=b"{}", created_at=0.0,
    )  # fmt: skip
    store.finish([(_record("r-0"), push)])
    store.finish([(_record("r-0"), push)])
    assert len(store.runs(limit=0)) == 1
    assert store.pending_count() == 1


def test_prune_forgets_old_keys_but_not_queued_requests(store: Any) -> None:
    store.enqueue_many([_request("r1", 1, key="k")], now=0.0)
    store.enqueue_many([_request("r2", 1)], now=0.0)
    store.finish([(_record("r2-0"), None)])
    store.prune_requests(keys_before=10.0, requests_before=10.0)
    assert store.idempotent_answer("k") is None
    assert store.request_answer("r1") is not None  # r1-0 is still queued
    assert store.request_answer("r2") is None


def test_a_version_1_file_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE user_keys (name TEXT PRIMARY KEY, value TEXT, updated_at REAL)")
    conn.execute("INSERT INTO user_keys VALUES ('tier', '\"gold\"', 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        assert store.user_keys() == {"tier": "gold"}
        store.enqueue_many([_request("r", 1)], now=0.0)
        assert store.queue_counts(now=0.0) == (1, 0)
    finally:
        store.close()
