"""``worker`` on PostgreSQL against ``run --events`` on SQLite, and the queue's claim
latency.

    .venv/bin/python bench/pg_bench.py [--quick] [--events N]

Both sides run the HTTP flow of ``run_bench.py`` (one assignment, one webhook call, the
on-complete push) against the same loopback sink (``bench/sink.py``, its own process),
with a concurrency of 64 in total, as 1 and as 2 processes:

- SQLite: ``flowrunner run http --events FILE --output /dev/null`` (``--workers 2``);
- PostgreSQL: the same lines queued with ``flowrunner enqueue`` (not timed), then 1 or 2
  ``flowrunner worker`` processes (concurrency 64 / N each) started together; timed from
  their start until the last execution is recorded, then stopped with SIGTERM.

Figures: executions per second (wall, start-up included on both sides) and CPU
milliseconds per execution (user + system of the flowrunner processes, from
``RUSAGE_CHILDREN``; the PostgreSQL server's own CPU is not counted, nor SQLite's
fsyncs, which the kernel does). Rounds are interleaved (SQLite 1, PG 1, SQLite 2, PG 2) and
medians are printed, with the PostgreSQL figure as a ratio of the SQLite one.

Claim latency: one connection claims one execution at a time from a queue of 2,000
(``claim(limit=1)``, a commit each), then four connections do the same at once; p50
and p99 of each claim's wall time.

The server is ``FLOWRUNNER_BENCH_POSTGRES`` (default the local one); a fresh database is
created and dropped.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from run_bench import HTTP_FLOW, PROJECT, PYTHON, Sink, events_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowrunner.source.model import PostgresPlace  # noqa: E402
from flowrunner.state.postgres.store import PgStore  # noqa: E402
from flowrunner.state.queue_values import NewRequest, QueuedCall  # noqa: E402

ADMIN = os.environ.get("FLOWRUNNER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def flowrunner(root: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "flowrunner", "--project", str(root), *args]


def sqlite_round(root: Path, events: Path, processes: int, count: int) -> tuple[float, float]:
    """(executions/s, CPU ms per execution) of one ``run --events``."""
    state = root / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    args = ["run", "http", "--events", str(events), "--output", os.devnull, "--concurrency", "64"]
    args += ["--workers", str(processes)]
    env = {**os.environ, "FLOWRUNNER_STATE": str(state)}
    cpu, wall = children_cpu(), time.perf_counter()
    done = subprocess.run(flowrunner(root, *args), env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"run --events failed ({done.returncode}): {done.stderr[-2000:]}")
    return count / wall, cpu / count * 1000


def pg_round(root: Path, events: Path, processes: int, count: int, url: str) -> tuple[float, float]:
    """(executions/s, CPU ms per execution) of N workers draining ``count`` executions."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    env = {**os.environ, "FLOWRUNNER_STATE": url}
    queued = subprocess.run(flowrunner(root, "enqueue", "http", "--events", str(events)),
                            env=env, capture_output=True, text=True)  # fmt: skip
    if queued.returncode != 0:
        raise SystemExit(f"enqueue failed: {queued.stderr[-2000:]}")
    share = str(64 // processes)
    cpu, wall = children_cpu(), time.perf_counter()
    workers = [subprocess.Popen(flowrunner(root, "worker", "--concurrency", share), env=env,
                                stderr=subprocess.PIPE) for _ in range(processes)]  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM runs").fetchone()[0] < count:  # type: ignore[index]
            time.sleep(0.02)
    wall = time.perf_counter() - wall
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        proc.communicate(timeout=60)
    return count / wall, (children_cpu() - cpu) / count * 1000


def claim_latency(url: str, claimers: int, per: int) -> list[float]:
    """Wall seconds of each ``claim(limit=1)``, ``claimers`` connections at once."""
    place = PostgresPlace(url=url)
    store = PgStore.open(place, None)
    calls = tuple(QueuedCall(execution_id=f"c{i}-{time.time_ns()}", inputs={})
                  for i in range(claimers * per))  # fmt: skip
    store.enqueue_many([NewRequest(request_id=f"r{time.time_ns()}", flow="http", calls=calls,
                                   answer="{}")], now=time.time())  # fmt: skip
    store.close()
    times: list[float] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        mine = PgStore.open(place, None)
        got = []
        for _ in range(per):
            started = time.perf_counter()
            mine.claim(f"bench{n}", now=time.time(), seconds=30, limit=1)
            got.append(time.perf_counter() - started)
        mine.close()
        with lock:
            times.extend(got)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    parser.add_argument("--events", type=int, default=3000)
    options = parser.parse_args()
    rounds = 1 if options.quick else 3
    name = f"flowrunner_pgbench_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory(prefix="flowrunner-pgbench-") as tmp, Sink() as sink:
            root = Path(tmp)
            (root / "flowrunner.yaml").write_text(PROJECT.format(port=sink.port))
            (root / "flows").mkdir()
            (root / "flows" / "http.yaml").write_text(HTTP_FLOW)
            events = events_file(root, options.events)
            figures: dict[str, list[tuple[float, float]]] = {}
            for _ in range(rounds):
                for processes in (1, 2):
                    figures.setdefault(f"sqlite {processes}", []).append(
                        sqlite_round(root, events, processes, options.events)
                    )
                    figures.setdefault(f"pg {processes}", []).append(
                        pg_round(root, events, processes, options.events, url))  # fmt: skip
            report(figures, options.events, rounds)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        for claimers in (1, 4):
            times = claim_latency(url, claimers, 500 // claimers)
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            print(f"claim latency, {claimers} connection(s) at once: "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(times)} claims)")  # fmt: skip
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def report(figures: dict[str, list[tuple[float, float]]], count: int, rounds: int) -> None:
    print(f"{count} executions (webhook call + on-complete push), concurrency 64, "
          f"median of {rounds} round(s)")  # fmt: skip
    print(f"{'':24} {'exec/s':>8} {'CPU ms/exec':>12} {'rate vs SQLite':>15} {'CPU vs SQLite':>14}")
    for processes in (1, 2):
        base = figures[f"sqlite {processes}"]
        base_rate = statistics.median(r for r, _ in base)
        base_cpu = statistics.median(c for _, c in base)
        for label, key in (("run --events, SQLite", "sqlite"), ("worker, PostgreSQL", "pg")):
            rows = figures[f"{key} {processes}"]
            rate = statistics.median(r for r, _ in rows)
            cpu = statistics.median(c for _, c in rows)
            name = f"{label} x{processes}"
            print(f"{name:24} {rate:8.0f} {cpu:12.2f} {rate / base_rate:15.2f} "
                  f"{cpu / base_cpu:14.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
