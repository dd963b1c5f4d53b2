"""How much does a slower disk slow a batch with on-complete pushes? One command:

    python bench/sync_latency.py [--events 5000] [--rounds 3]

A push must be on disk before it is sent, so every group commit with pushes waits for
an fsync of the state file's log. This runs ``run --events`` (concurrency 64, pushes
on, the fast transport) against bench/sink.py with each fsync made slower by 0, 0.5 and
2 ms, the range from a local NVMe disk to network block storage, and prints each rate
beside the one with no added delay, measured in the same run (rounds interleaved,
medians). The delay comes from bench/slow_sync.c, built here with the C compiler and
loaded with LD_PRELOAD into the batch process only (Linux; it needs ``cc``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402  (the project, sink and batch helpers)

DELAYS_US = (0, 500, 2000)


def build_shim(folder: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        sys.exit("this benchmark needs Linux and a C compiler (cc) to build bench/slow_sync.c")
    shim = folder / "slow_sync.so"
    source = rb.HERE / "slow_sync.c"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(source), "-ldl"], check=True
    )
    return shim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {delay: [] for delay in DELAYS_US}
    with tempfile.TemporaryDirectory(prefix="flowrunner-bench-") as tmp, rb.Sink() as sink:
        root = Path(tmp)
        shim = build_shim(root)
        (root / "flowrunner.yaml").write_text(rb.PROJECT.format(port=sink.port))
        (root / "flows").mkdir()
        (root / "flows" / "http.yaml").write_text(rb.HTTP_FLOW)
        events = rb.events_file(root, args.events)
        for _ in range(args.rounds):
            for delay in DELAYS_US:
                env = {
                    "LD_PRELOAD": str(shim),
                    "SLOW_SYNC_US": str(delay),
                    "FLOWRUNNER_TRANSPORT": "fast",
                }
                rate, _, _ = rb.batch_run(root, events, env=env)
                rates[delay].append(rate)
    base = statistics.median(rates[0])
    print(f"run --events, c=64, on-complete on, {args.events} events, {args.rounds} rounds")
    print(f"{'added to each fsync':<22} {'exec/s':>10} {'vs no delay':>12}")
    for delay in DELAYS_US:
        rate = statistics.median(rates[delay])
        print(f"{delay / 1000:>19.1f} ms {rate:>10,.0f} {rate / base:>11.2f}x")


if __name__ == "__main__":
    main()
