"""The async interpreter: runs one execution of a compiled plan.

Steps run in order; ``when`` skips, ``next`` and ``on_failure`` jump; a failed step
without ``on_failure`` ends the execution FAILED; at most :data:`STEP_LIMIT` steps run.
Step kinds are handled by the functions in :data:`HANDLERS`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flowrunner.errors import SecretError, StepFailure, TemplateError
from flowrunner.execution.context import (
    Context,
    Handler,
    Inputs,
    Services,
    StepResult,
    SysValues,
    truthy,
)
from flowrunner.execution.record import ExecutionRecord, StepTrace
from flowrunner.execution.steps.operation import run_operation
from flowrunner.execution.steps.webhook import run_webhook
from flowrunner.plan.types import END, CompiledStep, Plan
from flowrunner.source import model as m
from flowrunner.templating import Variables

STEP_LIMIT = 1000

# one handler per step kind; a new kind adds its model class and its handler here
HANDLERS: dict[type, Handler] = {m.OperationStep: run_operation, m.WebhookStep: run_webhook}


class Engine:
    """Runs executions of one plan; reusable across many executions (and concurrently)."""

    def __init__(self, plan: Plan, services: Services) -> None:
        self.plan = plan
        self.services = services
        self.handlers = HANDLERS

    def _context(self, inputs: Inputs) -> Context:
        execution_id = inputs.execution_id or str(uuid.uuid4())
        users = self.services.users.user_keys()
        users.update(inputs.user_keys)
        flow_keys = dict(self.plan.flow.keys)
        flow_keys.update(inputs.keys)
        sys_vars = SysValues(execution_id, self.plan.flow.name)
        variables = Variables(call=inputs.call, flow=flow_keys, user=users, sys=sys_vars)
        return Context(
            execution_id=execution_id,
            plan=self.plan,
            variables=variables,
            services=self.services,
            pinned=set(inputs.user_keys),
        )

    async def execute(self, inputs: Inputs) -> ExecutionRecord:
        """Run the flow once; never raises for a step's failure (it is in the record)."""
        started = datetime.now(UTC)
        ctx = self._context(inputs)
        traces: list[StepTrace] = []
        failure = await self._loop(ctx, traces)
        return ExecutionRecord(
            execution_id=ctx.execution_id,
            flow=self.plan.flow.name,
            status="FAILED" if failure else "COMPLETED",
            started_at=started,
            ended_at=datetime.now(UTC),
            call=inputs.call,
            keys=ctx.variables.flow,  # type: ignore[arg-type]
            steps=traces,
            error=(
                {"step": failure.step, "reason": failure.reason, "message": failure.message}
                if failure
                else None
            ),
        )

    async def _loop(self, ctx: Context, traces: list[StepTrace]) -> StepFailure | None:
        steps = self.plan.steps
        sys_values = ctx.variables.sys
        assert isinstance(sys_values, SysValues)  # made by _context
        # without a tracer each step runs without the coroutine that would wrap it in a span
        run = self._run_step if self.services.tracer is None else self._step
        index = 0 if steps else END
        count = 0
        while index != END:
            count += 1
            step = steps[index]
            if count > STEP_LIMIT:
                return StepFailure(
                    step=step.step.id,
                    reason="STEP_LIMIT",
                    message=f"more than {STEP_LIMIT} steps ran (a loop without an exit?)",
                )
            sys_values.start_step()
            result = await run(step, ctx)
            traces.append(result.trace)
            if result.trace.outcome == "skipped":
                index = step.index + 1 if step.index + 1 < len(steps) else END
            elif result.failure is None:
                index = step.next_index
            elif step.failure_index is not None and not result.fatal:
                index = step.failure_index
            else:
                return result.failure
        return None

    async def _step(self, step: CompiledStep, ctx: Context) -> StepResult:
        """:meth:`_run_step` in a span of the tracer."""
        tracer = self.services.tracer
        assert tracer is not None
        with tracer.step(step.step.id, _kind(step)) as span:
            result = await self._run_step(step, ctx)
            trace = result.trace
            attributes: dict[str, str | int] = {"flowrunner.step.outcome": trace.outcome}
            if trace.webhook is not None:
                attributes["flowrunner.webhook"] = trace.webhook
            if trace.attempts is not None:
                attributes["flowrunner.step.attempts"] = trace.attempts
            span.set(attributes)
            if result.failure is not None:
                span.fail(f"{result.failure.reason}: {result.failure.message}")
            return result

    async def _run_step(self, step: CompiledStep, ctx: Context) -> StepResult:
        began = time.perf_counter()
        try:
            if _skipped(step, ctx):
                return StepResult(trace=_trace(step.step.id, _kind(step), "skipped", began))
            return await self.handlers[type(step.step)](step, ctx)
        except TemplateError as exc:
            where = f"in '{exc.where.field}': " if exc.where.field else ""
            return _failed(step, began, "TEMPLATE_ERROR", where + exc.bare_message)
        except SecretError as exc:
            return _failed(step, began, "SECRET_MISSING", str(exc))
        except Exception as exc:  # one bad value must not crash a whole batch
            # (cancellation, Ctrl-C and exit are BaseExceptions: they pass through)
            message = f"the step could not run ({type(exc).__name__})"
            return _failed(step, began, "STEP_ERROR", message)


def _kind(step: CompiledStep) -> Any:
    return "webhook" if isinstance(step.step, m.WebhookStep) else "operation"


def _skipped(step: CompiledStep, ctx: Context) -> bool:
    # `when: false` is a plain boolean: the compiler keeps no template for it
    if step.step.when is False:
        return True
    return step.when is not None and not truthy(step.when.render(ctx.variables))


def _trace(step_id: str, kind: Any, outcome: Any, began: float, **extra: Any) -> StepTrace:
    duration = (time.perf_counter() - began) * 1000
    return StepTrace(id=step_id, kind=kind, outcome=outcome, duration_ms=duration, **extra)


def _failed(step: CompiledStep, began: float, reason: str, message: str) -> StepResult:
    # A template or secret problem is a defect of the flow, not a failed call:
    # it ends the execution even when the step has an on_failure.
    step_id = step.step.id
    failure = StepFailure(step=step_id, reason=reason, message=message)
    error = f"{reason}: {message}"
    return StepResult(
        trace=_trace(step_id, _kind(step), "failed", began, error=error),
        failure=failure,
        fatal=True,
    )
