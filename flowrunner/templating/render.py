"""Rendered results: the text form of a value, the checks that a result is data and
within the output limit, and the translation of render exceptions into TemplateError.

Importing it imports no jinja2 (references and plain text render without it):
:func:`render_error` imports Jinja's exceptions when it runs, on a path that only a
failed render reaches. What checks a Jinja result is in
:mod:`flowrunner.templating.environment`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flowrunner.errors import TemplateError, UndefinedReference, Where
from flowrunner.jsoncodec import compact
from flowrunner.templating.limits import MAX_VALUE, LimitExceeded
from flowrunner.templating.references import Missing

MAX_OUTPUT = MAX_VALUE


def format_text(value: Any) -> str:
    """The text form of a value: strings as they are, numbers as JSON, booleans
    ``true``/``false``, None as the empty string, dicts and lists as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | dict | list | tuple):
        try:
            return compact(value)
        except (TypeError, ValueError):  # keys JSON cannot hold, or a cycle
            return str(value)
    return str(value)


class NotData(Exception):
    """A template produced something that is not JSON-like data."""


def output_too_large() -> LimitExceeded:
    return LimitExceeded("rendered text is over 64 KiB")


def limit_output(text: str) -> str:
    # a character is at least one UTF-8 byte: short texts need no encoding
    if len(text) > MAX_OUTPUT // 4:
        if len(text) > MAX_OUTPUT or len(text.encode("utf-8", "surrogatepass")) > MAX_OUTPUT:
            raise output_too_large()
    return text


def collect_output(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:  # stop early: a loop may be producing without end
            raise output_too_large()
        parts.append(chunk)
    return limit_output("".join(parts))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_PLAIN_REASONS: dict[type[BaseException], str] = {
    RecursionError: "recursion too deep",
    MemoryError: "out of memory",
    OverflowError: "number out of range",
    ZeroDivisionError: "division by zero",
}


def render_error(exc: Exception, where: Where) -> TemplateError:
    """The TemplateError for an exception raised while rendering; messages stay short
    and never quote values (only Jinja's and Python's descriptions of types)."""
    if isinstance(exc, Missing):
        return UndefinedReference(exc.reference, exc.suggestion, where)
    if isinstance(exc, LimitExceeded):
        return TemplateError(str(exc), where, exc.rule)
    from jinja2.exceptions import SecurityError  # here: a template-free run may never need it

    if isinstance(exc, SecurityError):
        return TemplateError(f"unsafe template: {_short(exc.message)}", where, "template-unsafe")
    return TemplateError(f"could not render template: {_reason(exc)}", where, "template-render")


def _reason(exc: Exception) -> str:
    from jinja2.exceptions import TemplateRuntimeError

    for kind, reason in _PLAIN_REASONS.items():
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, TemplateRuntimeError):
        return _short(exc.message)
    if isinstance(exc, TypeError | NotData):
        return _short(str(exc))
    return type(exc).__name__  # e.g. ValueError: its message may quote a value


def _short(message: str | None) -> str:
    text = _ADDRESS.sub("", " ".join((message or "").split()))
    return text if len(text) <= 200 else text[:197] + "..."
