"""Static checks over a flow's control flow: keys read before any path sets them,
unreachable steps, unknown ``$sys`` names.

A forward "may be set" analysis: a flow key may be read at a step when at least one
path from the first step to it sets the key (declared ``keys``, an assignment, a
method's response mapping, or the outcome keys every webhook call sets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowrunner.source import model as m
from flowrunner.templating import Compiled, Reference, offset_mark, suggest

if TYPE_CHECKING:
    from flowrunner.plan.problems import Problems
    from flowrunner.plan.types import CompiledStep, Plan

OUTCOME_KEYS = (
    "response_status",
    "response_status_code",
    "response_status_type",
    "error_reason",
    "response_duration",
    "response_raw",
    "response_error",
)
SYS_NAMES = ("datetime", "execution_id", "flow")
ANY_KEY = "*"  # in a set of keys: every key may be set (not a valid key name)


def _edges(step: CompiledStep, count: int) -> list[tuple[int, frozenset[str], bool]]:
    """``(target, keys set on the way, ran)`` for every way out of ``step``."""
    end = count  # a pseudo-index for the end of the execution
    nxt = step.next_index if step.next_index >= 0 else end
    seq = step.index + 1
    out: list[tuple[int, frozenset[str], bool]] = []
    if step.step.when is not None and step.step.when is not True:
        out.append((seq, frozenset(), False))
    if step.step.when is False:
        return out
    if isinstance(step.step, m.OperationStep):
        sets = frozenset(a.name for a in step.assignments if a.scope == "flow")
        out.append((nxt, sets, True))
        return out
    # an unknown method (already an error) may map any key: assume it does
    mapped = frozenset(step.method.response) if step.method else frozenset({ANY_KEY})
    out.append((nxt, frozenset(OUTCOME_KEYS) | mapped, True))
    fail = end if step.failure_index is None or step.failure_index < 0 else step.failure_index
    out.append((fail, frozenset(OUTCOME_KEYS), True))
    return out


def reaching_keys(plan: Plan) -> list[frozenset[str] | None]:
    """For each step, the flow keys that may be set when it starts (None: unreachable)."""
    count = len(plan.steps)
    state: list[frozenset[str] | None] = [None] * (count + 1)
    if count == 0:
        return []
    state[0] = frozenset(plan.flow.keys)
    work = [0]
    while work:
        i = work.pop()
        current = state[i]
        if i >= count or current is None:
            continue
        for target, sets, _ran in _edges(plan.steps[i], count):
            merged = current | sets
            old = state[target]
            if old is None or not merged <= old:
                state[target] = merged if old is None else old | merged
                work.append(target)
    return state[:count]


def _setters(plan: Plan) -> dict[str, str]:
    """Flow key -> the first step that sets it (outcome keys: the first webhook step)."""
    setters: dict[str, str] = {}
    for step in plan.steps:
        names = [a.name for a in step.assignments if a.scope == "flow"]
        if step.webhook is not None:
            names += list(OUTCOME_KEYS)
            names += list(step.method.response) if step.method is not None else []
        for name in names:
            setters.setdefault(name, step.step.id)
    return setters


def check_flow_keys(plan: Plan, problems: Problems) -> None:
    """Report reads of never-set keys, unknown ``$sys`` names, unreachable steps.

    Where the flow already has an error that blinds the analysis, its echoes are not
    reported: no unreachable-step after a jump to an unknown step, no undefined-key
    after a webhook step whose method (and so its response mapping) is unknown.
    """
    reaching = reaching_keys(plan)
    setters = _setters(plan)
    broken_jumps = any(d.rule == "unknown-step" for d in problems.items)
    for step, keys in zip(plan.steps, reaching, strict=True):
        if keys is None:
            if broken_jumps:
                continue
            problems.add(
                step.step.path + ("id",),
                "unreachable-step",
                f"step '{step.step.id}' can never run (no step jumps or falls through to it)",
                warning=True,
            )
            continue
        for path, compiled, available in _reads(step, keys):
            for ref in compiled.references:
                _check_ref(ref, path, step.step.id, available, setters, problems)


def _reads(
    step: CompiledStep, keys: frozenset[str]
) -> list[tuple[tuple[str | int, ...], Compiled, frozenset[str]]]:
    base = step.step.path
    reads: list[tuple[tuple[str | int, ...], Compiled, frozenset[str]]] = []
    if step.when is not None:
        reads.append((base + ("when",), step.when, keys))
    available = keys
    for a in step.assignments:
        reads.append((base + ("set", a.target), a.value, available))
        if a.scope == "flow":
            available = available | {a.name}
    for name, compiled in step.params.items():
        reads.append((base + ("params", name), compiled, keys))
    return reads


def _check_ref(
    ref: Reference,
    path: tuple[str | int, ...],
    step_id: str,
    available: frozenset[str],
    setters: dict[str, str],
    problems: Problems,
) -> None:
    name = ref.path[0]
    if ref.scope == "flow.key" and name not in available and ANY_KEY not in available:
        hint = suggest(name, available - {ANY_KEY})
        if setters.get(name) == step_id:
            extra = " (this step sets it only after reading it)"
        elif name in setters:
            extra = f" (step '{setters[name]}' sets it, but on no path that reaches this step)"
        elif hint:
            extra = f" (did you mean $flow.key.{hint}?)"
        else:
            extra = ""
        message = f"step '{step_id}': undefined variable $flow.key.{name}{extra}"
    elif ref.scope == "sys" and ref.path[0] not in SYS_NAMES:
        hint = suggest(ref.path[0], SYS_NAMES)
        extra = f" (did you mean $sys.{hint}?)" if hint else f" (known: {', '.join(SYS_NAMES)})"
        message = f"step '{step_id}': unknown variable $sys.{ref.path[0]}{extra}"
    else:
        return
    rule = "undefined-key" if ref.scope == "flow.key" else "unknown-sys"
    doc = problems.doc
    raw = _value_at(doc.data, path)
    mark = doc.mark(path)
    if isinstance(raw, str):
        mark = offset_mark(mark, raw, ref.offset)
    problems.at(mark, rule, message)


def _value_at(data: object, path: tuple[str | int, ...]) -> object:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data
