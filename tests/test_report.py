"""The batch figures: the summary of ``run --events`` and ``runs stats`` against numbers
computed from the records themselves, the HTML report, the streaming histogram and
timeline, and the progress estimate."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import invoke

from flowrunner.batch.html import render
from flowrunner.batch.progress import bar_text
from flowrunner.batch.stats import MAX_BINS, BatchStats, Histogram, Timeline
from flowrunner.cli.state import parse_duration
from flowrunner.errors import UsageError

PROJECT = """\
version: 1
http: {allow_http: true, allowlist: [127.0.0.1]}
webhooks:
  api:
    url: http://127.0.0.1:%d/api
    body: json
    methods: {lookup: {}}
state: state.db
"""
FLOW = """\
flow: probe
steps:
  - id: ask
    webhook: api
    method: lookup
    on_failure: sorry
  - id: fine
    operation: assign
    set: {message: ok}
    next: end
  - id: sorry
    when: "{{ $flow.key.response_status_code != 404 }}"
    operation: assign
    set: {message: "{{ 1 / 0 }}"}
"""


@pytest.fixture
async def sink() -> AsyncIterator[int]:
    """Answers after ``call.delay`` seconds with ``call.status``."""

    async def api(request: web.Request) -> web.Response:
        call = (await request.json()).get("call", {})
        await asyncio.sleep(float(call.get("delay", 0)))
        return web.json_response({"ok": True}, status=int(call.get("status", 200)))

    app = web.Application()
    app.router.add_post("/api", api)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


def write_project(root: Path, port: int) -> Path:
    (root / "flowrunner.yaml").write_text(PROJECT % port)
    (root / "flows").mkdir()
    (root / "flows" / "probe.yaml").write_text(FLOW)
    return root


def events(count: int) -> bytes:
    rng = random.Random(7)
    lines = []
    for i in range(count):
        call: dict[str, Any] = {"cli": f"+1555{i:07d}", "delay": round(rng.expovariate(200), 4)}
        if i % 17 == 0:
            call["status"] = 503  # failed call -> sorry -> a template error: FAILED
        elif i % 23 == 0:
            call["status"] = 404  # failed call, `sorry` skipped: COMPLETED
        lines.append(json.dumps({"call": call}))
        if i % 101 == 0:
            lines.append("not json")
    return ("\n".join(lines) + "\n").encode()


async def run_cli(root: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=root,
    )  # fmt: skip
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def close(shown: float, exact: float) -> bool:
    # within the histogram's 1 %, plus the 0.1 ms the summary rounds to (and 0.001 ms
    # the records round to)
    return abs(shown - exact) <= exact * 0.01 + 0.051


def latency_rows(text: str) -> dict[str, list[float]]:
    rows = {}
    for line in text.splitlines():
        match = re.match(
            r"^(executions|webhook \S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line
        )
        if match:
            rows[match.group(1)] = [float(g) for g in match.groups()[1:]]
    return rows


def expected_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    durations = [r["duration_ms"] for r in records if "duration_ms" in r]
    calls = [
        s["duration_ms"] for r in records for s in r.get("steps", []) if s["kind"] == "webhook"
    ]
    return {
        "statuses": Counter(r["status"] for r in records),
        "reasons": Counter(r["error"]["reason"] for r in records if r.get("error")),
        "executions": durations,
        "webhook api": calls,
    }


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "2-workers"])
async def test_summary_and_report_match_the_records(
    tmp_path: Path, sink: int, workers: str
) -> None:
    root = write_project(tmp_path, sink)
    code, out, err = await run_cli(
        root, "run", "probe", "--events", "-", "--report", "report.html",
        "--concurrency", "16", "--workers", workers, stdin=events(400),
    )  # fmt: skip
    assert code == 1, err  # invalid lines and failed executions
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 404
    want = expected_figures(records)
    assert want["statuses"]["FAILED"] == 24 and want["statuses"]["INVALID"] == 4
    assert want["reasons"]["TEMPLATE_ERROR"] == 24 and want["reasons"]["INVALID_JSON"] == 4
    by_status = ", ".join(f"{k} {n}" for k, n in want["statuses"].most_common())
    assert f"by status: {by_status}\n" in err
    by_reason = dict(re.findall(r"(\w+) (\d+)", err.split("by error reason: ")[1].splitlines()[0]))
    assert {k: int(n) for k, n in by_reason.items()} == dict(want["reasons"])
    rows = latency_rows(err)
    assert set(rows) == {"executions", "webhook api"}
    for name in rows:
        count, *shown = rows[name]
        assert count == len(want[name])
        for pct, value in zip((50, 95, 99), shown, strict=True):
            exact = nearest_rank(want[name], pct)
            assert close(value, exact), (name, pct, value, exact)
    page = (root / "report.html").read_text()
    assert page.count("<svg") == 3
    assert f"{len(records):,} executions" in page
    for marker in ("http://", "https://", "<script", "<link", "src=", "@import", "url("):
        assert marker not in page, marker
    assert "<td>TEMPLATE_ERROR: 24</td>" not in page  # counts are in their own cells
    assert "<title>TEMPLATE_ERROR: 24</title>" in page

    # the same figures from the history
    code, text, _ = await run_cli(root, "runs", "stats", "--since", "1h")
    assert code == 0
    executed = [r for r in records if "duration_ms" in r]
    assert text.startswith(f"{len(executed)} runs started in the last 1h\n")
    rows = latency_rows(text)
    count, *shown = rows["executions"]
    assert count == len(executed)
    for pct, value in zip((50, 95, 99), shown, strict=True):
        assert close(value, nearest_rank(want["executions"], pct))
    code, text, _ = await run_cli(root, "runs", "stats", "--flow", "probe", "--json")
    data = json.loads(text)
    assert data["statuses"] == {k: n for k, n in want["statuses"].items() if k != "INVALID"}
    assert data["latency_ms"]["webhooks"]["api"]["count"] == len(want["webhook api"])
    code, text, _ = await run_cli(root, "runs", "stats", "--flow", "other")
    assert (code, text.splitlines()[0]) == (0, "0 runs of flow other")


async def test_report_options_are_checked_before_anything_runs(tmp_path: Path, sink: int) -> None:
    root = write_project(tmp_path, sink)
    code, out, err = await run_cli(
        root, "run", "probe", "--events", "-", "--report", "missing/report.html",
        stdin=events(3),
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert (
        err
        == "flowrunner: missing/report.html: cannot write the report (no such file or directory)\n"
    )
    result = invoke(root, "run", "probe", "--report", "r.html")
    assert result.exit_code == 2
    assert "--report applies to --events only" in result.stderr
    code, _, err = await run_cli(root, "runs", "stats", "--since", "yesterday")
    assert code == 2
    assert (
        err == "flowrunner: --since: 'yesterday' is not a duration such as 30m, 2h, 7d or 1h30m\n"
    )


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400
    assert parse_duration(" 2d ") == 172_800
    assert parse_duration("1.5h") == 5400
    assert parse_duration("1w") == 604_800
    for bad in ("", "5", "m", "1x", "-1h", "1h-", "9" * 100 + "s", "1h 30"):
        with pytest.raises(UsageError):
            parse_duration(bad)


# ---- the streaming histogram and timeline ----------------------------------------------


def test_histogram_percentiles_are_within_one_percent() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(2.0, 1.2) for _ in range(50_000)]
    hist = Histogram()
    for v in values:
        hist.record(v)
    for pct in (1, 25, 50, 90, 95, 99, 99.9, 100):
        exact = nearest_rank(values, pct)
        assert abs(hist.percentile(pct) - exact) <= exact * 0.01, pct
    assert hist.count == len(values)
    assert hist.high == max(values) and hist.low == min(values)
    assert hist.mean == pytest.approx(sum(values) / len(values))


def test_histogram_memory_is_bounded_by_the_range_not_the_count() -> None:
    hist = Histogram()
    rng = random.Random(5)
    for _ in range(200_000):
        hist.record(10 ** rng.uniform(-3, 6.6))  # 1 µs to an hour, in ms
    assert len(hist.buckets) < 1300
    other = Histogram()
    other.record(0.0)
    other.record(-5.0)  # a clock step: counted, as the smallest value
    other.record(float("nan"))
    other.record(float("inf"))
    hist.merge(other)
    assert hist.count == 200_004
    assert hist.percentile(100) == 1e12
    assert hist.percentile(0) == pytest.approx(0.001, rel=0.01)


def test_timeline_keeps_at_most_max_bins() -> None:
    line = Timeline(start=1000.0)
    for second in range(20_000):
        line.record(1000.0 + second + 0.5)
    assert len(line.counts) <= MAX_BINS
    assert sum(line.counts) == 20_000
    assert line.width == 51.2
    assert sum(rate * line.width for _, rate in line.rates()) == 20_000
    line.record(float("nan"))
    line.record(253_402_300_799.0)  # 9999-12-31: the resolution halves until it fits
    assert len(line.counts) <= MAX_BINS and sum(line.counts) == 20_001


def test_empty_figures_render() -> None:
    page = render(BatchStats(), title="nothing <here>")
    assert "nothing &lt;here&gt;" in page
    assert page.count("none") >= 1 and "no executions" in page
    assert "<svg" not in page


def test_names_in_the_report_are_escaped() -> None:
    stats = BatchStats()
    stats.add("FAILED", "<b>REASON</b>", 5.0, 1.0, [("<hook>", 3.0)])
    stats.add("COMPLETED", None, 6.0, 2.5, [("<hook>", 4.0)])
    page = render(stats, title="t")
    assert "<b>" not in page and "<hook>" not in page
    assert "&lt;b&gt;REASON&lt;/b&gt;" in page and "webhook &lt;hook&gt;" in page


# ---- the progress estimate ---------------------------------------------------------------


def test_progress_counts_lines_against_bytes() -> None:
    # 1,000 lines read in 25,000 of 100,000 bytes: about 4,000 lines; 1,000 written in
    # 10 s is 100/s, so the 3,000 left take 30 s
    assert bar_text(1000, 10.0, 1000, 25_000, 100_000) == (
        "[#####...............]  25%  1,000/~4,000  100/s  ETA 0:30"
    )
    assert bar_text(1500, 3.0, 0, 0, None) == "1,500 done  500/s"


def test_progress_is_never_100_percent_while_executions_run() -> None:
    # the whole file read (one chunk), nothing written yet: the old estimate said 100 %
    assert "  0%  0/2,000" in bar_text(0, 1.0, 2000, 80_000, 80_000)
    # every line but one written
    text = bar_text(1999, 10.0, 2000, 80_000, 80_000)
    assert " 99%  1,999/2,000" in text and "ETA 0:00" in text
    # more written than the estimate (lines longer at the start of the file)
    assert " 99%" in bar_text(3000, 10.0, 1000, 50_000, 100_000)
    # done: every line read and written
    assert "100%  2,000/2,000" in bar_text(2000, 10.0, 2000, 80_000, 80_000)


def test_progress_eta_follows_remaining_lines_and_rate() -> None:
    fraction_texts = [
        bar_text(done, done / 50, done, done * 40, 40_000) for done in (100, 500, 900)
    ]
    etas = [t.rsplit("ETA ", 1)[1] for t in fraction_texts]
    assert etas == ["0:18", "0:10", "0:02"]  # (1000 - done) / 50 per second
