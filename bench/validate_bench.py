"""How fast is ``flowrunner validate``? One command:

    python bench/validate_bench.py [--files 1000] [--repeat 5] [--cold-repeat 10]

It generates a project and N realistic flow files (6-15 steps each: assignments,
webhook calls, ``when`` conditions, jumps, plain references and Jinja templates, flow
and user keys) into a temporary folder, then measures, with the Python that runs it:

1. the whole project: ``flowrunner validate`` (schema and semantic checks; one process
   per CPU, as it runs by default on a project this size) and ``flowrunner validate
   --jobs 1`` (one process) against ``check-jsonschema --schemafile
   schemas/flow.schema.json <files>`` (the schema only, one process), run interleaved
   A B C A B C and compared by their medians;
2. cold start: ``flowrunner validate <one file>`` against ``python -c "import yaml"``,
   interleaved, medians;
3. whether ``validate`` imports aiohttp (it should not: ``python -X importtime``).

It installs nothing. It needs check-jsonschema, the ``bench`` extra of flowrunner:
``pip install -e '.[bench]'``. Wall-clock times on shared machines swing 2-3x between
runs, which is why every figure is a median of interleaved runs and the ratios matter
more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flowrunner.validate import MIN_FILES_PER_JOB, default_jobs

REPO = Path(__file__).resolve().parent.parent
FLOW_SCHEMA = REPO / "schemas" / "flow.schema.json"

PROJECT = """\
version: 1
http:
  allowlist: [shop.example.com, crm.example.com, calendar.example.com, events.example.com]
webhooks:
  shop:
    url: https://shop.example.com/api/flows
    body: json
    auth: {bearer: {token: {secret: SHOP_TOKEN}}}
    headers: {X-Team: ivr, X-Caller-Did: $call.did}
    timeout: 5
    methods:
      getOrderStatus:
        response: {order_status: status, order_id: order.id, eta: order.eta}
      cancelOrder:
        response: {cancelled: ok}
  crm:
    url: https://crm.example.com/flows
    body: form
    signing_secret: {secret: CRM_SIGNING_SECRET}
    methods:
      createLead:
        response: {lead_id: lead.id, owner: lead.owner.name}
      logCall:
  calendar:
    url: https://calendar.example.com/hooks/appointments
    method: GET
    auth: {basic: {username: flowrunner, password: {secret: CALENDAR_PASSWORD}}}
    methods:
      nextAppointment:
        response: {appointment_id: appointment.id, appointment_time: appointment.starts_at}
  events:
    url: https://events.example.com/call-completed
    default: true
    methods: {}
user_keys:
  calls_today: 0
  campaign: spring-sale
"""

METHODS = {
    ("shop", "getOrderStatus"): ("order_status", "order_id", "eta"),
    ("shop", "cancelOrder"): ("cancelled",),
    ("crm", "createLead"): ("lead_id", "owner"),
    ("crm", "logCall"): (),
    ("calendar", "nextAppointment"): ("appointment_id", "appointment_time"),
}
OUTCOME_KEYS = ("response_status", "response_status_code", "error_reason")


def _value(rng: random.Random, known: list[str]) -> str:
    key = rng.choice(known)
    return rng.choice(
        [
            f'"{{{{ $flow.key.{key} }}}}"',
            f"$flow.key.{key}",
            f'"Caller $call.cli, {key} is $flow.key.{key}."',
            '"{{ $call.cli[-4:] }}"',
            f"\"{{{{ $flow.key.{key} ~ ' for ' ~ $sys.flow }}}}\"",
            "\"{% if $call.direction == 'inbound' %}in{% else %}out{% endif %}\"",
            '"{{ $user.key.calls_today + 1 }}"',
            '"Costs $$5, id $sys.execution_id"',
            "$call.cli",
            str(rng.randint(0, 100)),
        ]
    )


def _assign(rng: random.Random, sid: str, known: list[str], new: list[str]) -> list[str]:
    lines = [f"  - id: {sid}", "    operation: assign", "    set:"]
    for name in new:
        lines.append(f"      {name}: {_value(rng, known)}")
        known.append(name)
    if rng.random() < 0.3:
        lines.append('      $user.key.calls_today: "{{ $user.key.calls_today + 1 }}"')
    return lines


def flow_text(index: int, rng: random.Random) -> str:
    """A realistic flow: declared keys, 6-15 steps, reads only of keys already set."""
    declared = ["attempts", "caller", "greeting"][: rng.randint(1, 3)]
    known = list(declared)
    count = rng.randint(6, 15)
    ids = [f"step-{i}" for i in range(count)]
    out = [f"flow: flow-{index:05d}", f"description: Generated flow number {index}."]
    out.append(f"on_complete: {rng.choice(['true', 'events', 'false'])}")
    out.append("keys:")
    out += [f"  {name}: {rng.choice(['0', 'null', 'none-yet'])}" for name in declared]
    out.append("steps:")
    webhook_steps: list[int] = []
    for i, sid in enumerate(ids):
        last = i == count - 1
        if not last and rng.random() < 0.4:
            (hook, method), mapped = rng.choice(list(METHODS.items()))
            step = [f"  - id: {sid}", f"    webhook: {hook}", f"    method: {method}"]
            step.append(f"    parameters: {rng.choice(['[call]', '[call, flow.key]'])}")
            step.append("    params:")
            step.append(f"      hint: {_value(rng, known)}")
            step.append("      asked_at: $sys.datetime")
            if rng.random() < 0.5:
                step.append(f"    on_failure: {ids[rng.randint(i + 1, count - 1)]}")
            known += [*OUTCOME_KEYS, *mapped]
            webhook_steps.append(i)
        elif not last and webhook_steps and rng.random() < 0.15:
            # a retry loop back to an earlier webhook call
            step = _assign(rng, sid, known, [f"tries_{i}"])
            step.insert(1, f'    when: "{{{{ $flow.key.{known[0]} == 0 }}}}"')
            step.append(f"    next: {ids[rng.choice(webhook_steps)]}")
        else:
            guard = rng.choice(known) if rng.random() < 0.3 else None
            step = _assign(rng, sid, known, [f"k{i}_{j}" for j in range(rng.randint(1, 4))])
            if guard is not None:
                step.insert(1, f'    when: "{{{{ $flow.key.{guard} is not none }}}}"')
        out += step
    return "\n".join(out) + "\n"


def generate(folder: Path, files: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    (folder / "flowrunner.yaml").write_text(PROJECT)
    (folder / "flows").mkdir()
    paths = []
    for index in range(files):
        path = folder / "flows" / f"flow-{index:05d}.yaml"
        path.write_text(flow_text(index, rng))
        paths.append(path)
    return paths


def tool(name: str) -> str | None:
    """The console script ``name`` beside this Python, else on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def timed(command: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    done = run(command, cwd)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        shown = " ".join(command[:4])
        sys.exit(f"failed ({done.returncode}): {shown} ...\n{done.stdout}{done.stderr}")
    return elapsed


def interleaved(*runs: Callable[[], float], repeat: int) -> list[float]:
    """Medians of ``runs`` run A B C A B C ... ``repeat`` times each."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run_once, samples in zip(runs, times, strict=True):
            samples.append(run_once())
    return [statistics.median(samples) for samples in times]


def imports_aiohttp(cwd: Path, flow: str) -> tuple[bool, int]:
    """(whether ``validate`` imports aiohttp, how many modules it imports)."""
    command = [sys.executable, "-X", "importtime", "-m", "flowrunner", "validate", flow]
    done = run(command, cwd)
    if done.returncode != 0:
        sys.exit(f"validate failed under -X importtime ({done.returncode}):\n{done.stdout}")
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    modules = [m for m in modules if m and not m.startswith("imported package")]
    return any(m.split(".")[0] == "aiohttp" for m in modules), len(modules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="flow files to generate")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each whole-project tool")
    parser.add_argument("--cold-repeat", type=int, default=10, help="runs of each cold start")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.repeat < 5 or args.cold_repeat < 10:
        parser.error("use --repeat 5 or more and --cold-repeat 10 or more")

    checker = tool("check-jsonschema")
    if checker is None:
        sys.exit(
            "check-jsonschema is not installed: it is the baseline of this benchmark.\n"
            "Install the bench extra into this environment: pip install -e '.[bench]'"
        )
    script = tool("flowrunner")
    flowrunner = [script] if script else [sys.executable, "-m", "flowrunner"]

    with tempfile.TemporaryDirectory(prefix="flowrunner-bench-") as tmp:
        root = Path(tmp)
        paths = generate(root, args.files, args.seed)
        files = [str(p.relative_to(root)) for p in paths]
        lines = sum(p.read_text().count("\n") for p in paths)
        print(f"{args.files} flows ({lines} lines) in {root}")

        validate = [*flowrunner, "validate"]
        schema_only = [checker, "--schemafile", str(FLOW_SCHEMA), *files]
        check = run(validate, root)
        if check.returncode != 0 or check.stdout:
            sys.exit(f"the generated flows do not validate cleanly:\n{check.stdout}{check.stderr}")
        timed(schema_only, root)  # warm up caches (check-jsonschema keeps one on disk)

        one_process = [*validate, "--jobs", "1"]
        whole = interleaved(
            lambda: timed(validate, root),
            lambda: timed(one_process, root),
            lambda: timed(schema_only, root),
            repeat=args.repeat,
        )
        one_file = [*flowrunner, "validate", files[0]]
        import_yaml = [sys.executable, "-c", "import yaml"]
        cold = interleaved(
            lambda: timed(one_file, root), lambda: timed(import_yaml, root), repeat=args.cold_repeat
        )
        aiohttp, modules = imports_aiohttp(root, files[0])

    width = 58
    print()
    print(f"{'measure':<{width}} {'median':>10}")
    print(f"{'-' * width} {'-' * 10}")
    rows = [
        (f"flowrunner validate, whole project ({args.repeat} runs)", whole[0]),
        (f"flowrunner validate --jobs 1, whole project ({args.repeat} runs)", whole[1]),
        (f"check-jsonschema, flow schema only ({args.repeat} runs)", whole[2]),
        (f"flowrunner validate, one file, cold ({args.cold_repeat} runs)", cold[0]),
        (f'python -c "import yaml" ({args.cold_repeat} runs)', cold[1]),
    ]
    for label, seconds in rows:
        print(f"{label:<{width}} {seconds * 1000:>8.0f} ms")
    print()
    per_flow = whole[1] / args.files * 1000
    print(
        f"whole project: flowrunner / check-jsonschema = {whole[0] / whole[2]:.2f}x "
        f"({default_jobs(args.files)} processes: one per CPU, each with "
        f"{MIN_FILES_PER_JOB} files or more)"
    )
    print(f"one process:   flowrunner --jobs 1 / check-jsonschema = {whole[1] / whole[2]:.2f}x "
          f"({per_flow:.2f} ms per flow)")  # fmt: skip
    print(f"cold start:    flowrunner validate / import yaml = {cold[0] / cold[1]:.2f}x")
    verdict = "yes (it should not)" if aiohttp else "no"
    print(f"validate imports aiohttp: {verdict} ({modules} modules imported)")
    if aiohttp:
        sys.exit(1)


if __name__ == "__main__":
    main()
