"""Load and check one test file: the schema, then what a schema cannot see.

:func:`load_suite` returns the file's cases ready to run, with the plan of the flow they
test, and every problem found as a :class:`~flowrunner.errors.Diagnostic` (rules
``schema``, ``test-flow``, ``test-mock``, ``test-step``, ``duplicate-case``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrunner.document import Document
from flowrunner.errors import Diagnostic
from flowrunner.jsoncodec import dumps_strict
from flowrunner.plan.types import CompiledProject, Plan
from flowrunner.project import (
    FLOWS_DIR,
    PROJECT_FILE,
    TEST_SUFFIX,
    YAML_SUFFIXES,
    check_flow_doc,
    flow_files,
    load_doc,
)
from flowrunner.source import model as m
from flowrunner.source import schema
from flowrunner.templating.references import suggest


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One mocked answer: a status with a body and headers, or no answer at all."""

    status: int = 200
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # "timeout" | "connection"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One test case, as written; ``index`` is its position under ``cases``."""

    name: str
    index: int
    line: int
    call: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, Any] = field(default_factory=dict)
    user_keys: dict[str, Any] = field(default_factory=dict)
    mocks: dict[str, tuple[Answer, ...]] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)

    def path(self, *more: str | int) -> tuple[str | int, ...]:
        """The document path of this case (or of something inside it)."""
        return ("cases", self.index, *more)


@dataclass(frozen=True, slots=True, kw_only=True)
class Suite:
    """A loaded test file: its document, the plan under test, secrets and cases."""

    doc: Document
    plan: Plan
    secrets: dict[str, str]
    cases: tuple[Case, ...]

    @property
    def file(self) -> str:
        return self.doc.file

    def line_of(self, path: tuple[str | int, ...]) -> int:
        """The line of the value at ``path`` (or of its nearest ancestor)."""
        return self.doc.mark(path).line


_SKIPPED = frozenset({"node_modules", "site-packages", "__pycache__"})


def test_files(folder: Path) -> Iterator[Path]:
    """Every ``*.test.yaml`` below ``folder``, sorted. Not searched: hidden folders,
    ``node_modules``, virtualenvs, and folders of another project (below ``folder``,
    holding their own flowrunner.yaml)."""
    found = []
    for top, dirs, names in os.walk(folder):
        here = Path(top)
        dirs[:] = [d for d in dirs if _searched(here / d)]
        found += [here / n for n in names if n.endswith(TEST_SUFFIX) and (here / n).is_file()]
    yield from sorted(found)


def _searched(folder: Path) -> bool:
    name = folder.name
    if name.startswith(".") or name in _SKIPPED:
        return False
    return not (folder / PROJECT_FILE).is_file() and not (folder / "pyvenv.cfg").is_file()


class _Problems:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.items: list[Diagnostic] = []

    def add(self, path: tuple[str | int, ...], rule: str, message: str, key: bool = False) -> None:
        mark = self.doc.key_mark(path) if key else self.doc.mark(path)
        self.items.append(
            Diagnostic(
                file=self.doc.file, line=mark.line, column=mark.column, rule=rule, message=message
            )
        )


def load_suite(
    path: Path, root: Path, cproject: CompiledProject | None
) -> tuple[Suite | None, list[Diagnostic]]:
    """The test file at ``path`` and its problems; the suite is None when it cannot run
    (an error in the file, its flow or the project)."""
    doc, diags = load_doc(path)
    if doc is None:
        return None, diags
    return check_suite_doc(doc, path, root, cproject)


def check_suite_doc(
    doc: Document, path: Path, root: Path, cproject: CompiledProject | None
) -> tuple[Suite | None, list[Diagnostic]]:
    """Check a loaded test document (see :func:`load_suite`)."""
    diags = list(doc.problems)
    found = schema.check(doc.data, "test", doc.file, doc.mark, doc.key_mark)
    taken = {(d.line, d.column) for d in diags if d.severity == "error"}
    diags += [d for d in found if (d.line, d.column) not in taken]
    if any(d.severity == "error" for d in diags) or cproject is None:
        return None, diags
    problems = _Problems(doc)
    plan = _plan(doc, path, root, cproject, problems)
    cases = tuple(_case(doc, i, raw) for i, raw in enumerate(doc.data["cases"]))
    if plan is not None:
        _check_cases(cases, plan, problems)
    diags += problems.items
    if plan is None or any(d.severity == "error" for d in diags):
        return None, diags
    secrets = dict(doc.data.get("secrets") or {})
    return Suite(doc=doc, plan=plan, secrets=secrets, cases=cases), diags


def _plan(
    doc: Document, path: Path, root: Path, cproject: CompiledProject, problems: _Problems
) -> Plan | None:
    ref = doc.data["flow"]
    flow_doc = _flow_doc(ref, path, root)
    if flow_doc is None:
        problems.add(("flow",), "test-flow", f"no flow '{ref}' in the project")
        return None
    plan, flow_diags = check_flow_doc(flow_doc, cproject)
    if plan is None or any(d.severity == "error" for d in flow_diags):
        problems.add(("flow",), "test-flow", f"flow '{ref}' has errors ({flow_doc.file})")
        return None
    return plan


def _flow_doc(ref: str, path: Path, root: Path) -> Document | None:
    """The document of flow ``ref``: a path relative to the test file, or a flow name."""
    if ref.endswith(YAML_SUFFIXES) or "/" in ref:
        candidate = (path.parent / ref).resolve()
        return load_doc(candidate)[0] if candidate.is_file() else None
    for suffix in YAML_SUFFIXES:  # the usual place first: flows/<name>.yaml
        direct = root / FLOWS_DIR / f"{ref}{suffix}"
        doc = load_doc(direct)[0] if direct.is_file() else None
        if doc is not None and _name(doc) == ref:
            return doc
    for file in flow_files(root / FLOWS_DIR):
        doc = load_doc(file)[0]
        if doc is not None and _name(doc) == ref:
            return doc
    return None


def _name(doc: Document) -> str | None:
    data = doc.data
    name = data.get("flow") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _case(doc: Document, index: int, raw: dict[str, Any]) -> Case:
    mocks = {
        target: tuple(_answer(a) for a in (spec if isinstance(spec, list) else [spec]))
        for target, spec in (raw.get("mocks") or {}).items()
    }
    return Case(
        name=raw["name"],
        index=index,
        line=doc.mark(("cases", index)).line,
        call=dict(raw.get("call") or {}),
        keys=dict(raw.get("keys") or {}),
        user_keys=dict(raw.get("user_keys") or {}),
        mocks=mocks,
        expect=dict(raw.get("expect") or {}),
    )


def _answer(spec: dict[str, Any]) -> Answer:
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    body: bytes | None = None
    if "json" in spec:
        body = dumps_strict(spec["json"])
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in spec:
        body = spec["body"].encode()
    return Answer(
        status=spec.get("status", 200), body=body, headers=headers, error=spec.get("error")
    )


def webhook_targets(plan: Plan) -> dict[str, m.Webhook]:
    """Every webhook of the plan's project, by name."""
    return {name: cw.webhook for name, cw in plan.project.webhooks.items()}


def _check_cases(cases: tuple[Case, ...], plan: Plan, problems: _Problems) -> None:
    hooks = webhook_targets(plan)
    step_ids = {s.step.id for s in plan.steps}
    seen: dict[str, int] = {}
    for case in cases:
        if case.name in seen:
            message = f"case name '{case.name}' is already used on line {seen[case.name]}"
            problems.add(case.path("name"), "duplicate-case", message)
        seen.setdefault(case.name, case.line)
        for target in case.mocks:
            _check_target(target, hooks, problems, case.path("mocks", target), key=True)
        for i, step_id in enumerate(case.expect.get("steps") or []):
            _check_step(step_id, step_ids, problems, case.path("expect", "steps", i))
        error = case.expect.get("error")
        if isinstance(error, dict) and isinstance(error.get("step"), str):
            _check_step(error["step"], step_ids, problems, case.path("expect", "error", "step"))
        for i, request in enumerate(case.expect.get("requests") or []):
            if "to" in request:
                path = case.path("expect", "requests", i, "to")
                _check_target(request["to"], hooks, problems, path)


def _check_target(
    target: str,
    hooks: dict[str, m.Webhook],
    problems: _Problems,
    path: tuple[str | int, ...],
    key: bool = False,
) -> None:
    name, _, method = target.partition(".")
    hook = hooks.get(name)
    if hook is None:
        message = f"no webhook '{name}' in the project{_hint(name, hooks, 'webhooks')}"
        problems.add(path, "test-mock", message, key)
    elif method and method not in hook.methods:
        hint = _hint(method, hook.methods, "methods")
        problems.add(path, "test-mock", f"webhook '{name}' has no method '{method}'{hint}", key)


def _check_step(
    step_id: Any, step_ids: set[str], problems: _Problems, path: tuple[str | int, ...]
) -> None:
    if step_id not in step_ids:
        hint = _hint(str(step_id), step_ids, "steps")
        problems.add(path, "test-step", f"the flow has no step '{step_id}'{hint}")


def _hint(name: str, known: Iterable[str], noun: str) -> str:
    """`` (did you mean 'x'?)`` when a known name is close, else the list of them."""
    names = sorted(known)
    found = suggest(name, names)
    if found:
        return f" (did you mean '{found}'?)"
    return f" ({noun}: {', '.join(names) or 'none'})"
