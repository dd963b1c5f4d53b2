"""Positioning syntax errors: the message Jinja gives, reworded, and the offset in
the flow's string of the construct that caused it."""

from __future__ import annotations

import re

from jinja2.exceptions import TemplateSyntaxError

from flowrunner.templating.environment import sandbox_environment
from flowrunner.templating.references import HELPER, Construct, JinjaSource, suggest
from flowrunner.templating.static import find_in_source

_UNEXPECTED_CHAR = re.compile(r"unexpected char .* at (\d+)", re.S)
_NO_SUCH = re.compile(r"No (filter|test) named '([^']*)'")


def syntax_message(exc: TemplateSyntaxError) -> str:
    message = re.sub(r" at \d+$", "", exc.message or "invalid syntax")
    message = message.replace(f"'{HELPER}'", "a $ reference")
    unknown = _NO_SUCH.match(message)
    if unknown:
        kind, name = unknown.groups()
        known = sandbox_environment().filters if kind == "filter" else sandbox_environment().tests
        near = suggest(name, known)
        message = message.rstrip(".") + (f" (did you mean '{near}'?)" if near else "")
    return "template syntax error: " + " ".join(message.split())


def syntax_offset(exc: TemplateSyntaxError, source: JinjaSource, text: str) -> int:
    message = exc.message or ""
    char = _UNEXPECTED_CHAR.fullmatch(message)
    if char:
        return source.original_offset(int(char.group(1)))
    unknown = _NO_SUCH.match(message)
    if unknown:
        return find_in_source(source, text, rf"\b{re.escape(unknown.group(2))}\b")
    constructs = [construct for construct, _ in source.constructs]
    unclosed = [construct for construct in constructs if not construct.closed]
    culprit = unclosed[0] if unclosed else _first_failing(source)
    culprit = culprit or _open_block(constructs, text)
    if culprit is not None:
        return culprit.start
    return constructs[0].start if constructs else 0


def _first_failing(source: JinjaSource) -> Construct | None:
    """The first construct at which a prefix of the template stops parsing (binary
    search: once a prefix fails for a reason other than its end, longer ones do too)."""
    ends = source.constructs
    if not ends or not _fails_early(source.text[: ends[-1][1]]):
        return None
    low, high = 0, len(ends) - 1
    while low < high:
        middle = (low + high) // 2
        if _fails_early(source.text[: ends[middle][1]]):
            high = middle
        else:
            low = middle + 1
    return ends[low][0]


def _fails_early(prefix: str) -> bool:
    try:
        sandbox_environment().parse(prefix)
    except TemplateSyntaxError as exc:
        return not (exc.message or "").lower().startswith("unexpected end of template")
    except Exception:  # recursion and the like: as good as a failure here
        return True
    return False


_BLOCK_TAGS = frozenset({"for", "if", "macro", "call", "filter", "with", "autoescape", "set"})
_TAG = re.compile(r"[-+]?\s*([A-Za-z_]\w*)")


def _open_block(constructs: list[Construct], text: str) -> Construct | None:
    """The innermost ``{% %}`` block left open at the end of the template."""
    stack: list[Construct] = []
    for construct in constructs:
        inside = text[construct.start + 2 : construct.end - 2]
        tag = _TAG.match(inside) if construct.opener == "{%" else None
        if tag is None:
            continue
        name = tag.group(1)
        if name.startswith("end") and stack:
            stack.pop()
        elif name in _BLOCK_TAGS and not (name == "set" and "=" in inside):
            stack.append(construct)
    return stack[-1] if stack else None
