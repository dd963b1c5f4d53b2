"""Cold start of the commands a person or a pre-commit hook runs most, against
``python -c "import yaml"`` measured in the same run.

    python bench/cold_start.py            # 15 interleaved rounds
    python bench/cold_start.py --rounds 5

Each figure is the CPU time (user + system) of a fresh process, the median of the
rounds; the rounds interleave every command with the baseline, so load on a shared
machine falls on both alike. CPU time swings less than wall time here (see
bench/README.md). Also printed: how many modules each command imports, which of the
heavy libraries it loads (none of them should appear where the command does not need
it), each command's goal, and whether flowrunner's own modules were read from
bytecode caches (``__pycache__``) or compiled from source on every start (as with
``PYTHONDONTWRITEBYTECODE=1`` and an editable install): compiling costs roughly a
third of validate's figure, so compare runs made the same way.
"""

from __future__ import annotations

import argparse
import json
import os
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
# the goal of each command: at most this many times `import yaml`, or at most this many
# CPU milliseconds (the dry run)
GOALS: dict[str, tuple[float, str]] = {
    "--help": (2.0, "x"),
    "validate FILE": (5.0, "x"),
    "run FLOW --dry-run": (150.0, "ms"),
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


def met(name: str, median: float, yaml: float) -> str:
    limit, unit = GOALS[name]
    value = median / yaml if unit == "x" else median
    goal = f"<= {limit:g}x" if unit == "x" else f"<= {limit:g} ms"
    return f"{goal} ({'met' if value <= limit else 'NOT met'})"


def bytecode() -> str:
    """Where flowrunner's own modules come from in the measured processes."""
    cached = (ROOT / "flowrunner" / "__pycache__").is_dir()
    if cached:
        return "read from __pycache__ (bytecode cached)"
    why = " (PYTHONDONTWRITEBYTECODE is set)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    return "compiled from source on every start" + why


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
    print(
        f"{'figure':28} {'CPU ms':>7} {'x import yaml':>14}  {'goal':18}  modules  "
        "heavy libraries loaded"
    )
    for name, values in runs.items():
        median = statistics.median(values)
        line = f"{name:28} {median:7.0f} {median / yaml:14.2f}"
        if name in COMMANDS:
            count, heavy = modules(COMMANDS[name])
            line += f"  {met(name, median, yaml):18}  {count:7d}  {', '.join(heavy) or '-'}"
        print(line)
    print(f"({rounds} interleaved rounds, medians; CPU = user + system of the process)")
    print(f"flowrunner's modules: {bytecode()}")


if __name__ == "__main__":
    main()
