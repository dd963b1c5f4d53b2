"""Throughput of ``flowrunner serve`` against ``run --events`` on the same flow and sink.

    python bench/serve_bench.py [--events 5000] [--reps 3]

Figures, each a median over ``--reps`` interleaved rounds (A B C A B C ...):

* ``run --events``: a batch of N events through the real CLI at concurrency 64 (the
  batch's own rate: first line read to last record written), the baseline;
* ``serve``, 1 call per request: N requests posted by 64 concurrent clients;
* ``serve``, 100 calls per request: N/100 requests posted by up to 64 clients.

A serve rate is N divided by the time from the first POST to the moment the server's
``flowrunner_executions_total`` reaches N (accepted, run, recorded); the server runs
with ``--concurrency 64`` and is started before the clock starts. The latency of the
202 answers (p50/p99) is reported for both request sizes. The flow is the HTTP flow of
``run_bench.py`` (an assignment and a webhook step with a JSON body and two mapped
keys), without an on-complete push; the sink is ``bench/sink.py`` in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_bench import HTTP_FLOW, PROJECT, PYTHON, Sink, call, events_file, machine  # noqa: E402

TOKEN = "bench-token"
CONCURRENCY = 64
FLOW = HTTP_FLOW.replace("on_complete: true\n", "")


def write_project(root: Path, port: int) -> None:
    text = PROJECT.format(port=port) + "serve:\n  tokens: [{secret: BENCH_TOKEN}]\n"
    text += "  max_backlog: 10000000\n"
    (root / "flowrunner.yaml").write_text(text)
    (root / "flows").mkdir(exist_ok=True)
    (root / "flows" / "http.yaml").write_text(FLOW)


def batch_rate(root: Path, events: Path) -> float:
    shutil.rmtree(root / ".flowrunner", ignore_errors=True)
    args = [PYTHON, "-m", "flowrunner", "--project", str(root), "run", "http", "--events",
            str(events), "--output", os.devnull, "--concurrency", str(CONCURRENCY)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=root)
    match = re.search(r"; ([\d,]+)/s", done.stderr)
    if match is None:
        raise SystemExit(f"run --events failed ({done.returncode}):\n{done.stderr}")
    return float(match.group(1).replace(",", ""))


class Serve:
    """``flowrunner serve`` in its own process, on a free port."""

    def __init__(self, root: Path) -> None:
        shutil.rmtree(root / ".flowrunner", ignore_errors=True)
        self.log = (root / "serve.log").open("wb")
        env = {**os.environ, "BENCH_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "flowrunner", "--project", str(root), "serve", "--port", "0",
             "--concurrency", str(CONCURRENCY), "--log-format", "json"],
            stderr=self.log, env=env, cwd=root,
        )  # fmt: skip
        self.port = 0
        deadline = time.monotonic() + 30
        while not self.port and time.monotonic() < deadline:
            for line in filter(None, (root / "serve.log").read_text().split("\n")):
                event = json.loads(line)
                if event.get("event") == "start":
                    self.port = int(event["port"])
            time.sleep(0.05)
        if not self.port:
            raise SystemExit((root / "serve.log").read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


async def post_all(port: int, total: int, per_request: int) -> tuple[float, list[float]]:
    """(executions/s, 202 latencies in ms) of ``total`` calls in requests of ``per_request``."""
    import aiohttp

    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bodies = [
        json.dumps({"calls": [{"call": call(i + j)} for j in range(per_request)]}).encode()
        for i in range(0, total, per_request)
    ]
    todo = iter(bodies)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def poster() -> None:
            for body in todo:
                sent = time.perf_counter()
                async with session.post(f"{url}/v1/flows/http/executions", data=body,
                                        headers=headers) as resp:  # fmt: skip
                    await resp.read()
                    assert resp.status == 202, resp.status
                latencies.append((time.perf_counter() - sent) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(min(CONCURRENCY, len(bodies)))))
        while await executed(session, url) < total:
            await asyncio.sleep(0.05)
        return total / (time.perf_counter() - started), latencies


async def executed(session: Any, url: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flowrunner_executions_total{")
    )


def serve_rate(root: Path, total: int, per_request: int) -> tuple[float, list[float]]:
    server = Serve(root)
    try:
        return asyncio.run(post_all(server.port, total, per_request))
    finally:
        server.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"run": [], "serve1": [], "serve100": []}
    lat: dict[str, list[float]] = {"serve1": [], "serve100": []}
    with tempfile.TemporaryDirectory() as tmp, Sink() as sink:
        root = Path(tmp)
        write_project(root, sink.port)
        events = events_file(root, args.events)
        for _ in range(args.reps):
            rates["run"].append(batch_rate(root, events))
            for name, size in (("serve1", 1), ("serve100", 100)):
                rate, latencies = serve_rate(root, args.events, size)
                rates[name].append(rate)
                lat[name] += latencies
    base = statistics.median(rates["run"])
    info = machine()
    print(f"machine: {info['nproc']} CPU, {info['cpu']}, Python {info['python']}, "
          f"uvloop {info['uvloop']}; {args.events} executions x {args.reps} rounds")  # fmt: skip
    print(f"{'figure':<34}{'executions/s':>14}{'vs run --events':>17}{'202 p50/p99 ms':>18}")
    print(f"{'run --events (baseline)':<34}{base:>14,.0f}{1.0:>16.2f}x{'':>18}")
    for name, label in (
        ("serve1", "serve, 1 call/request"),
        ("serve100", "serve, 100 calls/request"),
    ):
        median = statistics.median(rates[name])
        p50, p99 = pct(lat[name], 0.5), pct(lat[name], 0.99)
        print(f"{label:<34}{median:>14,.0f}{median / base:>16.2f}x{p50:>9.1f}/{p99:<8.1f}")
    print("rounds:", {k: [round(v) for v in vs] for k, vs in rates.items()})


if __name__ == "__main__":
    main()
