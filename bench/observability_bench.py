"""What the batch figures, the HTML report and tracing cost ``run --events``.

    python bench/observability_bench.py [--events 4000] [--rounds 5]

Five variants of the same batch (the ``http`` flow of run_bench.py, on-complete off,
concurrency 64, against bench/sink.py in its own process), run interleaved, each as a
child process calling the ``run`` command's body (``flowrunner.cli.run.batch_run``):

* ``off``: no figures (``stats=False``), the baseline;
* ``summary``: the figures of the summary (what ``run --events`` does by default);
* ``report``: the figures and ``--report FILE.html``;
* ``trace``: no figures, ``--trace-file FILE`` (needs ``flowrunner[otel]``);
* ``trace-10%``: the same, with the SDK's sampler keeping one trace in ten
  (``OTEL_TRACES_SAMPLER=traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.1``).

For each: the batch's own rate (executions/s, reading the first line to writing the
last record) and the CPU time of the process per execution while ``batch_run`` runs
(modules imported beforehand: their cost is the cold start's), medians over the rounds,
and their ratio to ``off``. Then the cold start of
``run http --dry-run`` without and with ``--trace-file`` (median of 10, interleaved),
and whether any ``opentelemetry`` module was imported without it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import HTTP_FLOW, PROJECT, PYTHON, Sink, events_file, machine, median  # noqa: E402

BATCH = """\
import sys
import time
from pathlib import Path
from flowrunner.cli.run import batch_run
# one-time imports before the clock starts (their cost is the cold start's figure)
import flowrunner.batch.html, flowrunner.batch.local, flowrunner.net.http, flowrunner.runner
if sys.argv[3].startswith("trace"):
    import flowrunner.tracing.otel
options = dict(project=Path(sys.argv[1]), flow="http", secrets_file=None, events=sys.argv[2],
               concurrency=64, output=Path("/dev/null"), dry_run=False, on_complete=False)
variant = sys.argv[3]
if variant == "off":
    options["stats"] = False
elif variant == "report":
    options["report"] = Path(sys.argv[1]) / "report.html"
elif variant.startswith("trace"):
    options["stats"] = False
    options["trace_file"] = Path(sys.argv[1]) / "spans.jsonl"
started = time.process_time()
code = batch_run(**options)
print(f"cpu {time.process_time() - started:.6f}", file=sys.stderr)
sys.exit(code)
"""
VARIANTS = ("off", "summary", "report", "trace", "trace-10%")
SAMPLED = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


def one_batch(root: Path, events: Path, variant: str) -> tuple[float, float]:
    """(executions/s, CPU seconds) of one batch."""
    shutil.rmtree(root / ".flowrunner", ignore_errors=True)
    proc = subprocess.Popen(
        [PYTHON, "-c", BATCH, str(root), str(events), variant],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, **(SAMPLED if variant == "trace-10%" else {})},
    )  # fmt: skip
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _, status, _ = os.wait4(proc.pid, 0)
    match = re.search(r"; ([\d,]+)/s", err)
    cpu = re.search(r"^cpu ([\d.]+)$", err, re.M)
    if os.waitstatus_to_exitcode(status) != 0 or match is None or cpu is None:
        raise SystemExit(f"{variant}: the batch failed:\n{err}")
    return float(match.group(1).replace(",", "")), float(cpu.group(1))


def cold_start(root: Path, reps: int) -> dict[str, float]:
    base = [PYTHON, "-m", "flowrunner", "--project", str(root), "run", "http", "--dry-run"]
    base += ["--call", "cli=+15551234567"]
    kinds = {"untraced": base, "--trace-file": [*base, "--trace-file", str(root / "t.jsonl")]}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(reps):
        for kind, args in kinds.items():
            started = time.perf_counter()
            subprocess.run(args, cwd=root, capture_output=True, check=True)
            times[kind].append(time.perf_counter() - started)
    return {k: median(v) * 1000 for k, v in times.items()}


def imports_otel(root: Path) -> bool:
    probe = (
        "import sys; from click.testing import CliRunner; from flowrunner.cli.main import main;"
        f"CliRunner().invoke(main, ['--project', {str(root)!r}, 'run', 'http', '--dry-run',"
        " '--call', 'cli=1']); print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
          f"uvloop {info['uvloop']}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, Sink() as sink:
        root = Path(folder)
        (root / "flowrunner.yaml").write_text(PROJECT.format(port=sink.port))
        (root / "flows").mkdir()
        (root / "flows" / "http.yaml").write_text(HTTP_FLOW)
        events = events_file(root, args.events)
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                rate, seconds = one_batch(root, events, variant)
                rates[variant].append(rate)
                cpu[variant].append(seconds / args.events * 1e6)
        base_rate, base_cpu = median(rates["off"]), median(cpu["off"])
        print(f"\n{args.events} events, {args.rounds} rounds interleaved, medians")
        print(f"{'variant':<9} {'exec/s':>8} {'ratio':>6} {'CPU µs/exec':>12} {'ratio':>6}")
        for v in VARIANTS:
            r, c = median(rates[v]), median(cpu[v])
            print(f"{v:<9} {r:>8,.0f} {r / base_rate:>6.3f} {c:>12.1f} {c / base_cpu:>6.3f}")
        starts = cold_start(root, 10)
        print("\ncold start of run --dry-run (median of 10, ms): " +
              ", ".join(f"{k} {v:.0f}" for k, v in starts.items()))  # fmt: skip
        print(f"opentelemetry imported without tracing: {imports_otel(root)}")


if __name__ == "__main__":
    main()
