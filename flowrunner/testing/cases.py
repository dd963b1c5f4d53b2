"""Run test cases: the real engine against mocked webhooks, then the expectations.

Each case starts from a store of user keys seeded by the project's ``user_keys`` and
the case's own over them, runs the flow once with a :class:`MockTransport` in place of
the HTTP client, and captures the on-complete payload instead of pushing it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrunner.errors import Diagnostic, InvalidProject, UsageError
from flowrunner.execution.context import Inputs, MemoryUserKeys, Services
from flowrunner.execution.engine import Engine
from flowrunner.execution.record import ExecutionRecord
from flowrunner.oncomplete import payload as oncomplete
from flowrunner.plan.types import Plan
from flowrunner.project import (
    FLOWS_DIR,
    TEST_SUFFIX,
    check_flow_doc,
    flow_files,
    load_doc,
    load_project,
)
from flowrunner.testing.match import mismatch
from flowrunner.testing.mocks import MockTransport, TestSecrets
from flowrunner.testing.suite import Case, Suite, load_suite, test_files


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    """The outcome of one case; ``failures`` holds one message per failed check."""

    file: str
    case: str
    line: int
    flow: str
    seconds: float
    failures: tuple[str, ...] = ()
    record: ExecutionRecord | None = field(default=None, compare=False, repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one execution of a case produced, for the expectations to look at."""

    record: ExecutionRecord
    user_keys: dict[str, Any]
    requests: list[dict[str, Any]]
    payload: dict[str, Any] | None


def _targets(paths: list[str], root: Path) -> list[Path]:
    if not paths:
        return list(test_files(root))
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(test_files(path))
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"{raw}: no such file or folder")
    return out


def load_suites(paths: list[str], root: Path) -> list[Suite]:
    """The suites of the given files and folders (default: every test file of the
    project). Raises :class:`InvalidProject` with every problem when one is invalid,
    :class:`UsageError` when a path does not exist or there is no test file."""
    targets = _targets(paths, root)
    if not targets:
        raise UsageError(f"no *{TEST_SUFFIX} files found")
    cproject, diags = load_project(root)
    suites: list[Suite] = []
    for path in targets:
        suite, more = load_suite(path, root, cproject)
        diags += more
        if suite is not None:
            suites.append(suite)
    if any(d.severity == "error" for d in diags) or cproject is None:
        raise InvalidProject(sorted(set(diags), key=Diagnostic.sort_key))
    return suites


def project_plans(root: Path) -> list[Plan]:
    """The plans of every valid flow of the project (for coverage: an untested flow
    counts too); flows with errors are left to ``validate``."""
    cproject, _ = load_project(root)
    if cproject is None:
        return []
    plans = []
    for path in flow_files(root / FLOWS_DIR):
        doc, _ = load_doc(path)
        plan = check_flow_doc(doc, cproject)[0] if doc is not None else None
        if plan is not None:
            plans.append(plan)
    return plans


def run_suites(
    suites: list[Suite], on_result: Callable[[CaseResult], None] | None = None
) -> list[CaseResult]:
    """Run every case of ``suites`` in order; ``on_result`` sees each result as it comes."""

    async def go() -> list[CaseResult]:
        results = []
        for suite in suites:
            for case in suite.cases:
                result = await run_case(suite, case)
                if on_result is not None:
                    on_result(result)
                results.append(result)
        return results

    return asyncio.run(go())


async def execute(suite: Suite, case: Case) -> Outcome:
    """Run ``case`` once and return what happened."""
    plan = suite.plan
    project = plan.project.project
    users = MemoryUserKeys({**project.user_keys, **case.user_keys})
    transport = MockTransport(plan, case.mocks)
    services = Services(client=transport, secrets=TestSecrets(suite.secrets), users=users)
    record = await Engine(plan, services).execute(Inputs(call=case.call, keys=case.keys))
    payload = oncomplete.build_payload(record) if plan.on_complete is not None else None
    outcome = Outcome(
        record=record,
        user_keys=users.user_keys(),
        requests=[r.as_dict() for r in transport.sent],
        payload=payload,
    )
    if transport.unmocked:
        raise _Unmocked(transport.unmocked, outcome)
    return outcome


class _Unmocked(Exception):
    def __init__(self, targets: list[str], outcome: Outcome) -> None:
        super().__init__(targets)
        self.targets = targets
        self.outcome = outcome


async def run_case(suite: Suite, case: Case) -> CaseResult:
    """Run ``case`` and check its expectations."""
    began = time.perf_counter()
    failures: list[str] = []
    try:
        outcome = await execute(suite, case)
    except _Unmocked as exc:
        outcome = exc.outcome
        failures += [f"no mock for {target}" for target in dict.fromkeys(exc.targets)]
    else:
        failures += check(suite, case, outcome)
    return CaseResult(
        file=suite.file,
        case=case.name,
        line=case.line,
        flow=suite.plan.flow.name,
        seconds=time.perf_counter() - began,
        failures=tuple(failures),
        record=outcome.record,
    )


def _actual(outcome: Outcome) -> dict[str, Any]:
    record = outcome.record
    return {
        "status": record.status,
        "error": record.error,
        "steps": [s.id for s in record.steps if s.outcome != "skipped"],
        "keys": record.keys,
        "user_keys": outcome.user_keys,
        "requests": outcome.requests,
        "on_complete": outcome.payload,
    }


def expectations(case: Case) -> dict[str, Any]:
    """The case's ``expect``, with its defaults: a case that expects no ``error`` and
    states no ``status`` expects the execution to complete."""
    expect = dict(case.expect)
    if "status" not in expect and not expect.get("error"):
        expect = {"status": "COMPLETED", **expect}
    if isinstance(expect.get("requests"), list):
        expect["requests"] = [_lower_headers(r) for r in expect["requests"]]
    return expect


def _lower_headers(request: Any) -> Any:
    if isinstance(request, dict) and isinstance(request.get("headers"), dict):
        return {**request, "headers": {str(k).lower(): v for k, v in request["headers"].items()}}
    return request


def check(suite: Suite, case: Case, outcome: Outcome) -> list[str]:
    """One message per expectation member that does not match."""
    actual = _actual(outcome)
    failures = []
    for member, want in expectations(case).items():
        got = actual[member]
        if want is None:
            found = None if got is None else mismatch(None, got, (member,))
        else:
            found = mismatch(want, got, (member,))
        if found is None:
            continue
        line = (
            suite.line_of(case.path("expect", *found.path)) if member in case.expect else case.line
        )
        message = f"line {line}: expect." + found.describe()
        if member == "status" and outcome.record.error:
            err = outcome.record.error
            message += f" (step '{err['step']}': {err['reason']}: {err['message']})"
        failures.append(message)
    return failures
