"""``operation: assign`` (General Assignment): set flow keys and user keys, in order."""

from __future__ import annotations

import time
from typing import Any

from flowrunner.compiler import CompiledStep
from flowrunner.engine import Context, StepResult
from flowrunner.result import StepTrace

_USER_SCOPE = "user.key"


async def run_operation(step: CompiledStep, ctx: Context) -> StepResult:
    """Apply each assignment in order; a later one sees an earlier one.

    A step that writes user keys reads the ones it touches (writes, or reads in its
    templates) afresh and writes them back in one write transaction of the store:
    ``$user.key.n: "{{ $user.key.n + 1 }}"`` run by many processes at once loses no
    increment. The new values are visible to the rest of this execution.
    """
    began = time.perf_counter()
    touched = user_keys_touched(step)
    if touched and not ctx.services.dry_run:
        ctx.services.users.update_user_keys(touched, lambda stored: _apply(step, ctx, stored))
        ctx.pinned.difference_update(touched)
    else:
        _apply(step, ctx, {})
    duration = (time.perf_counter() - began) * 1000
    return StepResult(
        trace=StepTrace(id=step.step.id, kind="operation", outcome="ok", duration_ms=duration)
    )


def user_keys_touched(step: CompiledStep) -> list[str]:
    """The user keys a step writes, and those its templates read when it writes any."""
    written = [a.name for a in step.assignments if a.scope == "user"]
    if not written:
        return []
    read = (
        ref.path[0]
        for a in step.assignments
        for ref in a.value.references
        if ref.scope == _USER_SCOPE and ref.path
    )
    return list(dict.fromkeys([*written, *read]))


def _apply(step: CompiledStep, ctx: Context, stored: dict[str, Any]) -> dict[str, Any]:
    """Run the assignments over the stored user keys (inputs given for this execution
    win until it writes them); returns the user keys written."""
    variables = ctx.variables
    variables.user.update({k: v for k, v in stored.items() if k not in ctx.pinned})
    written: dict[str, Any] = {}
    for assignment in step.assignments:
        value = assignment.value.render(variables)
        if assignment.scope == "user":
            variables.user[assignment.name] = written[assignment.name] = value
        else:
            variables.flow[assignment.name] = value
    return written
