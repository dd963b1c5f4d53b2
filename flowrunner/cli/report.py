"""Render diagnostics as text, JSON or GitHub workflow annotations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # --help reads FORMATS: it must not pay for the error types
    from flowrunner.errors import Diagnostic


def text(diags: Sequence[Diagnostic]) -> str:
    """One ``file:line:col: severity: message [rule]`` line each, then a summary."""
    lines = [d.format() for d in diags]
    errors = sum(1 for d in diags if d.severity == "error")
    warnings = len(diags) - errors
    if diags:
        lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


def as_json(diags: Sequence[Diagnostic]) -> str:
    """A JSON list of ``{file, line, column, severity, rule, message}``."""
    import json  # here: --help reads FORMATS

    return json.dumps([d.as_dict() for d in diags], indent=2, ensure_ascii=False)


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(diags: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands: ``::error file=..,line=..,col=..,title=..::msg``."""
    lines = []
    for d in diags:
        props = ",".join(
            (
                f"file={_escape_property(d.file)}",
                f"line={d.line}",
                f"col={d.column}",
                f"title={_escape_property(d.rule)}",
            )
        )
        lines.append(f"::{d.severity} {props}::{_escape_data(d.message)}")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Sequence[Diagnostic]], str]] = {
    "text": text,
    "json": as_json,
    "github": github,
}
FORMATS = tuple(RENDERERS)  # the choices of --format


def _value(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def record_text(record: dict[str, Any], *, dry_run: bool = False) -> str:
    """The human form of an execution record: a line per step, the keys, the push."""
    head = f"{record['flow']}: {record['status']} in {record['duration_ms']:.1f} ms"
    lines = [f"{head} (execution {record['execution_id']})"]
    for step in record["steps"]:
        line = f"  {step['outcome']:<8} {step['id']:<24} {step['duration_ms']:>8.1f} ms"
        request = step.get("request")
        if request:
            status = (step.get("response") or {}).get("status")
            line += f"  {request['method']} {request['url']}"
            line += f" -> {status}" if status is not None else ""
            line += f" ({step['attempts']} attempts)" if step.get("attempts", 1) > 1 else ""
        if step.get("error"):
            line += f"  ({step['error']})"
        lines.append(line)
        if dry_run and request:
            lines += [f"      {k}: {v}" for k, v in request.get("headers", {}).items()]
            if request.get("body") is not None:
                lines.append(f"      body: {request['body']}")
    if record["error"]:
        err = record["error"]
        lines.append(f"error: step '{err['step']}': {err['reason']}: {err['message']}")
    lines.append("keys:")
    lines += [f"  {name} = {_value(value)}" for name, value in record["keys"].items()]
    push = record.get("on_complete")
    if push:
        attempts = push["attempts"]
        detail = push.get("last_error") if attempts is None else f"{attempts} attempt(s)"
        lines.append(
            f"on-complete: {push['status']} to webhook '{push['webhook']}' "
            f"(webhook-id {push['webhook_id']}, {detail})"
        )
    return "\n".join(lines)
