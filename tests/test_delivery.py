"""The outbox sender against real loopback receivers and a real state file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from flowrunner.document import Document
from flowrunner.net.request import HttpResponse
from flowrunner.net.transport import open_client
from flowrunner.oncomplete.delivery import Deliverer, judge, merge_headers, retry_after
from flowrunner.secrets import Secrets
from flowrunner.source.model import (
    BearerAuth,
    DeliveryPolicy,
    HttpPolicy,
    Project,
    SecretRef,
    StatePlace,
    Webhook,
)
from flowrunner.state import StateStore, open_store
from flowrunner.state.records import NewPush

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

SIGNING_KEY = b"an independent key of 32 bytes!!"
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
TOKEN = "tok-7f3a-very-secret"
ENV = {"HOOK_KEY": SIGNING_SECRET, "SINK_TOKEN": TOKEN}
FAST = (0.05, 0.05, 0.05)


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Sink:
    """A receiver answering a script of statuses (then 200), counting overlaps per id."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    on_request: Any = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        self.in_flight[msg_id] += 1
        self.max_in_flight[msg_id] = max(self.max_in_flight[msg_id], self.in_flight[msg_id])
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.received.append(Received(time.time(), dict(request.headers), body))
            if self.on_request is not None:
                self.on_request()
            status, headers = self.script.pop(0) if self.script else (200, {})
            return web.Response(status=status, headers=headers, text="ok")
        finally:
            self.in_flight[msg_id] -= 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_project(
    tmp_path: Path,
    url: str,
    *,
    schedule: tuple[float, ...] = FAST,
    lease: float = 5.0,
    http: HttpPolicy | None = None,
    webhooks: bool = True,
) -> Project:
    hook = Webhook(
        name="sink",
        url=url,
        default=True,
        timeout=2.0,
        auth=BearerAuth(token=SecretRef(name="SINK_TOKEN")),
        headers={"X-Team": "ivr"},
        signing_secret=SecretRef(name="HOOK_KEY"),
    )
    return Project(
        root=tmp_path,
        source=Document("flowrunner.yaml", {}),
        http=http or HttpPolicy(allow_http=True, allowlist=("127.0.0.1",)),
        webhooks={"sink": hook} if webhooks else {},
        state=tmp_path / "state.db",
        delivery=DeliveryPolicy(retry_schedule=schedule, lease=lease),
    )


def record_pushes(store: StateStore, url: str, count: int, prefix: str = "e") -> list[NewPush]:
    pushes = []
    for i in range(count):
        execution_id = f"{prefix}{i}"
        payload = json.dumps({"phonon-uuid": execution_id, "flow": "f", "n": i}).encode()
        pushes.append(
            NewPush(
                id=f"msg_{execution_id}",
                execution_id=execution_id,
                webhook="sink",
                url=url,
                headers={"X-Team": "ivr"},
                payload=payload,
                created_at=time.time(),
            )
        )
    store.record_ends(
        [({"execution_id": p.execution_id, "flow": "f", "status": "COMPLETED"}, p) for p in pushes]
    )
    return pushes


def signature_ok(headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written here independently of flowrunner.net.signing."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SIGNING_KEY, signed, hashlib.sha256).digest()).decode()
    offered = headers["webhook-signature"].split()
    return any(hmac.compare_digest(sig, f"v1,{expected}") for sig in offered)


@pytest.fixture
def store(place: StatePlace) -> Iterator[StateStore]:
    opened = open_store(place)  # on SQLite and on PostgreSQL
    yield opened
    opened.close()


async def serve(aiohttp_server: Any, sink: Sink, port: int | None = None) -> str:
    server = (
        await aiohttp_server(sink.app(), port=port) if port else await aiohttp_server(sink.app())
    )
    return str(server.make_url("/hook"))


class SkewedClock:
    """Real time plus a skew the test moves forward (fresh timestamps per attempt)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


# ---- retries and signatures ----------------------------------------------------


async def test_three_failures_then_delivered_once(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    clock = SkewedClock()
    sink = Sink(script=[(500, {})] * 3)
    sink.on_request = lambda: setattr(clock, "skew", clock.skew + 100)
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url)
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        deliverer = Deliverer(store, client, project, Secrets(ENV), clock=clock)
        stats = await deliverer.drain(timeout=1000)
    assert (stats.attempts, stats.delivered, stats.retried, stats.dead) == (4, 1, 3, 0)
    assert stats.pending == 0
    row = store.outbox_row(pushed.id)
    assert row and row.status == "delivered" and row.attempts == 4 and row.last_error is None
    assert {r.headers["webhook-id"] for r in sink.received} == {pushed.id}
    stamps = [int(r.headers["webhook-timestamp"]) for r in sink.received]
    assert len(set(stamps)) == 4  # fresh on every attempt
    for got in sink.received:
        assert got.body == pushed.payload
        assert signature_ok(got.headers, got.body)
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["User-Agent"].startswith("flowrunner/")
        assert got.headers["X-Team"] == "ivr"
        assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    stale = dict(sink.received[1].headers, **{"webhook-timestamp": str(stamps[0])})
    assert not signature_ok(stale, pushed.payload)  # a signature is bound to its timestamp


async def test_schedule_spent_means_dead(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    sink = Sink(script=[(503, {})] * 10)
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url, schedule=(0.05, 0.05))
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        stats = await Deliverer(store, client, project, Secrets(ENV)).drain(timeout=5)
    assert (stats.attempts, stats.dead, stats.pending) == (3, 1, 0)
    row = store.outbox_row(pushed.id)
    assert row and row.status == "dead"
    assert row.last_error == "HTTP 503; gave up after 3 attempts"
    dumped = json.dumps(store.deliveries())
    assert TOKEN not in dumped and SIGNING_SECRET not in dumped and '"n": 0' not in dumped


@pytest.mark.parametrize("status", [410, 400, 404, 302])
async def test_other_statuses_are_dead_at_once(
    aiohttp_server: Any, store: StateStore, tmp_path: Path, status: int
) -> None:
    headers = {"Location": "http://127.0.0.1:1/"} if status == 302 else {}
    sink = Sink(script=[(status, headers)])
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url)
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        stats = await Deliverer(store, client, project, Secrets(ENV)).drain(timeout=5)
    assert (stats.attempts, stats.dead, stats.pending) == (1, 1, 0)
    assert len(sink.received) == 1
    row = store.outbox_row(pushed.id)
    assert row and row.status == "dead" and row.attempts == 1
    assert row.last_error == f"HTTP {status} (not retried)"


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_retry_after_is_the_earliest_next_attempt(
    aiohttp_server: Any, store: StateStore, tmp_path: Path, form: str
) -> None:
    value = "2" if form == "seconds" else formatdate(time.time() + 3, usegmt=True)
    sink = Sink(script=[(429, {"Retry-After": value})])
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url, schedule=(0.05, 4.0))  # Retry-After is honoured
    # up to the longest wait of the schedule
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        deliverer = Deliverer(store, client, project, Secrets(ENV))
        before = time.time()
        first = await deliverer.deliver_due()
        again = await deliverer.deliver_due()
    assert (first.attempts, first.retried, first.pending) == (1, 1, 1)
    row = store.outbox_row(pushed.id)
    assert row and row.status == "pending" and row.last_error == "HTTP 429"
    assert row.next_attempt_at >= before + 2
    assert again.attempts == 0 and len(sink.received) == 1  # nothing sent before then


async def test_jitter_stays_within_twenty_percent(store: StateStore, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens
    project = make_project(tmp_path, url, schedule=(100.0,))
    pushes = record_pushes(store, url, 20)
    async with open_client(project.http) as client:
        deliverer = Deliverer(store, client, project, Secrets(ENV), rng=random.Random(7))
        stats = await deliverer.deliver_due()
    assert (stats.attempts, stats.retried) == (20, 20)
    waits = []
    for pushed in pushes:
        row = store.outbox_row(pushed.id)
        assert row and row.last_attempt_at and row.last_error
        assert row.last_error.startswith("connection error")
        waits.append(row.next_attempt_at - row.last_attempt_at)
    assert all(80 <= w <= 120 for w in waits)
    assert max(waits) - min(waits) > 5  # not all the same: senders do not stampede


# ---- outages and concurrency ----------------------------------------------------


async def test_receiver_outage_loses_nothing(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    project = make_project(tmp_path, url, schedule=(60.0, 60.0))
    pushes = record_pushes(store, url, 200)
    async with open_client(project.http) as client:
        deliverer = Deliverer(store, client, project, Secrets(ENV))
        down = await deliverer.deliver_due()
        assert (down.attempts, down.retried, down.pending, down.dead) == (200, 200, 200, 0)
        sink = Sink()
        await serve(aiohttp_server, sink, port=port)
        up = await deliverer.drain(timeout=10, ignore_schedule=True)
    assert (up.attempts, up.delivered, up.dead, up.pending) == (200, 200, 0, 0)
    got = {r.headers["webhook-id"]: r.body for r in sink.received}
    assert len(sink.received) == 200 and got == {p.id: p.payload for p in pushes}
    assert all(d["status"] == "delivered" and d["attempts"] == 2 for d in store.deliveries())


async def test_two_drains_never_send_a_push_twice_at_once(
    aiohttp_server: Any, tmp_path: Path, place: StatePlace
) -> None:
    sink = Sink(delay=0.02)
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url)
    first, second = open_store(place), open_store(place)
    pushes = record_pushes(first, url, 150)
    async with open_client(project.http) as one, open_client(project.http) as two:
        a = Deliverer(first, one, project, Secrets(ENV), owner="A")
        b = Deliverer(second, two, project, Secrets(ENV), owner="B")
        stats_a, stats_b = await asyncio.gather(a.drain(timeout=10), b.drain(timeout=10))
    assert stats_a.delivered + stats_b.delivered == 150
    assert stats_a.delivered > 0 and stats_b.delivered > 0  # both really took part
    assert max(sink.max_in_flight.values()) == 1
    counts = Counter(r.headers["webhook-id"] for r in sink.received)
    assert set(counts) == {p.id for p in pushes} and set(counts.values()) == {1}
    assert first.pending_count() == 0
    first.close()
    second.close()


async def test_an_expired_lease_is_taken_over(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    sink = Sink()
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url)
    (pushed,) = record_pushes(store, url, 1)
    # a process that died 100 s ago holding a 1 s lease
    assert store.lease(
        "dead-process", now=time.time() - 100, seconds=1, limit=1, ignore_schedule=True
    )
    async with open_client(project.http) as client:
        stats = await Deliverer(store, client, project, Secrets(ENV), owner="B").deliver_due()
    assert (stats.attempts, stats.delivered) == (1, 1)
    assert [r.headers["webhook-id"] for r in sink.received] == [pushed.id]


async def test_a_live_lease_is_respected(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    sink = Sink()
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url)
    record_pushes(store, url, 1)
    assert store.lease("A", now=time.time(), seconds=60, limit=1)
    async with open_client(project.http) as client:
        deliverer = Deliverer(store, client, project, Secrets(ENV), owner="B")
        started = time.monotonic()
        stats = await deliverer.drain(timeout=0.5, ignore_schedule=True)
    assert (stats.attempts, stats.pending) == (0, 1)
    assert time.monotonic() - started < 2 and sink.received == []


async def test_drain_stops_when_the_next_attempt_is_past_the_timeout(
    store: StateStore, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    project = make_project(tmp_path, url, schedule=(30.0,))
    record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        started = time.monotonic()
        stats = await Deliverer(store, client, project, Secrets(ENV)).drain(timeout=0.5)
    assert (stats.attempts, stats.retried, stats.pending) == (1, 1, 1)
    assert time.monotonic() - started < 2


# ---- configuration problems -----------------------------------------------------


async def test_a_missing_secret_keeps_the_push_pending(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    sink = Sink()
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url)
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        secrets = Secrets({"SINK_TOKEN": TOKEN})  # HOOK_KEY is missing
        stats = await Deliverer(store, client, project, secrets).deliver_due()
    assert (stats.attempts, stats.blocked, stats.pending) == (0, 1, 1)
    row = store.outbox_row(pushed.id)
    assert row and row.status == "pending" and row.attempts == 0
    assert row.last_error and "HOOK_KEY" in row.last_error and TOKEN not in row.last_error
    assert row.next_attempt_at > time.time() and sink.received == []


async def test_a_removed_webhook_is_dead(store: StateStore, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/hook"
    project = make_project(tmp_path, url, webhooks=False)
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        stats = await Deliverer(store, client, project, Secrets(ENV)).deliver_due()
    assert stats.dead == 1
    row = store.outbox_row(pushed.id)
    assert row and row.status == "dead"
    assert row.last_error == "webhook 'sink' is no longer defined in the project"


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (HttpPolicy(enabled=False, allow_http=True, allowlist=("127.0.0.1",)), "HTTP disabled"),
        (HttpPolicy(allow_http=True, allowlist=("192.0.2.1",)), "refused by the egress policy"),
    ],
)
async def test_refused_by_policy_is_retried(
    aiohttp_server: Any, store: StateStore, tmp_path: Path, policy: HttpPolicy, error: str
) -> None:
    sink = Sink()
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url, http=policy, schedule=(60.0,))
    (pushed,) = record_pushes(store, url, 1)
    async with open_client(project.http) as client:
        stats = await Deliverer(store, client, project, Secrets(ENV)).deliver_due()
    assert (stats.attempts, stats.retried, stats.pending) == (1, 1, 1)
    row = store.outbox_row(pushed.id)
    assert row and row.last_error and row.last_error.startswith(error)
    assert sink.received == []


# ---- send_now and the pieces ----------------------------------------------------


async def test_send_now_reports_each_push(
    aiohttp_server: Any, store: StateStore, tmp_path: Path
) -> None:
    sink = Sink(script=[(200, {}), (502, {})], delay=0.01)
    url = await serve(aiohttp_server, sink)
    project = make_project(tmp_path, url, schedule=(60.0,))
    pushes = record_pushes(store, url, 2)
    async with open_client(project.http) as client:
        deliverer = Deliverer(store, client, project, Secrets(ENV))
        result = await deliverer.send_now([p.id for p in pushes] + ["unknown"])
    assert set(result) == {p.id for p in pushes}
    assert sorted((r["status"], r["attempts"]) for r in result.values()) == [
        ("delivered", 1),
        ("pending", 1),
    ]
    assert result[pushes[0].id]["webhook"] == "sink"
    assert result[pushes[0].id]["webhook_id"] == pushes[0].id


def test_judge_and_retry_after() -> None:
    def answer(status: int | None, failure: Any = None, headers: Any = None) -> HttpResponse:
        return HttpResponse(
            status=status, body=b"", headers=headers or {}, duration=0.1, failure=failure
        )

    assert judge(answer(204), 0).kind == "delivered"
    assert judge(answer(200, "too_large"), 0).kind == "delivered"  # it was received
    assert judge(answer(None, "timeout"), 0).kind == "retry"
    assert judge(answer(503, headers={"retry-after": "7"}), 100).not_before == 107
    assert judge(answer(408), 0).kind == "dead"
    assert retry_after({"Retry-After": "soon"}, 0) is None
    assert retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 0) == 1792567680.0
    assert merge_headers({"content-type": "text/plain", "X": "1"}, {"Content-Type": "a/b"}) == {
        "X": "1",
        "Content-Type": "a/b",
    }
