"""The runnable plan: a flow compiled against its project, templates compiled once and
jumps resolved to step indexes. What the compiler makes and the engine runs."""

from __future__ import annotations

from dataclasses import field

from flowrunner.frozen import frozen
from flowrunner.source import model as m
from flowrunner.templating import Compiled

END = -1  # jump target meaning "the execution ends here"


@frozen(kw_only=True)
class CompiledWebhook:
    """A webhook with its URL and headers compiled."""

    webhook: m.Webhook
    url: Compiled
    headers: dict[str, Compiled | m.SecretRef]


@frozen(kw_only=True)
class CompiledProject:
    """The project with its webhooks compiled."""

    project: m.Project
    webhooks: dict[str, CompiledWebhook]


@frozen(kw_only=True)
class CompiledAssignment:
    """One assignment of an assign step, its value compiled."""

    target: str  # as written in the flow (the key under `set`)
    scope: str  # "flow" or "user"
    name: str
    value: Compiled


@frozen(kw_only=True)
class CompiledStep:
    """One step ready to run: its templates compiled and its jumps resolved."""

    step: m.Step
    index: int
    when: Compiled | None
    next_index: int  # END or a step index
    assignments: tuple[CompiledAssignment, ...] = ()
    params: dict[str, Compiled] = field(default_factory=dict)
    failure_index: int | None = None  # None: a failure ends the execution FAILED
    webhook: CompiledWebhook | None = None
    method: m.Method | None = None
    retry: m.RetryPolicy | None = None  # the step's own, else its webhook's; None: one attempt


@frozen(kw_only=True)
class Plan:
    """One flow ready to run against its project."""

    flow: m.Flow
    project: CompiledProject
    steps: tuple[CompiledStep, ...]
    on_complete: CompiledWebhook | None
