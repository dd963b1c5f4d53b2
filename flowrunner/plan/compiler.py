"""Compile a project and its flows into runnable plans, collecting semantic problems.

Templates are compiled once here (never per execution); jumps are resolved to step
indexes; webhook and method names are checked against the project. Every problem is
collected as a :class:`~flowrunner.errors.Diagnostic`; nothing stops at the first.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from flowrunner.document import Path as DocPath
from flowrunner.errors import Diagnostic
from flowrunner.net.egress import Allowlist
from flowrunner.plan.dataflow import check_flow_keys
from flowrunner.plan.problems import Problems
from flowrunner.plan.types import (
    END,
    CompiledAssignment,
    CompiledProject,
    CompiledStep,
    CompiledWebhook,
    Plan,
)
from flowrunner.source import model as m
from flowrunner.templating import Compiled, Variables, format_text, suggest


def compile_project(project: m.Project) -> tuple[CompiledProject, list[Diagnostic]]:
    """Check ``project`` and compile its webhook templates."""
    problems = Problems(project.source)
    defaults = [w for w in project.webhooks.values() if w.default]
    for extra in defaults[1:]:
        problems.add(
            extra.path + ("default",),
            "multiple-default-webhooks",
            f"webhook '{extra.name}' is a second default webhook "
            f"('{defaults[0].name}' is already the default); at most one may be",
            key=True,
        )
    _check_allowlist(project, problems)
    compiled = {}
    for hook in project.webhooks.values():
        _check_scheme(hook, project.http, problems)
        check_retry(hook.retry, f"webhook '{hook.name}'", problems)
        owner = f"webhook '{hook.name}' field "
        url = problems.compile(hook.url, hook.path + ("url",), None, "url", owner + "'url': ")
        headers: dict[str, Compiled | m.SecretRef] = {}
        for name, value in hook.headers.items():
            if isinstance(value, m.SecretRef):
                headers[name] = value
                continue
            header = problems.compile(
                value,
                hook.path + ("headers", name),
                None,
                f"headers.{name}",
                owner + f"'headers.{name}': ",
            )
            if header is not None:
                headers[name] = header
                _check_header_line(hook, name, header, problems)
        if url is not None:
            compiled[hook.name] = CompiledWebhook(webhook=hook, url=url, headers=headers)
    return CompiledProject(project=project, webhooks=compiled), problems.items


def _check_header_line(hook: m.Webhook, name: str, header: Compiled, problems: Problems) -> None:
    """A constant header value with a line break could only fail every request (it is
    never sent): say so at validation."""
    if not header.is_constant:
        return
    text = format_text(header.render(Variables()))
    if "\r" in text or "\n" in text:
        problems.add(
            hook.path + ("headers", name),
            "header-injection",
            f"webhook '{hook.name}': header '{name}' contains a line break (CR or LF); "
            "a header value must be one line",
        )


def _check_allowlist(project: m.Project, problems: Problems) -> None:
    for i, entry in enumerate(project.http.allowlist):
        try:
            Allowlist.parse([entry])
        except ValueError as exc:
            problems.add(("http", "allowlist", i), "bad-allowlist", str(exc))


def _check_scheme(hook: m.Webhook, http: m.HttpPolicy, problems: Problems) -> None:
    scheme = urlsplit(hook.url).scheme.lower()
    if scheme == "https" or (scheme == "http" and http.allow_http):
        return
    hint = " (set http.allow_http: true to allow plain http)" if scheme == "http" else ""
    problems.add(
        hook.path + ("url",),
        "url-scheme",
        f"webhook '{hook.name}': URL scheme '{scheme}' is not allowed; use https{hint}",
    )


def compile_flow(flow: m.Flow, cproject: CompiledProject) -> tuple[Plan, list[Diagnostic]]:
    """Check ``flow`` against the project and compile it to a :class:`Plan`."""
    problems = Problems(flow.source)
    index = _step_index(flow, problems)
    on_complete = _on_complete(flow, cproject, problems)
    steps = tuple(
        _compile_step(flow, i, s, index, cproject, problems) for i, s in enumerate(flow.steps)
    )
    plan = Plan(flow=flow, project=cproject, steps=steps, on_complete=on_complete)
    check_flow_keys(plan, problems)
    return plan, problems.items


def _step_index(flow: m.Flow, problems: Problems) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, step in enumerate(flow.steps):
        if step.id in index:
            first = flow.source.mark(flow.steps[index[step.id]].path + ("id",))
            problems.add(
                step.path + ("id",),
                "duplicate-step-id",
                f"duplicate step id '{step.id}' (first used at line {first.line})",
            )
        else:
            index[step.id] = i
    return index


def _on_complete(
    flow: m.Flow, cproject: CompiledProject, problems: Problems
) -> CompiledWebhook | None:
    target = flow.on_complete
    if target is False:
        return None
    project = cproject.project
    if target is True:
        hook = project.default_webhook()
        if hook is None:
            problems.add(
                ("on_complete",),
                "no-default-webhook",
                "on_complete is true but the project has no default webhook "
                "(mark one webhook with 'default: true', or name a webhook here)",
            )
            return None
        return cproject.webhooks.get(hook.name)
    if target not in project.webhooks:
        _unknown_webhook(str(target), project, ("on_complete",), problems)
        return None
    return cproject.webhooks.get(str(target))


def _unknown_webhook(name: str, project: m.Project, path: DocPath, problems: Problems) -> None:
    known = sorted(project.webhooks)
    hint = suggest(name, known)
    extra = f" (did you mean '{hint}'?)" if hint else f" (known: {', '.join(known) or 'none'})"
    problems.add(path, "unknown-webhook", f"unknown webhook '{name}'{extra}")


def _jump(
    flow: m.Flow, target: str | None, i: int, index: dict[str, int], path: DocPath, p: Problems
) -> int:
    if target is None:
        return i + 1 if i + 1 < len(flow.steps) else END
    if target == "end":
        return END
    if target in index:
        return index[target]
    hint = suggest(target, list(index))
    extra = f" (did you mean '{hint}'?)" if hint else ""
    p.add(path, "unknown-step", f"jump to unknown step '{target}'{extra}; use a step id or 'end'")
    return END


def _compile_step(
    flow: m.Flow,
    i: int,
    step: m.Step,
    index: dict[str, int],
    cproject: CompiledProject,
    problems: Problems,
) -> CompiledStep:
    when = None
    if isinstance(step.when, str):
        when = problems.compile(step.when, step.path + ("when",), step.id, "when")
    next_index = _jump(flow, step.next, i, index, step.path + ("next",), problems)
    if isinstance(step, m.OperationStep):
        return CompiledStep(
            step=step,
            index=i,
            when=when,
            next_index=next_index,
            assignments=_assignments(step, problems),
        )
    hook, method = _resolve_method(step, cproject, problems)
    check_retry(step.retry, f"step '{step.id}'", problems)
    failure = None
    if step.on_failure is not None:
        failure = _jump(flow, step.on_failure, i, index, step.path + ("on_failure",), problems)
    params = {}
    for name, value in step.params.items():
        compiled = problems.compile(value, step.path + ("params", name), step.id, f"params.{name}")
        if compiled is not None:
            params[name] = compiled
    return CompiledStep(
        step=step,
        index=i,
        when=when,
        next_index=next_index,
        params=params,
        failure_index=failure,
        webhook=hook,
        method=method,
        retry=step.retry or (hook.webhook.retry if hook is not None else None),
    )


def check_retry(policy: m.RetryPolicy | None, owner: str, problems: Problems) -> None:
    """Collect what the schema cannot see in a retry policy: a number that is not finite
    (YAML's ``.nan`` passes every bound), a first wait longer than the longest allowed."""
    if policy is None:
        return
    numbers = {"delay": policy.delay, "max_delay": policy.max_delay, "jitter": policy.jitter}
    bad = [name for name, value in numbers.items() if not math.isfinite(value)]
    for name in bad:
        problems.add(
            policy.path + (name,), "retry-policy", f"{owner}: retry {name} must be a number"
        )
    if not bad and policy.attempts > 1 and policy.delay > policy.max_delay:
        problems.add(
            policy.path + ("delay",),
            "retry-policy",
            f"{owner}: retry delay {policy.delay:g} s is longer than max_delay "
            f"{policy.max_delay:g} s (raise max_delay or lower delay)",
        )


def _assignments(step: m.OperationStep, problems: Problems) -> tuple[CompiledAssignment, ...]:
    out = []
    for a in step.assignments:
        path = step.path + ("set", a.target)
        scope, name = split_target(a.target)
        if scope == "call":
            problems.add(
                path,
                "read-only",
                f"step '{step.id}': cannot assign to {a.target}: $call.* is read-only "
                "(assign a flow key instead)",
                key=True,
            )
            continue
        value = problems.compile(a.value, path, step.id, f"set.{a.target}")
        if value is not None:
            out.append(CompiledAssignment(target=a.target, scope=scope, name=name, value=value))
    return tuple(out)


def split_target(target: str) -> tuple[str, str]:
    """``("flow"|"user"|"call", name)`` of an assignment target."""
    for prefix, scope in (("$user.key.", "user"), ("$flow.key.", "flow"), ("$call.", "call")):
        if target.startswith(prefix):
            return scope, target[len(prefix) :]
    return "flow", target


def _resolve_method(
    step: m.WebhookStep, cproject: CompiledProject, problems: Problems
) -> tuple[CompiledWebhook | None, m.Method | None]:
    project = cproject.project
    hook = project.webhooks.get(step.webhook)
    if hook is None:
        _unknown_webhook(step.webhook, project, step.path + ("webhook",), problems)
        return None, None
    method = hook.methods.get(step.method)
    if method is None:
        known = sorted(hook.methods)
        hint = suggest(step.method, known)
        extra = f"did you mean '{hint}'?" if hint else f"known: {', '.join(known) or 'none'}"
        problems.add(
            step.path + ("method",),
            "unknown-method",
            f"webhook '{hook.name}' has no method '{step.method}' ({extra})",
        )
    return cproject.webhooks.get(hook.name), method
