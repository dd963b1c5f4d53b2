"""The async interpreter: runs one execution of a compiled plan.

Steps run in order; ``when`` skips, ``next`` and ``on_failure`` jump; a failed step
without ``on_failure`` ends the execution FAILED; at most :data:`STEP_LIMIT` steps run.
Step kinds are handled by the functions in :data:`HANDLERS`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flowrunner import model as m
from flowrunner.compiler import END, CompiledStep, Plan
from flowrunner.errors import SecretError, StepFailure, TemplateError
from flowrunner.result import ExecutionRecord, StepTrace, iso
from flowrunner.secrets import Secrets
from flowrunner.templating import Variables

STEP_LIMIT = 1000

# the text forms of false values: what `{% if %}true{% else %}false{% endif %}`, a
# `--call vip=false` or a boolean formatted into text give
FALSE_TEXTS = frozenset({"", "false", "0", "null", "none"})


def truthy(value: Any) -> bool:
    """Whether a rendered ``when`` lets its step run: a text is false when it is the text
    of a false value (``""``, ``false``, ``0``, ``null``, ``none``, any case, spaces
    around ignored); any other value is true or false as in Python (``0``, ``[]``,
    ``{}`` and null are false)."""
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXTS
    return bool(value)


class UserKeyStore(Protocol):
    """Where ``$user.key.*`` live (the SQLite state store, or a dict in tests)."""

    def user_keys(self) -> dict[str, Any]: ...

    def set_user_key(self, name: str, value: Any) -> None: ...

    def update_user_keys(
        self, names: Collection[str], change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read ``names`` (those set), apply ``change``, store its result, atomically
        with respect to every other writer; returns what was stored."""
        ...


class MemoryUserKeys:
    """A :class:`UserKeyStore` in memory (dry runs and tests)."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def user_keys(self) -> dict[str, Any]:
        return dict(self.values)

    def set_user_key(self, name: str, value: Any) -> None:
        self.values[name] = value

    def update_user_keys(
        self, names: Collection[str], change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        written = change({n: self.values[n] for n in names if n in self.values})
        self.values.update(written)
        return written


_STEP_START = object()  # the value of "datetime" until a template reads it


class SysValues(dict[str, Any]):
    """The ``$sys`` values of one execution. ``datetime`` (when the current step started)
    is formatted only when a template reads it: most flows never do."""

    __slots__ = ("step_started",)

    def __init__(self, execution_id: str, flow: str) -> None:
        super().__init__(execution_id=execution_id, flow=flow, datetime=_STEP_START)
        self.step_started = 0.0

    def start_step(self) -> None:
        dict.__setitem__(self, "datetime", _STEP_START)
        self.step_started = time.time()

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if value is _STEP_START:
            value = iso(datetime.fromtimestamp(self.step_started, UTC))
            dict.__setitem__(self, key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


@dataclass(slots=True, kw_only=True)
class Inputs:
    """What one execution starts from: the call, initial flow keys, user-key overrides."""

    call: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, Any] = field(default_factory=dict)
    user_keys: dict[str, Any] = field(default_factory=dict)
    execution_id: str | None = None


@dataclass(slots=True, kw_only=True)
class Services:
    """What steps may use: the HTTP client, secrets, user keys, dry-run switch."""

    client: Any  # flowrunner.http.HttpClient; Any keeps aiohttp out of this import
    secrets: Secrets
    users: UserKeyStore
    dry_run: bool = False


@dataclass(slots=True, kw_only=True)
class Context:
    """One execution's mutable state."""

    execution_id: str
    plan: Plan
    variables: Variables
    services: Services
    # user keys given as inputs: they win over the stored value until this execution
    # writes them
    pinned: set[str] = field(default_factory=set)


@dataclass(slots=True, kw_only=True)
class StepResult:
    trace: StepTrace
    failure: StepFailure | None = None
    fatal: bool = False  # True: ends the execution even when the step has on_failure


Handler = Callable[[CompiledStep, Context], Awaitable[StepResult]]


def _handlers() -> dict[type, Handler]:
    from flowrunner.steps.operation import run_operation
    from flowrunner.steps.webhook import run_webhook

    return {m.OperationStep: run_operation, m.WebhookStep: run_webhook}


class Engine:
    """Runs executions of one plan; reusable across many executions (and concurrently)."""

    def __init__(self, plan: Plan, services: Services) -> None:
        self.plan = plan
        self.services = services
        self.handlers = _handlers()

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
            result = await self._step(step, ctx)
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
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one bad value must not crash a whole batch
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
