"""``operation: assign`` (General Assignment): set flow keys and user keys, in order."""

from __future__ import annotations

import time

from flowrunner.execution.context import Context, StepResult
from flowrunner.execution.record import StepTrace
from flowrunner.plan.types import CompiledStep


async def run_operation(step: CompiledStep, ctx: Context) -> StepResult:
    """Apply each assignment in order; a later one sees an earlier one.

    User keys are written through to the store at once (last write wins) and are
    visible to the rest of this execution.
    """
    began = time.perf_counter()
    variables = ctx.variables
    users = ctx.services.users
    for assignment in step.assignments:
        value = assignment.value.render(variables)
        if assignment.scope == "user":
            variables.user[assignment.name] = value
            if not ctx.services.dry_run:
                users.set_user_key(assignment.name, value)
        else:
            variables.flow[assignment.name] = value
    duration = (time.perf_counter() - began) * 1000
    return StepResult(
        trace=StepTrace(id=step.step.id, kind="operation", outcome="ok", duration_ms=duration)
    )
