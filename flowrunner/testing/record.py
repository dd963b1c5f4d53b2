"""``run --record FILE``: a real run written down as a test case.

:class:`Recording` wraps the real HTTP client and keeps every answer; :func:`append_case`
turns the run into a case (its answers as mocks, its outcome as ``expect``) and appends
it to a test file, creating the file when it does not exist. Every secret value the run
resolved is masked in the text written (:func:`flowrunner.secrets.scrub`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from flowrunner.errors import LoadError, UsageError
from flowrunner.execution.context import Inputs
from flowrunner.execution.record import ExecutionRecord
from flowrunner.net.request import HttpRequest
from flowrunner.plan.types import Plan
from flowrunner.secrets import scrub
from flowrunner.source.loader import load_text
from flowrunner.testing.mocks import step_targets, target_of

# flow keys never expected: the duration changes from run to run, and the raw answer
# repeats the recorded mock (whose JSON is re-encoded when replayed)
VOLATILE_KEYS = frozenset({"response_duration", "response_raw"})


@dataclass(slots=True)
class Recording:
    """An HTTP client that passes every request to ``inner`` and keeps the answers."""

    inner: Any  # flowrunner.net.http.HttpClient
    plan: Plan
    answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def send(self, request: HttpRequest) -> Any:
        """The inner client's answer, remembered as a mock answer of its target."""
        response = await self.inner.send(request)
        self.answers.append((target_of(request, step_targets(self.plan)), _answer(response)))
        return response


async def run_recorded(runner: Any, inputs: dict[str, Any], path: Path) -> ExecutionRecord:
    """Run once through ``runner`` (a :class:`flowrunner.runner.Runner`, entered) with
    its HTTP client recording, then append the run to the test file at ``path``."""
    plan = runner.plan
    services = runner.engine.services
    started_with = {**services.users.user_keys(), **inputs["user_keys"]}
    recording = services.client = Recording(services.client, plan)
    record: ExecutionRecord = await runner.run(Inputs(**inputs))
    case = build_case(record, inputs, started_with, recording.answers)
    append_case(path, plan.flow.name, case)
    return record


def _answer(response: Any) -> dict[str, Any]:
    if response.failure == "timeout":
        return {"error": "timeout"}
    if response.status is None or response.failure is not None:
        return {"error": "connection"}
    answer: dict[str, Any] = {"status": response.status}
    ctype = response.headers.get("Content-Type", "") if response.headers else ""
    text = response.body.decode("utf-8", errors="replace") if response.body else ""
    if text and ctype.startswith("application/json"):
        try:
            answer["json"] = json.loads(text)
            return answer
        except ValueError:
            pass
    if text:
        answer["body"] = text
        if ctype:
            answer["headers"] = {"Content-Type": ctype}
    return answer


def build_case(
    record: ExecutionRecord,
    inputs: dict[str, Any],
    user_keys: dict[str, Any],
    answers: list[tuple[str, dict[str, Any]]],
) -> dict[str, Any]:
    """The test case of a run: what it started from, what it was answered, what it did."""
    mocks: dict[str, list[dict[str, Any]]] = {}
    for target, answer in answers:
        mocks.setdefault(target, []).append(answer)
    expect: dict[str, Any] = {"status": record.status}
    if record.error is not None:
        expect["error"] = {"step": record.error["step"], "reason": record.error["reason"]}
    expect["steps"] = [s.id for s in record.steps if s.outcome != "skipped"]
    expect["keys"] = {k: v for k, v in record.keys.items() if k not in VOLATILE_KEYS}
    case: dict[str, Any] = {"name": f"recorded {datetime.now(UTC).isoformat(timespec='seconds')}"}
    # the name is completed with the case's number when it is appended
    for member in ("call", "keys"):
        if inputs.get(member):
            case[member] = inputs[member]
    if user_keys:
        case["user_keys"] = user_keys
    if mocks:
        case["mocks"] = {t: a[0] if len(a) == 1 else a for t, a in mocks.items()}
    case["expect"] = expect
    return case


def _dump(data: Any) -> str:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return scrub(text)


def check_target(path: Path, flow: str) -> tuple[str, int] | None:
    """The text and the number of cases of the test file at ``path``, or None when it
    does not exist. Raises :class:`UsageError` when a case cannot be appended to it: not
    a test file of ``flow``, or ``cases`` not its last key (cases are appended as text,
    keeping comments). Called before a recorded run as well, so that nothing runs for a
    file that cannot take it."""
    if not path.exists():
        return None
    try:
        old = path.read_text(encoding="utf-8")
        before = load_text(old, str(path)).data
    except (OSError, UnicodeDecodeError, LoadError) as exc:
        raise UsageError(f"{path}: cannot read the test file to append to ({exc})") from None
    if not isinstance(before, dict) or before.get("flow") != flow:
        raise UsageError(f"{path}: not a test file of flow '{flow}'")
    cases = before.get("cases")
    probe = {"name": "probe"}
    if not isinstance(cases, list) or _appended(old, probe, str(path)) != [*cases, probe]:
        raise UsageError(f"{path}: cannot append a case: its 'cases' list must come last")
    return old, len(cases)


def _append(old: str, case: dict[str, Any]) -> str:
    return old + ("" if old.endswith("\n") else "\n") + _indent(_dump([case]))


def _appended(old: str, case: dict[str, Any], file: str) -> Any:
    """The ``cases`` read back from ``old`` with ``case`` appended (None if unreadable)."""
    try:
        after = load_text(_append(old, case), file).data
    except LoadError:
        return None
    return after.get("cases") if isinstance(after, dict) else None


def append_case(path: Path, flow: str, case: dict[str, Any]) -> None:
    """Append ``case`` to the test file at ``path`` (created with ``flow`` if missing),
    named with its number. Raises :class:`UsageError` as :func:`check_target` does."""
    found = check_target(path, flow)
    if found is None:
        case = {**case, "name": f"{case['name']} (run 1)"}
        path.write_text(_dump({"flow": flow}) + "cases:\n" + _indent(_dump([case])), "utf-8")
        return
    old, count = found
    case = {**case, "name": f"{case['name']} (run {count + 1})"}
    path.write_text(_append(old, case), encoding="utf-8")


def _plain(case: dict[str, Any]) -> Any:
    """``case`` as it reads back from the text written (secrets masked)."""
    return load_text(_dump(case), "<case>").data


def _indent(block: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in block.splitlines(True))
