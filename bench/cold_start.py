"""Cold start of the commands a person or a pre-commit hook runs most, against
``python -c "import yaml"`` measured in the same run.

    python bench/cold_start.py              # 15 interleaved rounds, bytecode cached
    python bench/cold_start.py --rounds 5
    python bench/cold_start.py --no-cache   # flowrunner compiled from source every start

Each figure is the CPU time (user + system) of a fresh process, the median of the
rounds; the rounds interleave every command with the baseline, so load on a shared
machine falls on both alike. CPU time swings less than wall time here (see
bench/README.md). Also printed: how many modules each command imports, which of the
heavy libraries it loads (none of them should appear where the command does not need
it) and each command's goal.

By default it measures what a user's ``pip install`` gives: flowrunner's modules read
from bytecode caches. It first writes them (``python -m compileall -q flowrunner``,
which also refreshes any stale one) and checks that every module has a fresh cache.
``--no-cache`` measures an editable install under ``PYTHONDONTWRITEBYTECODE=1``: it
deletes every ``__pycache__`` folder of flowrunner first, runs each process with
``PYTHONDONTWRITEBYTECODE=1`` and checks afterwards that none was written, so every
start compiles flowrunner's ~40 modules from source (30-50 ms more per figure). Either
way, caches left over from earlier work cannot change what is measured.

``validate FILE (no {{ }})`` checks a flow that uses $-references but no Jinja template
(written to a temporary folder, validated against the example project): such a flow
needs no jinja2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flowrunner"
PYTHON = sys.executable
HEAVY = ("aiohttp", "asyncio", "jinja2", "jsonschema", "sqlite3", "yaml", "click")

# a flow of the example project's shape with $-references only: no Jinja template
PLAIN_FLOW = """\
flow: plain-order-status
description: Order status without templates.
keys:
  order_status: null
steps:
  - id: remember
    operation: assign
    set:
      caller: $call.cli
      $user.key.last_caller: $call.cli
  - id: lookup
    webhook: shop
    method: getOrderStatus
    parameters: [call, flow.key]
    params:
      asked_at: $sys.datetime
    on_failure: sorry
  - id: tell
    operation: assign
    set:
      message: "Order $flow.key.order_id is $flow.key.order_status."
    next: end
  - id: sorry
    operation: assign
    set:
      message: "Sorry, we could not find your order (error $flow.key.error_reason)."
"""
PLAIN = Path(tempfile.gettempdir()) / f"flowrunner-cold-start-{os.getpid()}" / "plain.yaml"

COMMANDS = {
    "--help": ["--help"],
    "validate FILE": ["validate", "flows/order-status.yaml"],
    "validate FILE (no {{ }})": ["validate", str(PLAIN)],
    "run FLOW --dry-run": [
        "run", "order-status", "--dry-run", "--call", "cli=+15551234567",
        "--call", "did=+15550000001",
    ],
}  # fmt: skip
# the exit code each command must end with (every one runs to its end)
EXIT_CODES: dict[str, int] = {}
# the goal of each command: at most this many times `import yaml`, or at most this many
# CPU milliseconds (the dry run)
GOALS: dict[str, tuple[float, str]] = {
    "--help": (2.0, "x"),
    "validate FILE": (5.0, "x"),
    "validate FILE (no {{ }})": (5.0, "x"),
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


def cpu_ms(argv: list[str], env: dict[str, str], expect: int = 0) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = subprocess.run(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).returncode
    if code != expect:
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return used * 1000


def modules(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    probe = PROBE.format(heavy=HEAVY)
    out = subprocess.run(
        [PYTHON, "-c", probe, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    count, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    return count, heavy


def met(name: str, median: float, yaml: float) -> str:
    limit, unit = GOALS[name]
    value = median / yaml if unit == "x" else median
    goal = f"<= {limit:g}x" if unit == "x" else f"<= {limit:g} ms"
    return f"{goal} ({'met' if value <= limit else 'NOT met'})"


def caches() -> list[Path]:
    return sorted(PACKAGE.rglob("__pycache__"))


def fresh_caches() -> bool:
    """Whether every module of flowrunner has a bytecode cache as new as its source."""
    for source in PACKAGE.rglob("*.py"):
        cache = Path(importlib.util.cache_from_source(str(source)))
        if not cache.is_file() or cache.stat().st_mtime < source.stat().st_mtime:
            return False
    return True


def prepare(no_cache: bool) -> dict[str, str]:
    """Put flowrunner's bytecode caches in the state measured; the children's environment."""
    env = dict(os.environ)
    if no_cache:
        for folder in caches():
            shutil.rmtree(folder)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(PACKAGE)], check=True)
        if not fresh_caches():
            raise SystemExit("compileall left a flowrunner module without a fresh cache")
    PLAIN.parent.mkdir(exist_ok=True)
    PLAIN.write_text(PLAIN_FLOW, encoding="utf-8")
    return env


def bytecode(no_cache: bool) -> str:
    """Where flowrunner's own modules came from in the measured processes."""
    if no_cache:
        if caches():
            raise SystemExit("a __pycache__ folder appeared in flowrunner during the run")
        return "compiled from source on every start (no __pycache__, PYTHONDONTWRITEBYTECODE=1)"
    if not fresh_caches():
        raise SystemExit("a flowrunner module changed during the run")
    return "read from __pycache__ (written by compileall first, as pip install does)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="delete flowrunner's __pycache__ folders and compile it from source every start",
    )
    options = parser.parse_args()
    rounds, no_cache = options.rounds, options.no_cache
    env = prepare(no_cache)
    try:
        report(rounds, no_cache, env)
    finally:
        shutil.rmtree(PLAIN.parent, ignore_errors=True)


def report(rounds: int, no_cache: bool, env: dict[str, str]) -> None:
    runs: dict[str, list[float]] = {name: [] for name in [*BASELINES, *COMMANDS]}
    for _ in range(rounds):
        for name, argv in BASELINES.items():
            runs[name].append(cpu_ms(argv, env))
        for name, args in COMMANDS.items():
            argv = [PYTHON, "-m", "flowrunner", *args]
            runs[name].append(cpu_ms(argv, env, EXIT_CODES.get(name, 0)))
    yaml = statistics.median(runs['python -c "import yaml"'])
    print(
        f"{'figure':28} {'CPU ms':>7} {'x import yaml':>14}  {'goal':18}  modules  "
        "heavy libraries loaded"
    )
    for name, values in runs.items():
        median = statistics.median(values)
        line = f"{name:28} {median:7.0f} {median / yaml:14.2f}"
        if name in COMMANDS:
            count, heavy = modules(COMMANDS[name], env)
            line += f"  {met(name, median, yaml):18}  {count:7d}  {', '.join(heavy) or '-'}"
        print(line)
    print(f"({rounds} interleaved rounds, medians; CPU = user + system of the process)")
    print(f"flowrunner's modules: {bytecode(no_cache)}")


if __name__ == "__main__":
    main()
