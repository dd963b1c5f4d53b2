"""``run --events``: the real CLI in a subprocess against a real loopback sink and a real
state file; the line checks, the reader and the progress text in process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from flowrunner.batch import lines as events
from flowrunner.batch.lines import MAX_LINE, Chunk, Invalid, LineReader, Oversize, parse_line
from flowrunner.batch.local import time_ordered_id
from flowrunner.batch.progress import Counts, bar_text, summary_line
from flowrunner.jsoncodec import dumps, loads
from flowrunner.runner import REFRESH, CachedUserKeys
from flowrunner.state.sqlite.store import Store

PROJECT = """\
version: 1
http:
  allow_http: true
  allowlist: [127.0.0.1]
webhooks:
  api:
    url: http://127.0.0.1:{port}/api
    body: json
    timeout: 10
    methods:
      lookup:
        response:
          answer: status
  events:
    url: http://127.0.0.1:{push_port}/events
    default: true
    timeout: 2
    methods: {{}}
user_keys:
  count: 0
state: .flowrunner/state.db
delivery:
  retry_schedule: [600]
"""

FLOW = """\
flow: probe
on_complete: true
keys:
  caller: null
steps:
  - id: note
    operation: assign
    set:
      caller: $call.cli
  - id: ask
    webhook: api
    method: lookup
"""

COUNTER = """\
flow: counter
keys: {}
steps:
  - id: bump
    operation: assign
    set:
      $user.key.count: "{{ $user.key.count + 1 }}"
      seen: $user.key.count
"""


@dataclass
class Sink:
    """Answers ``{"status": "ok"}`` after ``call.delay`` seconds with ``call.status``;
    counts requests and the most it ever had in flight at once."""

    requests: int = 0
    pushes: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def api(self, request: web.Request) -> web.Response:
        call = (await request.json()).get("call", {})
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(float(call.get("delay", 0)))
        finally:
            self.in_flight -= 1
        self.calls.append(call)
        return web.json_response({"status": "ok"}, status=int(call.get("status", 200)))

    async def events(self, request: web.Request) -> web.Response:
        await request.read()
        self.pushes += 1
        return web.json_response({})


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    state = Sink()
    app = web.Application()
    app.router.add_post("/api", state.api)
    app.router.add_post("/events", state.events)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, port
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project(root: Path, port: int, push_port: int | None = None) -> Path:
    (root / "flowrunner.yaml").write_text(PROJECT.format(port=port, push_port=push_port or port))
    (root / "flows").mkdir()
    (root / "flows" / "probe.yaml").write_text(FLOW)
    (root / "flows" / "counter.yaml").write_text(COUNTER)
    return root


def event(cli: str, **call: Any) -> bytes:
    return json.dumps({"call": {"cli": cli, **call}}).encode() + b"\n"


@dataclass
class Done:
    code: int
    records: list[dict[str, Any]]
    stderr: str


async def flowrunner(
    root: Path, *args: str, stdin: bytes | None = None, flow: str = "probe"
) -> Done:
    """Run ``flowrunner run FLOW --events ...`` in a subprocess; records from stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), "run", flow, *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=root,
    )  # fmt: skip
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return Done(proc.returncode, [json.loads(line) for line in out.splitlines()], err.decode())


# ---- through the CLI ---------------------------------------------------------------

# the same batch in one process and spread over two worker processes (--workers 2):
# what a user sees must not differ
WORKERS = pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "2-workers"])


@WORKERS
async def test_every_line_gets_a_record_in_order(
    tmp_path: Path, sink: tuple[Sink, int], workers: str
) -> None:
    state, port = sink
    root = project(tmp_path, port)
    lines = [
        event("+1000"),
        b"not json\n",
        b"[1, 2]\n",
        b'{"call": "+1555"}\n',
        b'{"call": {"cli": "\xff\xfe"}}\n',
        b"\n",
        b'{"call": {"cli": "' + b"x" * (MAX_LINE + 10) + b'"}}\n',
        b'{"calls": {}}\n',
        b'{"keys": {"bad name": 1}}\n',
        event("+1009"),
        b'{"call": {"cli": "+1010"}}',  # the last line may lack its newline
    ]
    (tmp_path / "events.jsonl").write_bytes(b"".join(lines))
    done = await flowrunner(
        root, "--events", "events.jsonl", "--no-on-complete", "--workers", workers
    )

    assert done.code == 1  # invalid lines
    assert [r["line"] for r in done.records] == list(range(1, 12))
    reasons = {r["line"]: r["error"]["reason"] for r in done.records if r["status"] == "INVALID"}
    assert reasons == {
        2: "INVALID_JSON",
        3: "NOT_AN_OBJECT",
        4: "WRONG_TYPE",
        5: "INVALID_UTF8",
        6: "EMPTY_LINE",
        7: "LINE_TOO_LONG",
        8: "UNKNOWN_MEMBER",
        9: "INVALID_NAME",
    }
    ran = [r for r in done.records if r["status"] != "INVALID"]
    assert [(r["line"], r["status"], r["keys"]["caller"]) for r in ran] == [
        (1, "COMPLETED", "+1000"),
        (10, "COMPLETED", "+1009"),
        (11, "COMPLETED", "+1010"),
    ]
    assert all(len(json.dumps(r)) < 300 for r in done.records if r["status"] == "INVALID")
    assert state.requests == 3
    assert "11 executions: 3 completed, 0 failed, 8 invalid, 0 pushes pending;" in done.stderr


@WORKERS
async def test_records_keep_input_order_when_executions_finish_out_of_order(
    tmp_path: Path, sink: tuple[Sink, int], workers: str
) -> None:
    state, port = sink
    root = project(tmp_path, port)
    count = 60
    # early lines answer slowest: completion order is roughly the reverse of input order
    data = b"".join(event(f"+{i}", delay=0.002 * (count - i) * (i % 3 == 0)) for i in range(count))
    (tmp_path / "events.jsonl").write_bytes(data)
    done = await flowrunner(
        root,
        "--events",
        "events.jsonl",
        "--no-on-complete",
        "--concurrency",
        "8",
        "--workers",
        workers,
    )
    assert done.code == 0, done.stderr
    assert [r["line"] for r in done.records] == list(range(1, count + 1))
    assert [r["keys"]["caller"] for r in done.records] == [f"+{i}" for i in range(count)]
    assert [c["cli"] for c in state.calls] != [f"+{i}" for i in range(count)]  # out of order


@pytest.mark.parametrize("concurrency", [4, 16])
async def test_concurrency_bound(tmp_path: Path, sink: tuple[Sink, int], concurrency: int) -> None:
    state, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(
        b"".join(event(f"+{i}", delay=0.01) for i in range(120))
    )
    done = await flowrunner(
        root, "--events", "events.jsonl", "--no-on-complete", "--concurrency", str(concurrency)
    )
    assert done.code == 0, done.stderr
    assert len(done.records) == 120
    assert 1 <= state.max_in_flight <= concurrency


@WORKERS
async def test_stdin_input(tmp_path: Path, sink: tuple[Sink, int], workers: str) -> None:
    _, port = sink
    root = project(tmp_path, port)
    data = b"".join(event(f"+{i}") for i in range(25))
    done = await flowrunner(
        root, "--events", "-", "--no-on-complete", "--workers", workers, stdin=data
    )
    assert done.code == 0, done.stderr
    assert [r["keys"]["caller"] for r in done.records] == [f"+{i}" for i in range(25)]


@WORKERS
async def test_output_file_and_history(
    tmp_path: Path, sink: tuple[Sink, int], workers: str
) -> None:
    _, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(b"".join(event(f"+{i}") for i in range(30)))
    done = await flowrunner(
        root,
        "--events",
        "events.jsonl",
        "--no-on-complete",
        "--output",
        "out.jsonl",
        "--workers",
        workers,
    )
    assert (done.code, done.records) == (0, [])
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, 31))
    with sqlite3.connect(tmp_path / ".flowrunner" / "state.db") as db:
        stored = dict(db.execute("SELECT execution_id, record FROM runs").fetchall())
    assert set(stored) == {r["execution_id"] for r in records}
    first = records[0]
    del first["line"]
    assert json.loads(stored[first["execution_id"]]) == first
    assert uuid.UUID(first["execution_id"]).version == 7


async def test_exit_0_and_1(tmp_path: Path, sink: tuple[Sink, int]) -> None:
    _, port = sink
    root = project(tmp_path, port)
    (tmp_path / "good.jsonl").write_bytes(event("+1") + event("+2"))
    (tmp_path / "bad.jsonl").write_bytes(event("+1") + event("+2", status=500))
    good = await flowrunner(root, "--events", "good.jsonl", "--no-on-complete")
    bad = await flowrunner(root, "--events", "bad.jsonl", "--no-on-complete")
    assert good.code == 0, good.stderr
    assert bad.code == 1
    assert [r["status"] for r in bad.records] == ["COMPLETED", "FAILED"]
    assert bad.records[1]["error"]["reason"] == "SERVER_ERROR"
    assert "2 executions: 1 completed, 1 failed, 0 invalid, 0 pushes pending;" in bad.stderr


@pytest.mark.parametrize("concurrency", ["1", "8"])
@pytest.mark.parametrize("push", [False, True], ids=["no-push", "push"])
async def test_an_end_the_store_refuses_gets_a_state_error_record(
    tmp_path: Path, sink: tuple[Sink, int], concurrency: str, push: bool
) -> None:
    """The state file refuses one execution's record (a trigger raises, as a full disk
    would fail the insert): that line's record says STATE_ERROR, the neighbours of its
    group commit are recorded, and every record is written in input order, whether the
    end is recorded while the worker runs its next execution (no push) or not."""
    state, port = sink
    root = project(tmp_path, port)
    assert (await flowrunner(root, "--events", "-", stdin=b"")).code == 0  # makes the file
    with sqlite3.connect(tmp_path / ".flowrunner" / "state.db") as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.record LIKE '%+666%' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    data = b"".join(event(f"+{i}") for i in range(660, 672))
    extra = [] if push else ["--no-on-complete"]
    done = await flowrunner(root, "--events", "-", "--concurrency", concurrency, *extra, stdin=data)

    assert done.code == 1, done.stderr
    assert [r["line"] for r in done.records] == list(range(1, 13))
    failed = [r for r in done.records if r["status"] == "FAILED"]
    assert [(r["line"], r["error"]["reason"]) for r in failed] == [(7, "STATE_ERROR")]
    assert "refused by the test" in failed[0]["error"]["message"]
    stored = sqlite3.connect(tmp_path / ".flowrunner" / "state.db").execute(
        "SELECT count(*) FROM runs"
    )
    assert stored.fetchone()[0] == 11
    assert state.requests == 12
    assert state.pushes == (11 if push else 0)


@WORKERS
async def test_pushes_delivered_or_pending(
    tmp_path: Path, sink: tuple[Sink, int], workers: str
) -> None:
    state, port = sink
    (tmp_path / "up").mkdir()
    (tmp_path / "down").mkdir()
    up = project(tmp_path / "up", port)
    down = project(tmp_path / "down", port, push_port=free_port())
    data = b"".join(event(f"+{i}") for i in range(5))
    delivered = await flowrunner(up, "--events", "-", "--workers", workers, stdin=data)
    pending = await flowrunner(down, "--events", "-", "--workers", workers, stdin=data)

    assert delivered.code == 0, delivered.stderr
    assert {r["on_complete"]["status"] for r in delivered.records} == {"delivered"}
    assert state.pushes == 5
    assert pending.code == 75
    assert {r["on_complete"]["status"] for r in pending.records} == {"pending"}
    assert "5 pushes pending" in pending.stderr
    assert "deliveries drain" in pending.stderr


@WORKERS
async def test_dry_run_sends_nothing(tmp_path: Path, sink: tuple[Sink, int], workers: str) -> None:
    state, port = sink
    root = project(tmp_path, port)
    data = event("+1") + event("+2")
    done = await flowrunner(root, "--events", "-", "--dry-run", "--workers", workers, stdin=data)
    assert done.code == 0, done.stderr
    assert [r["status"] for r in done.records] == ["COMPLETED", "COMPLETED"]
    assert done.records[0]["steps"][1]["request"]["url"] == f"http://127.0.0.1:{port}/api"
    assert (state.requests, state.pushes) == (0, 0)
    assert not (tmp_path / ".flowrunner").exists()


async def test_user_key_writes_are_seen_by_later_executions(tmp_path: Path) -> None:
    root = project(tmp_path, free_port())
    done = await flowrunner(
        root, "--events", "-", "--concurrency", "1", flow="counter", stdin=b"{}\n" * 20
    )
    assert done.code == 0, done.stderr
    assert [r["keys"]["seen"] for r in done.records] == list(range(1, 21))
    with sqlite3.connect(tmp_path / ".flowrunner" / "state.db") as db:
        (value,) = db.execute("SELECT value FROM user_keys WHERE name = 'count'").fetchone()
    assert json.loads(value) == 20


async def test_a_dry_run_reads_stored_user_keys_and_writes_none(tmp_path: Path) -> None:
    root = project(tmp_path, free_port())
    real = await flowrunner(root, "--events", "-", "--concurrency", "1", flow="counter",
                            stdin=b"{}\n" * 3)  # fmt: skip
    assert [r["keys"]["seen"] for r in real.records] == [1, 2, 3]
    state = tmp_path / ".flowrunner" / "state.db"
    before = state.read_bytes()

    dry = await flowrunner(root, "--events", "-", "--dry-run", flow="counter", stdin=b"{}\n")
    assert dry.code == 0, dry.stderr
    assert dry.records[0]["keys"]["seen"] == 4  # the stored 3, not the seed 0, plus one
    assert state.read_bytes() == before  # nothing written
    assert sorted(p.name for p in state.parent.iterdir()) == ["state.db"]


async def start_batch(root: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), "run", "probe",
        "--events", "events.jsonl", "--output", "out.jsonl", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=root,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sig", "push"),
    [(signal.SIGINT, "--no-on-complete"), (signal.SIGTERM, "--concurrency=8")],
    ids=["SIGINT", "SIGTERM-with-pushes"],
)
@WORKERS
async def test_interrupt(
    tmp_path: Path, sink: tuple[Sink, int], sig: signal.Signals, push: str, workers: str
) -> None:
    state, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(
        b"".join(event(f"+{i}", delay=0.05) for i in range(5000))
    )
    proc = await start_batch(root, "--concurrency", "8", push, "--workers", workers)
    while state.requests < 40:
        await asyncio.sleep(0.02)
    proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 130
    assert "Traceback" not in err.decode()
    text = (tmp_path / "out.jsonl").read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line parses
    numbers = [r["line"] for r in records]
    assert numbers == list(range(1, len(records) + 1))
    assert 40 <= len(records) < 5000
    statuses = [r["status"] for r in records]
    assert set(statuses) == {"COMPLETED", "INTERRUPTED"}
    interrupted = statuses.count("INTERRUPTED")
    assert f"{len(records)} executions: {statuses.count('COMPLETED')} completed, " in err.decode()
    assert f", {interrupted} interrupted, " in err.decode()


@WORKERS
async def test_second_interrupt_cancels_executions_in_flight(
    tmp_path: Path, sink: tuple[Sink, int], workers: str
) -> None:
    state, port = sink
    root = project(tmp_path, port)
    (tmp_path / "events.jsonl").write_bytes(b"".join(event(f"+{i}", delay=60) for i in range(50)))
    proc = await start_batch(root, "--concurrency", "4", "--no-on-complete", "--workers", workers)
    while state.in_flight < 4:
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 130
    assert "Traceback" not in err.decode()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(records) + 1))
    assert {r["status"] for r in records} == {"INTERRUPTED"}
    started = [r for r in records if "execution_id" in r]  # cancelled while running
    assert [r["line"] for r in started] == [1, 2, 3, 4]
    assert f"{len(records)} executions: 0 completed, 0 failed, 0 invalid, " in err.decode()


async def test_unreadable_events_file(tmp_path: Path) -> None:
    root = project(tmp_path, free_port())
    done = await flowrunner(root, "--events", "missing.jsonl")
    assert done.code == 2
    assert "missing.jsonl: cannot read events" in done.stderr


# ---- in process --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        (b"", "EMPTY_LINE", "empty line (every line must hold one JSON object)"),
        (b"  \r", "EMPTY_LINE", "empty line (every line must hold one JSON object)"),
        (b"\xc3\x28", "INVALID_UTF8", "not valid UTF-8 (byte 1)"),
        (b'"text"', "NOT_AN_OBJECT", "expected a JSON object, got a string"),
        (b"null", "NOT_AN_OBJECT", "expected a JSON object, got null"),
        (b'{"call": []}', "WRONG_TYPE", "'call' must be an object, got an array"),
        (b'{"keys": true}', "WRONG_TYPE", "'keys' must be an object, got a boolean"),
        (b'{"x": 1}', "UNKNOWN_MEMBER", 'unknown member "x" (expected call, keys or user_keys)'),
        (b'{"call": {"1a": 2}}', "INVALID_NAME", None),
        (b'{"call": {"cli": NaN}}', "INVALID_JSON", None),
        (b'{"call": {"cli": "\\ud800"}}', "INVALID_JSON", None),
        (b"[" * 100_000, "INVALID_JSON", None),
    ],
)
def test_parse_line_refusals(line: bytes, reason: str, message: str | None) -> None:
    result = parse_line(line)
    assert isinstance(result, Invalid)
    assert result.reason == reason
    if message is not None:
        assert result.message == message


def test_parse_line_never_echoes_the_line() -> None:
    secret = "s3cr3t-" + "y" * 200
    for line in (
        json.dumps({secret: 1}),
        json.dumps({"call": {secret: 1}}),
        '{"call": "' + secret,
    ):
        result = parse_line(line.encode())
        assert isinstance(result, Invalid)
        assert "y" * 40 not in result.message


def test_parse_line_accepts() -> None:
    assert parse_line(b"{}") == ({}, {}, {})
    assert parse_line(b'{"call": null, "keys": {"a": [1]}, "user_keys": {"_b": {}}}') == (
        {},
        {"a": [1]},
        {"_b": {}},
    )
    assert parse_line(b'{"call": {"cli": "\\ud83d\\ude00 \xc3\xa9"}}\r') == (
        {"cli": "\U0001f600 \u00e9"},
        {},
        {},
    )


async def test_line_reader_splits_and_skips_oversize_lines() -> None:
    read, write = os.pipe()
    items: list[Chunk | OSError | None] = []
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()

    def deliver(item: Chunk | OSError | None) -> None:
        items.append(item)
        if isinstance(item, Chunk):
            reader.taken()
        else:
            loop.call_soon_threadsafe(ended.set)

    reader = LineReader(read, deliver)
    reader.start()
    big = b"z" * (MAX_LINE + 1)
    data = b"\xef\xbb\xbf{}\n" + big + b"\n" + b"a\n" + big * 3 + b"\nb\n\nlast"
    await loop.run_in_executor(None, _write_and_close, write, data)
    await asyncio.wait_for(ended.wait(), 10)
    os.close(read)
    assert items[-1] is None
    chunks = [c for c in items if isinstance(c, Chunk)]
    lines = [line for c in chunks for line in c.lines]
    assert lines == [
        b"{}",
        Oversize(MAX_LINE + 1),
        b"a",
        Oversize(3 * (MAX_LINE + 1)),
        b"b",
        b"",
        b"last",
    ]
    assert sum(c.size for c in chunks) == len(data)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_line_splitter_any_chunking(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    monkeypatch.setattr(events, "MAX_LINE", 5)
    data = b"ab\n\n123456\nxyz\n1234567890123\nlast12"
    splitter = events.LineSplitter()
    lines = []
    for start in range(0, len(data), step):
        lines += splitter.feed(data[start : start + step])
    lines += splitter.end()
    assert lines == [b"ab", b"", Oversize(6), b"xyz", Oversize(13), Oversize(6)]


def _write_and_close(fd: int, data: bytes) -> None:
    with open(fd, "wb") as pipe:
        pipe.write(data)


def test_cached_user_keys(tmp_path: Path) -> None:
    mine, other = Store.open(tmp_path / "state.db"), Store.open(tmp_path / "state.db")
    mine.set_user_key("n", 1)
    now = [0.0]
    cache = CachedUserKeys(mine, clock=lambda: now[0])
    cache.set_user_key("own", "a")
    assert cache.user_keys() == {"n": 1, "own": "a"}  # this process's write at once
    other.set_user_key("n", 2)
    assert cache.user_keys()["n"] == 1  # another connection's write: not yet looked for
    now[0] += REFRESH
    assert cache.user_keys() == {"n": 2, "own": "a"}
    assert mine.user_keys()["own"] == "a"  # written through
    mine.close()
    other.close()


def test_json_codec_round_trip() -> None:
    data = {"a": "é \U0001f600", "n": 2**70, "f": 1.5, "none": None, "list": [True]}
    assert loads(dumps(data)) == data
    assert dumps({"s": "\ud800"}).decode("utf-8")  # a lone surrogate still gives UTF-8


@pytest.mark.parametrize(
    "number", [10**18 - 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**40)]
)
def test_json_codec_reads_integers_exactly_at_any_size(number: int) -> None:
    raw = b'{"n":%d,"s":"%d","t":"x%dy"}' % (number, number, number)
    data = loads(raw)
    assert data == {"n": number, "s": str(number), "t": f"x{number}y"}
    assert type(data["n"]) is int


@pytest.mark.parametrize(
    "data",
    [
        {"line": 1, "keys": {"a": "é \U0001f600", "f": 2.935, "n": -7, "t": True, "z": None}},
        {"steps": [{"id": "x", "duration_ms": 0.011}, {"request": {"url": "http://h/?a=1&b"}}]},
        {"text": 'quote " backslash \\ tab \t newline \n nul \u0000 del \u007f'},
        {"big": 2**63 - 1, "small": -(2**63), "huge": 1.5e300, "zero": 0.0, "tiny": 5e-324},
    ],
)
def test_json_codec_same_bytes_with_and_without_orjson(
    monkeypatch: pytest.MonkeyPatch, data: dict[str, Any]
) -> None:
    from flowrunner import jsoncodec

    if jsoncodec.orjson is None:
        pytest.skip("orjson is not installed")
    fast = dumps(data)
    monkeypatch.setattr(jsoncodec, "orjson", None)
    assert dumps(data) == fast  # the same record bytes whichever encoder wrote them
    assert loads(fast) == data


def test_json_codec_exponents_differ_only_in_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowrunner import jsoncodec

    if jsoncodec.orjson is None:
        pytest.skip("orjson is not installed")
    data = {"e": 1e-7, "f": 2.5e-9}
    fast = dumps(data)
    monkeypatch.setattr(jsoncodec, "orjson", None)
    slow = dumps(data)
    assert (fast, slow) == (b'{"e":1e-7,"f":2.5e-9}', b'{"e":1e-07,"f":2.5e-09}')
    assert loads(fast) == loads(slow) == data


@pytest.mark.parametrize("raw", [b"NaN", b"[Infinity]", b'"\\ud800"', b"{", b"\xff"])
def test_json_codec_refuses_alike_with_and_without_orjson(
    monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    from flowrunner import jsoncodec

    with pytest.raises(ValueError):
        loads(raw)
    monkeypatch.setattr(jsoncodec, "orjson", None)
    with pytest.raises(ValueError):
        loads(raw)


def test_time_ordered_ids() -> None:
    ids = [time_ordered_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # milliseconds come first


def test_progress_texts() -> None:
    counts = Counts(completed=7, failed=1, invalid=2, pending=3)
    assert summary_line(counts, 2.0) == (
        "10 executions: 7 completed, 1 failed, 2 invalid, 3 pushes pending; 5/s"
    )
    counts.interrupted = 4
    assert "2 invalid, 4 interrupted, 3 pushes" in summary_line(counts, 1.0)
    assert bar_text(1500, 3.0, 0, 0, None) == "1,500 done  500/s"
    assert bar_text(1000, 10.0, 1000, 250, 1000) == (
        "[#####...............]  25%  1,000/~4,000  100/s  ETA 0:30"
    )


def test_ctrl_c_while_the_command_is_imported_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's modules take a tenth of a second to import: a Ctrl-C then is an
    interrupt like any other (exit 130), not a traceback."""
    import importlib.abc

    from flowrunner.__main__ import entry

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *args: object) -> None:
            if name == "flowrunner.cli.main":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "flowrunner.cli.main")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        entry()
    assert stopped.value.code == 130


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.6])
async def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path: Path, delay: float) -> None:
    """SIGINT while the command's modules are imported, while the flow loads, or once
    the batch waits on its input: never a traceback."""
    root = project(tmp_path, free_port())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), "run", "probe",
        "--events", "-", "--no-on-complete",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=root,
    )  # fmt: skip
    await asyncio.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert "Traceback" not in err.decode()
    # 130, or ended by the signal itself (which a shell reports as 130 too); 1 is
    # click's own, while it parses the command line
    assert proc.returncode in (130, -signal.SIGINT, 1), err.decode()


async def test_a_bug_while_reading_fails_the_batch_instead_of_hanging(
    tmp_path: Path, sink: tuple[Sink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers wait on the lines the reading hands out: when the reading itself
    breaks, they are let go and the batch ends with the error."""
    from flowrunner.batch import local
    from flowrunner.batch.progress import ProgressBar
    from flowrunner.project import load_plan
    from flowrunner.runner import Runner
    from flowrunner.secrets import Secrets

    _, port = sink
    root = project(tmp_path, port)
    events = tmp_path / "events.jsonl"
    events.write_bytes(event("+1") + event("+2") + event("+3"))
    seen: list[bytes] = []

    def broken(raw: bytes) -> object:
        seen.append(raw)
        if len(seen) == 2:
            raise RuntimeError("a bug")
        return parse_line(raw)

    monkeypatch.setattr(local, "parse_line", broken)
    runner = Runner(load_plan(root, "probe"), Secrets(env={}), on_complete=False, group_commit=True)
    fd = os.open(events, os.O_RDONLY)
    out_fd = os.open(tmp_path / "out.jsonl", os.O_WRONLY | os.O_CREAT)
    try:
        bar = ProgressBar(sys.stderr, enabled=False, total=None)
        batch = local.run_events(runner, fd, local.Output(out_fd), concurrency=4, bar=bar)
        with pytest.raises(RuntimeError, match="a bug"):
            await asyncio.wait_for(batch, 20)
    finally:
        os.close(fd)
        os.close(out_fd)
    assert len(seen) == 2
