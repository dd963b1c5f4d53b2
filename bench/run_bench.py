"""flowrunner benchmarks: every figure beside a baseline measured in the same run.

    python bench/run_bench.py --quick     # a few minutes
    python bench/run_bench.py             # the full set, longer
    python bench/run_bench.py --quick --throughput --transports fast
    python bench/run_bench.py --memory    # the memory rows only (6-9 minutes here)

What it measures (bench/README.md says why and how to read it):

* HTTP throughput: a plain aiohttp client (the baseline, at concurrency 64 and 1) and
  ``flowrunner run --events`` through the real CLI over each transport: concurrency 64
  with on-complete off then on, and one execution at a time, against one loopback sink
  (bench/sink.py, a separate process); the CPU time per execution beside each rate.
* Operation-only executions in process (Engine, no HTTP) against plain Python doing the
  same dict work.
* Peak RSS of a 10,000-, a 100,000- and a 1,000,000-event batch (the last above the
  history's ``keep_runs``), and the ratios of each size to the one before it.
* Cold start of ``flowrunner run FLOW --dry-run`` against ``python -c pass``: CPU time
  (user + system), as bench/cold_start.py measures it; the goal is 150 ms.

Timed comparisons are interleaved (A B A B ...) and reported as medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
CONCURRENCY = 64

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
          order_status: status
          order_id: order.id
  events:
    url: http://127.0.0.1:{port}/events
    default: true
    timeout: 10
    methods: {{}}
state: .flowrunner/state.db
"""

# one assignment and one webhook step (the HTTP throughput flow)
HTTP_FLOW = """\
flow: http
on_complete: true
keys:
  attempts: 0
steps:
  - id: note
    operation: assign
    set:
      caller: $call.cli
  - id: lookup
    webhook: api
    method: lookup
"""

# three templated assignments: a Jinja expression, a reference, text with references
OPS_FLOW = """\
flow: ops
keys:
  attempts: 0
steps:
  - id: count
    operation: assign
    set:
      attempts: "{{ $flow.key.attempts + 1 }}"
      caller: $call.cli
      greeting: "Hello $call.cli, attempt $flow.key.attempts"
"""


# ---- pieces ------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    probe = (
        "import importlib.util as u; print(*[bool(u.find_spec(m)) for m in ('uvloop', 'orjson')])"
    )
    found = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True).stdout.split()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "uvloop": "yes" if found[:1] == ["True"] else "no",
        "orjson": "yes" if found[1:2] == ["True"] else "no",
    }


class Sink:
    """bench/sink.py in its own process."""

    def __enter__(self) -> Sink:
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "sink.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def events_file(folder: Path, count: int) -> Path:
    path = folder / f"events-{count}.jsonl"
    if not path.exists():
        with path.open("w") as out:
            for i in range(count):
                out.write(json.dumps({"call": call(i)}) + "\n")
    return path


def call(i: int) -> dict[str, Any]:
    """A call as a telephony platform reports it (about 300 bytes of request body)."""
    return {
        "uuid": f"c-{i:08d}-5f0e-4c1a-9d7e-3b2a1c0d9e8f",
        "request_id": f"r-{i:08d}",
        "cli": f"+1555{i:07d}",
        "dnis": "+15550000001",
        "did": "+15550000001",
        "direction": "inbound",
        "start": "2026-11-28T10:00:00Z",
    }


def run_child(args: list[str], cwd: Path) -> tuple[int, str, float, int]:
    """Run a child: (exit code, stderr, wall seconds, peak RSS in KiB of that child)."""
    return run_child_cpu(args, cwd)[:4]  # type: ignore[return-value]


def run_child_cpu(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, float, int, float]:
    """:func:`run_child`, and the child's CPU seconds (user + system); ``env`` is added
    to the environment."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, err, time.perf_counter() - started, usage.ru_maxrss, cpu


def flowrunner(root: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "flowrunner", "--project", str(root), "run", *args]


def batch_rate(root: Path, events: Path, *extra: str) -> tuple[float, int]:
    """Executions/s of one ``run --events`` (its own clock: reading to last record)."""
    rate, rss, _ = batch_run(root, events, *extra)
    return rate, rss


def batch_run(
    root: Path, events: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[float, int, float]:
    """Executions/s (its own clock: reading to last record), peak RSS in KiB and the
    CPU seconds (user + system) of one ``run --events`` process."""
    shutil.rmtree(root / ".flowrunner", ignore_errors=True)
    args = ["http", "--events", str(events), "--output", os.devnull]
    code, err, _, rss, cpu = run_child_cpu(flowrunner(root, *args, *extra), root, env)
    match = re.search(r"; ([\d,]+)/s", err)
    if code != 0 or match is None:
        raise SystemExit(f"flowrunner run --events failed ({code}):\n{err}")
    return float(match.group(1).replace(",", "")), rss, cpu


# ---- the raw client (run as a child: python bench/run_bench.py _raw PORT N BODY) -----


async def raw_client(
    port: int, count: int, body: bytes, concurrency: int = CONCURRENCY
) -> tuple[float, float]:
    """(requests per second, CPU µs per request) of a plain aiohttp client."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/api"
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": "00000000-0000-0000-0000-000000000000:lookup",
        "User-Agent": "flowrunner/bench",
    }
    todo = iter(range(count))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in todo:
                async with session.post(url, data=body, headers=headers) as resp:
                    json.loads(await resp.read())

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = time.process_time() - cpu
        return count / (time.perf_counter() - started), cpu / count * 1e6


def raw_rate(port: int, count: int, body: Path, concurrency: int = CONCURRENCY) -> float:
    return raw_run(port, count, body, concurrency)[0]


def raw_run(port: int, count: int, body: Path, concurrency: int) -> tuple[float, float]:
    """(requests per second, CPU µs per request) of the raw client, in a child process."""
    out = subprocess.run(
        [PYTHON, __file__, "_raw", str(port), str(count), str(body), str(concurrency)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate, cpu = out.split()
    return float(rate), float(cpu)


def request_body(root: Path) -> bytes:
    """The JSON body flowrunner sends for the first event (from a dry run's record)."""
    line = json.dumps({"call": call(0)}) + "\n"
    args = flowrunner(root, "http", "--events", "-", "--dry-run")
    done = subprocess.run(args, input=line, capture_output=True, text=True, cwd=root, check=True)
    out = done.stdout
    body: str = json.loads(out)["steps"][1]["request"]["body"]
    return body.encode()


# ---- the figures -------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    baseline: str
    ratio: float | None
    goal: str = ""


TRANSPORTS = ["aiohttp", "fast"]  # --transports changes it
CASES = {  # name: (the events file's size as a fraction of the count, extra options)
    f"c={CONCURRENCY}, on-complete off": (1, ("--no-on-complete",)),
    f"c={CONCURRENCY}, on-complete on": (1, ()),
    "c=1, on-complete off": (4, ("--no-on-complete", "--concurrency", "1")),
}


def cpu_per_execution(
    root: Path, events: Path, count: int, transport: str, *extra: str
) -> tuple[float, float]:
    """(executions/s, CPU µs per execution) of one batch over ``transport`` (chosen by
    the environment variable, which older versions ignore: they always use aiohttp);
    the CPU of the same command on an empty events file (start-up, loading, closing)
    is taken off first."""
    env = {"FLOWRUNNER_TRANSPORT": transport}
    _, _, idle = batch_run(root, events_file(root, 0), *extra, env=env)
    rate, _, cpu = batch_run(root, events, *extra, env=env)
    return rate, max(cpu - idle, 0.0) / count * 1e6


def rate_and_cpu(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return median([r for r, _ in samples]), median([c for _, c in samples])


def throughput(root: Path, port: int, count: int, reps: int) -> list[Row]:
    body_file = root / "body.json"
    body_file.write_bytes(request_body(root))
    raw: dict[int, list[tuple[float, float]]] = {CONCURRENCY: [], 1: []}
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    workers: list[float] = []
    raw_rate(port, min(count, 2000), body_file)  # warm the sink up
    for _ in range(reps):
        raw[CONCURRENCY].append(raw_run(port, count, body_file, CONCURRENCY))
        raw[1].append(raw_run(port, count // 4, body_file, 1))
        for transport in TRANSPORTS:
            for case, (share, extra) in CASES.items():
                n = count // share
                got = cpu_per_execution(root, events_file(root, n), n, transport, *extra)
                runs.setdefault((transport, case), []).append(got)
        events = events_file(root, count)
        workers.append(batch_rate(root, events, "--no-on-complete", "--workers", "2")[0])
    size = len(body_file.read_bytes())
    base, base_cpu = rate_and_cpu(raw[CONCURRENCY])
    seq, seq_cpu = rate_and_cpu(raw[1])
    rows = [
        Row(
            f"raw aiohttp client, c={CONCURRENCY}, {size} B JSON",
            f"{base:,.0f} req/s ({base_cpu:.0f} µs CPU/req)", "", 1.0,
        ),
        Row("raw aiohttp client, c=1", f"{seq:,.0f} req/s ({seq_cpu:.0f} µs CPU/req)", "", 1.0),
    ]  # fmt: skip
    for transport in TRANSPORTS:
        rows += transport_rows(transport, runs, base, seq)
    rows.append(
        Row(
            "run --events --workers 2, on-complete off",
            f"{median(workers):,.0f} exec/s",
            f"{base:,.0f} req/s",
            median(workers) / base,
        )
    )
    return rows


def transport_rows(
    transport: str, runs: dict[tuple[str, str], list[tuple[float, float]]], base: float, seq: float
) -> list[Row]:
    """The three batch rows of one transport, each beside its baseline."""
    (off, off_cpu), (on, on_cpu), (one, one_cpu) = (
        rate_and_cpu(runs[(transport, case)]) for case in CASES
    )
    names = list(CASES)
    return [
        Row(
            f"run --events {names[0]} [{transport}]",
            f"{off:,.0f} exec/s ({off_cpu:.0f} µs CPU/exec)",
            f"{base:,.0f} req/s raw",
            off / base,
            ">= 1.0 (goal 1.5)",
        ),
        Row(
            f"run --events {names[1]} [{transport}]",
            f"{on:,.0f} exec/s ({on_cpu:.0f} µs CPU/exec)",
            f"{base / 2:,.0f} = half the raw req/s",
            on / (base / 2),
            ">= 0.8",
        ),
        Row(
            f"run --events {names[2]} [{transport}]",
            f"{one:,.0f} exec/s ({one_cpu:.0f} µs CPU/exec)",
            f"{seq:,.0f} req/s raw, c=1",
            one / seq,
            ">= 0.8, or >= 3,000/s",
        ),
    ]


def counted(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Instructions run by the command ``args`` (valgrind's callgrind; every thread)."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args]
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"callgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(match.group(1))


def instructions(root: Path, port: int, count: int) -> list[Row]:
    """Instructions per raw request and per execution, each command counted with one
    request or none taken off (start-up and closing): CPU time moves with the machine,
    a count of instructions does not (callgrind gives the same within 0.1 %), so these
    ratios say what the code costs, apart from the kernel's part (system calls are not
    counted) and cache misses."""
    if shutil.which("valgrind") is None:
        NOTES.append("instruction counts: valgrind is not installed (apt install valgrind)")
        return []
    body = root / "body.json"
    body.write_bytes(request_body(root))

    def raw(n: int) -> int:
        args = [PYTHON, __file__, "_raw", str(port), str(n), str(body), str(CONCURRENCY)]
        return counted(args, root)

    def batch(n: int, extra: tuple[str, ...]) -> int:
        shutil.rmtree(root / ".flowrunner", ignore_errors=True)
        args = ["http", "--events", str(events_file(root, n)), "--output", os.devnull, *extra]
        return counted(flowrunner(root, *args), root, {"FLOWRUNNER_TRANSPORT": "fast"})

    per_request = (raw(count + 1) - raw(1)) / count
    rows = [Row(f"raw aiohttp client, c={CONCURRENCY}", f"{per_request:,.0f} instr/req", "", 1.0)]
    for case, factor in (
        (f"c={CONCURRENCY}, on-complete off", 1),
        (f"c={CONCURRENCY}, on-complete on", 2),
    ):
        _, extra = CASES[case]
        per_execution = (batch(count, extra) - batch(0, extra)) / count
        rows.append(
            Row(
                f"run --events {case} [fast], instructions",
                f"{per_execution:,.0f} instr/exec",
                f"{factor} x {per_request:,.0f} raw",
                factor * per_request / per_execution,
                "the throughput ratio where both are CPU-bound",
            )
        )
    return rows


def operation_only(root: Path, count: int, reps: int) -> list[Row]:
    sys.path.insert(0, str(HERE.parent))
    from flowrunner.execution.context import Inputs, MemoryUserKeys, Services
    from flowrunner.execution.engine import Engine
    from flowrunner.project import load_plan
    from flowrunner.secrets import Secrets

    plan = load_plan(root, "ops")
    services = Services(client=None, secrets=Secrets(env={}), users=MemoryUserKeys())
    engine = Engine(plan, services)
    declared = dict(plan.flow.keys)
    calls = [{"uuid": f"c-{i}", "cli": f"+1555{i:07d}"} for i in range(count)]

    async def with_engine() -> float:
        started = time.perf_counter()
        for call in calls:
            await engine.execute(Inputs(call=call))
        return count / (time.perf_counter() - started)

    def plain() -> float:
        started = time.perf_counter()
        for call in calls:
            flow = dict(declared)
            flow["attempts"] = flow["attempts"] + 1
            flow["caller"] = call["cli"]
            flow["greeting"] = f"Hello {call['cli']}, attempt {flow['attempts']}"
        return count / (time.perf_counter() - started)

    engine_rates: list[float] = []
    plain_rates: list[float] = []
    for _ in range(reps):
        engine_rates.append(asyncio.run(with_engine()))
        plain_rates.append(plain())
    fr, py = median(engine_rates), median(plain_rates)
    return [
        Row(
            "operation-only flow (3 assignments), in process",
            f"{fr:,.0f} exec/s ({1e6 / fr:.1f} µs)",
            f"{py:,.0f}/s plain Python",
            fr / py,
        )
    ]


MEMORY_SIZES = (10_000, 100_000, 1_000_000)
NOTES: list[str] = []  # lines printed under the table


def keep_runs() -> int:
    """The default ``history.keep_runs`` (the bench's project sets none)."""
    sys.path.insert(0, str(HERE.parent))
    from flowrunner.source.model import HistoryPolicy

    return HistoryPolicy().keep_runs


def history_count(root: Path) -> int | None:
    """How many runs the project's history holds (None: no state file)."""
    path = root / ".flowrunner" / "state.db"
    if not path.exists():
        return None
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    finally:
        conn.close()


def batch_peak(root: Path, events: Path, *extra: str) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one ``run http --events`` child."""
    args = flowrunner(root, "http", "--events", str(events), "--output", os.devnull, *extra)
    code, err, seconds, rss = run_child(args, root)
    if code != 0:
        raise SystemExit(f"memory run failed ({code}):\n{err}")
    return rss / 1024, seconds


def memory(root: Path, sizes: tuple[int, ...], *extra: str) -> list[Row]:
    """Peak RSS of one batch of each size, each on a fresh state file; a row per size
    against the size before it. Without ``--dry-run``, after a batch larger than
    ``keep_runs`` the next command (a run of an empty events file, which prunes the
    history when it opens the state file) is run too, and the history counted."""
    dry = "--dry-run" in extra
    how = (
        "dry run: no HTTP, no store"
        if dry
        else "HTTP, on-complete " + ("off" if "--no-on-complete" in extra else "on")
    )
    keep = keep_runs()
    peaks: list[float] = []
    for count in sizes:
        events = events_file(root, count)
        shutil.rmtree(root / ".flowrunner", ignore_errors=True)
        try:
            peak, seconds = batch_peak(root, events, *extra)
        finally:
            events.unlink()  # 1,000,000 lines take about 230 MB
        peaks.append(peak)
        print(f"  {count:,} events: {peak:.1f} MiB, {seconds:.0f} s", file=sys.stderr)
        stored = history_count(root)
        if stored is not None and count > keep:
            pruned, prune_seconds = batch_peak(root, events_file(root, 0), *extra)
            after = history_count(root)
            NOTES.append(
                f"history after the {count:,}-event batch: {stored:,} runs (keep_runs {keep:,}); "
                f"after the next run (it prunes when it opens the state file): {after:,} runs, "
                f"pruned in {prune_seconds:.0f} s at {pruned:.1f} MiB peak RSS"
                + ("" if after is not None and after <= keep else "  ** above keep_runs **")
            )
        shutil.rmtree(root / ".flowrunner", ignore_errors=True)
    rows = []
    for i in range(1, len(sizes)):
        small, low, large, high = sizes[i - 1], peaks[i - 1], sizes[i], peaks[i]
        above = f", above keep_runs {keep:,}" if large > keep and not dry else ""
        rows.append(
            Row(
                f"peak RSS, {large:,} vs {small:,} events ({how}{above})",
                f"{high:.1f} MiB",
                f"{low:.1f} MiB",
                high / low,
                "<= 1.2",
            )
        )
    return rows


COLD_START_GOAL_MS = 150  # CPU of a dry run's process, as in bench/cold_start.py


def cold_start(root: Path, reps: int) -> list[Row]:
    def timed(args: list[str]) -> Callable[[], float]:
        def once() -> float:
            code, err, _, _, cpu = run_child_cpu(args, root)
            if code != 0:
                raise SystemExit(f"{' '.join(args)} failed ({code}):\n{err}")
            return cpu

        return once

    ours = timed(flowrunner(root, "http", "--dry-run", "--call", "cli=+15550000000"))
    python = timed([PYTHON, "-c", "pass"])
    a: list[float] = []
    b: list[float] = []
    for _ in range(reps):
        a.append(ours())
        b.append(python())
    return [
        Row(
            "cold start: run FLOW --dry-run (CPU)",
            f"{median(a) * 1000:.0f} ms",
            f"{median(b) * 1000:.0f} ms python -c pass",
            median(a) / median(b),
            f"<= {COLD_START_GOAL_MS} ms",
        )
    ]


def table(rows: list[Row], info: dict[str, str], seconds: float) -> str:
    width = max([52, *(len(row.figure) for row in rows)])
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu']}; Python {info['python']}; "
        f"uvloop {info['uvloop']}, orjson {info['orjson']}",
        "",
        f"{'figure':<{width}} {'value':<38} {'baseline':<30} {'ratio':>6}  goal",
    ]
    for row in rows:
        ratio = (
            ""
            if row.ratio is None
            else f"{row.ratio:.2f}"
            if row.ratio >= 0.1
            else f"1/{1 / row.ratio:.0f}"
        )
        lines.append(
            f"{row.figure:<{width}} {row.value:<38} {row.baseline:<30} {ratio:>6}  {row.goal}"
        )
    lines += ["", *NOTES] if NOTES else []
    lines.append(f"\n({seconds:.0f} s; medians of interleaved runs)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="flowrunner benchmarks")
    parser.add_argument("--quick", action="store_true", help="a few minutes")
    parser.add_argument("--throughput", action="store_true", help="the throughput rows only")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="the memory rows only (with --quick: dry runs, about a minute; else 6-9 minutes)",
    )
    parser.add_argument(
        "--transports", default="aiohttp,fast", help="comma-separated (default: aiohttp,fast)"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per request and per execution under valgrind (a few minutes)",
    )
    args = parser.parse_args()
    TRANSPORTS[:] = args.transports.split(",")
    quick = args.quick
    everything = not (args.throughput or args.memory or args.instructions)
    started = time.perf_counter()
    info = machine()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="flowrunner-bench-") as tmp, Sink() as sink:
        root = Path(tmp)
        (root / "flowrunner.yaml").write_text(PROJECT.format(port=sink.port))
        (root / "flows").mkdir()
        (root / "flows" / "http.yaml").write_text(HTTP_FLOW)
        (root / "flows" / "ops.yaml").write_text(OPS_FLOW)
        if args.instructions:
            print("instructions ...", file=sys.stderr)
            rows += instructions(root, sink.port, 2000)
        if everything or args.throughput:
            print("throughput ...", file=sys.stderr)
            rows += throughput(root, sink.port, 5_000 if quick else 20_000, 5)
        if everything:
            print("operation-only ...", file=sys.stderr)
            rows += operation_only(root, 5_000 if quick else 20_000, 5)
        if everything or args.memory:
            print("memory ...", file=sys.stderr)
            began = time.perf_counter()
            # --quick: dry runs (no HTTP, no store: no history to prune) to stay short;
            # the full run sends every request and push, as a batch does by default
            rows += memory(root, MEMORY_SIZES, *(["--dry-run"] if quick else []))
            NOTES.append(f"memory rows: {time.perf_counter() - began:.0f} s")
        if everything:
            print("cold start ...", file=sys.stderr)
            rows += cold_start(root, 10)
    print(table(rows, info, time.perf_counter() - started))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_raw"]:
        port, count, body = int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]).read_bytes()
        concurrency = int(sys.argv[5])
        try:
            import uvloop

            rate, cpu = uvloop.run(raw_client(port, count, body, concurrency))
        except ImportError:
            rate, cpu = asyncio.run(raw_client(port, count, body, concurrency))
        print(rate, cpu)
    else:
        main()
