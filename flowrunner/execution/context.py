"""The step contract: what one execution starts from (:class:`Inputs`), what steps may
use (:class:`Services`), one execution's state (:class:`Context`) and what a step hands
back (:class:`StepResult`). The engine and every step handler meet here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flowrunner.errors import StepFailure
from flowrunner.execution.record import StepTrace
from flowrunner.net.transport import Transport
from flowrunner.plan.types import CompiledStep, Plan
from flowrunner.secrets import Secrets
from flowrunner.templating import Variables
from flowrunner.times import iso

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
    traceparent: str | None = None  # a W3C traceparent the execution's trace continues


class Span(Protocol):
    """A span being recorded (:class:`Tracer`)."""

    def set(self, attributes: Mapping[str, str | int | float | bool]) -> None:
        """Add attributes to the span."""
        ...

    def fail(self, message: str) -> None:
        """Mark the span as an error, saying why."""
        ...


class Tracer(Protocol):
    """Where spans go: an execution span, a span per step, a client span per request.

    The implementation (:mod:`flowrunner.tracing`) is loaded only when tracing is on;
    without one nothing is traced and nothing of a tracing library is imported.
    """

    def execution(
        self, execution_id: str, flow: str, traceparent: str | None = None
    ) -> AbstractContextManager[Span]:
        """The span of one execution: a new trace, or ``traceparent``'s when valid."""
        ...

    def step(self, step_id: str, kind: str) -> AbstractContextManager[Span]:
        """The span of one step, inside the current execution's span."""
        ...

    def transport(self, inner: Transport) -> Transport:
        """``inner`` with a client span around each request and ``traceparent`` on it."""
        ...

    def close(self) -> None:
        """Export what is left and stop."""
        ...


@dataclass(slots=True, kw_only=True)
class Services:
    """What steps may use: the HTTP client, secrets, user keys, dry-run switch."""

    client: Transport | None  # None in a dry run, which sends nothing
    secrets: Secrets
    users: UserKeyStore
    dry_run: bool = False
    tracer: Tracer | None = None


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
    """What a step handler returns: its trace and, if it failed, why."""

    trace: StepTrace
    failure: StepFailure | None = None
    fatal: bool = False  # True: ends the execution even when the step has on_failure


Handler = Callable[[CompiledStep, Context], Awaitable[StepResult]]
