"""Cold start of the commands a person or a pre-commit hook runs most, against
``python -c "import yaml"`` measured in the same run.

    python bench/cold_start.py            # 15 interleaved rounds
    python bench/cold_start.py --rounds 5

Each figure is the CPU time (user + system) of a fresh process, the median of the
rounds; the rounds interleave every command with the baseline, so load on a shared
machine falls on both alike. CPU time swings less than wall time here (see
bench/README.md). Also printed: how many modules each command imports, and which of
the heavy libraries it loads (none of them should appear where the command does not
need it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HEAVY = ("aiohttp", "asyncio", "jinja2", "jsonschema", "sqlite3", "yaml", "click")

COMMANDS = {
    "--help": ["--help"],
    "validate FILE": ["validate", "flows/order-status.yaml"],
    "run FLOW --dry-run": ["run", "order-status", "--dry-run", "--call", "cli=+15551234567"],
}
BASELINES = {
    "python -c pass": [PYTHON, "-c", "pass"],
    'python -c "import yaml"': [PYTHON, "-c", "import yaml"],
}

PROBE = """\
import io, json, sys, contextlib
from flowrunner.cli.main import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        main(sys.argv[1:])
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps([len(sys.modules), heavy]))
"""


def cpu_ms(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return used * 1000


def modules(args: list[str]) -> tuple[int, list[str]]:
    probe = PROBE.format(heavy=HEAVY)
    out = subprocess.run(
        [PYTHON, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    count, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    return count, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    runs: dict[str, list[float]] = {name: [] for name in [*BASELINES, *COMMANDS]}
    for _ in range(rounds):
        for name, argv in BASELINES.items():
            runs[name].append(cpu_ms(argv))
        for name, args in COMMANDS.items():
            runs[name].append(cpu_ms([PYTHON, "-m", "flowrunner", *args]))
    yaml = statistics.median(runs['python -c "import yaml"'])
    print(f"{'figure':28} {'CPU ms':>7} {'x import yaml':>14}  modules  heavy libraries loaded")
    for name, values in runs.items():
        median = statistics.median(values)
        line = f"{name:28} {median:7.0f} {median / yaml:14.2f}"
        if name in COMMANDS:
            count, heavy = modules(COMMANDS[name])
            line += f"  {count:7d}  {', '.join(heavy) or '-'}"
        print(line)
    print(f"({rounds} interleaved rounds, medians; CPU = user + system of the process)")


if __name__ == "__main__":
    main()
