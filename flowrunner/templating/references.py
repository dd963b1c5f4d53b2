"""The `$`-reference language: reading a string into literal text, references and Jinja
constructs, rewriting that into Jinja source, and reading a reference's value.

This module does not import jinja2; ``templating`` compiles what it produces. Offsets
are character offsets in the string as the flow wrote it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from flowrunner.frozen import frozen

SCOPES = ("call", "flow.key", "user.key", "sys")
_SCOPE_FIELDS = {"call": "call", "flow.key": "flow", "user.key": "user", "sys": "sys"}

#: The Jinja global that a rewritten reference calls: ``_ref('flow.key', 'order', 'id')``.
HELPER = "_ref"
VARIABLES = "_variables"  # the render-context entry HELPER reads

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME_START = re.compile(r"[A-Za-z_]")
_SPECIAL = re.compile(r"\$|\{[{%]")
_RAW_BEGIN = re.compile(r"\{%[-+]?\s*raw\s*-?%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
# a "{" that would open a Jinja comment, or merge with the "{{" written after it
_LONE_BRACE = re.compile(r"\{(?=#|$)")


@frozen
class Reference:
    """A reference such as ``$flow.key.order.id``: its scope, its dotted path, and the
    offset of its ``$`` in the source string."""

    scope: str
    path: tuple[str, ...]
    offset: int

    @property
    def text(self) -> str:
        return f"${self.scope}.{'.'.join(self.path)}"


@frozen
class Literal:
    """Literal text (``$$`` already read as ``$``) starting at ``offset``."""

    text: str
    offset: int


@frozen
class Construct:
    """A Jinja construct ``{{ }}`` or ``{% %}`` with the pieces between its delimiters,
    or a whole ``{% raw %}`` block (``opener == "raw"``, one verbatim Literal)."""

    opener: str
    start: int
    end: int
    inner: tuple[Literal | Reference, ...]
    closed: bool


Piece = Literal | Reference | Construct


class ScanError(Exception):
    """A string that is not a valid template; ``offset`` is where the problem starts."""

    def __init__(self, message: str, offset: int, rule: str = "unknown-scope") -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.rule = rule


def suggest(name: str, candidates: Iterable[object]) -> str | None:
    """The candidate closest to ``name`` (difflib ratio of at least 0.6), or None."""
    import difflib  # here: only a problem needs a suggestion

    names = [c for c in candidates if isinstance(c, str)]
    matches = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return matches[0] if matches else None


def scan(text: str) -> tuple[Piece, ...]:
    """Read ``text`` into literal text, references and Jinja constructs, in order.

    Raises ScanError (rule ``unknown-scope``) for a ``$name`` that is not a reference.
    """
    pieces: list[Piece] = []
    pos = 0
    while (match := _SPECIAL.search(text, pos)) is not None:
        start = match.start()
        if start > pos:
            pieces.append(Literal(text[pos:start], pos))
        piece: Piece
        if match.group() == "$":
            piece, pos = _scan_dollar(text, start)
        else:
            piece, pos = _scan_construct(text, start)
        pieces.append(piece)
    if pos < len(text):
        pieces.append(Literal(text[pos:], pos))
    return tuple(pieces)


def _scan_dollar(text: str, at: int) -> tuple[Literal | Reference, int]:
    follower = text[at + 1 : at + 2]
    if follower == "$":
        return Literal("$", at), at + 2
    if not _NAME_START.match(follower):
        return Literal("$", at), at + 1
    return parse_reference(text, at, in_jinja=False)


def parse_reference(text: str, at: int, *, in_jinja: bool) -> tuple[Reference, int]:
    """Read the reference whose ``$`` is at ``at``; return it and the offset after it.

    Inside Jinja, a reference followed by ``(`` leaves its last segment to Jinja as a
    method call: ``$flow.key.caller.upper()`` reads ``$flow.key.caller``.
    """
    match = _DOTTED.match(text, at + 1)
    if match is None:
        raise ScanError("a reference needs a name after $", at)
    names = match.group().split(".")
    scope, path = _split_scope(names, at)
    end = match.end()
    if in_jinja and len(path) > 1 and text.startswith("(", end):
        path = path[:-1]
        end = text.rindex(".", at, end)
    return Reference(scope, path, at), end


def _split_scope(names: list[str], at: int) -> tuple[str, tuple[str, ...]]:
    head = names[0]
    if head in ("call", "sys"):
        scope, rest = head, names[1:]
    elif head in ("flow", "user") and names[1:2] == ["key"]:
        scope, rest = f"{head}.key", names[2:]
    else:
        written = "$" + ".".join(names)
        guess = _guess_reference(names)
        hint = f" (did you mean {guess}?)" if guess else ""
        raise ScanError(
            f"unknown reference {written}: references start with "
            f"$call., $flow.key., $user.key. or $sys.{hint}",
            at,
        )
    if not rest:
        raise ScanError(f"reference ${scope} needs a name, as in ${scope}.<name>", at)
    return scope, tuple(rest)


def _guess_reference(names: list[str]) -> str | None:
    head = suggest(names[0], ("call", "sys", "flow", "user"))
    if head is None:
        return None
    rest = names[1:]
    scope = head
    if head in ("flow", "user"):
        scope = f"{head}.key"
        if rest and suggest(rest[0], ("key",)):
            rest = rest[1:]
    return f"${scope}." + (".".join(rest) or "<name>")


def _scan_construct(text: str, at: int) -> tuple[Construct, int]:
    raw = _RAW_BEGIN.match(text, at)
    if raw is not None:
        close = _RAW_END.search(text, raw.end())
        end = close.end() if close else len(text)
        return Construct("raw", at, end, (Literal(text[at:end], at),), close is not None), end
    opener = text[at : at + 2]
    inner, end, closed = _scan_inner(text, at + 2, "}}" if opener == "{{" else "%}")
    return Construct(opener, at, end, inner, closed), end


def _scan_inner(
    text: str, pos: int, closer: str
) -> tuple[tuple[Literal | Reference, ...], int, bool]:
    # Mirrors Jinja's lexer: a closer only counts outside string literals and brackets.
    pieces: list[Literal | Reference] = []
    start = index = pos
    depth = 0
    while index < len(text):
        char = text[index]
        if char in "'\"":
            index = _skip_string(text, index)
        elif char == "$" and _NAME_START.match(text, index + 1):
            if index > start:
                pieces.append(Literal(text[start:index], start))
            reference, index = parse_reference(text, index, in_jinja=True)
            pieces.append(reference)
            start = index
        elif depth == 0 and text.startswith(closer, index):
            if index > start:
                pieces.append(Literal(text[start:index], start))
            return tuple(pieces), index + 2, True
        else:
            if char in "([{":
                depth += 1
            elif char in ")]}" and depth > 0:
                depth -= 1
            index += 1
    if len(text) > start:
        pieces.append(Literal(text[start:], start))
    return tuple(pieces), len(text), False


def _skip_string(text: str, at: int) -> int:
    quote = text[at]
    index = at + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text[index] == quote:
            return index + 1
        else:
            index += 1
    return len(text)


@frozen
class JinjaSource:
    """Jinja source rewritten from a scanned string, with a map back to the original.

    ``spans`` holds ``(offset in text, offset in the original, copied verbatim?)``;
    ``constructs`` holds each construct with the offset in ``text`` where it ends.
    """

    text: str
    spans: tuple[tuple[int, int, bool], ...]
    constructs: tuple[tuple[Construct, int], ...]

    def original_offset(self, offset: int) -> int:
        """The offset in the original string of character ``offset`` of ``text``."""
        index = bisect_right(self.spans, offset, key=lambda span: span[0]) - 1
        if index < 0:
            return 0
        start, original, verbatim = self.spans[index]
        return original + (offset - start if verbatim else 0)


class _Writer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[tuple[int, int, bool]] = []
        self.size = 0

    def add(self, text: str, original: int, verbatim: bool) -> None:
        self.spans.append((self.size, original, verbatim))
        self.parts.append(text)
        self.size += len(text)


def to_jinja(pieces: Iterable[Piece]) -> JinjaSource:
    """Rewrite scanned pieces into Jinja source: each reference becomes a call of
    ``HELPER`` (wrapped in ``{{ }}`` when it stands in text), literal text is kept as
    data, and constructs keep their delimiters."""
    out = _Writer()
    constructs: list[tuple[Construct, int]] = []
    for piece in pieces:
        if isinstance(piece, Literal):
            _write_literal(out, piece)
        elif isinstance(piece, Reference):
            out.add(f"{{{{ {helper_call(piece)} }}}}", piece.offset, False)
        else:
            _write_construct(out, piece)
            constructs.append((piece, out.size))
    return JinjaSource("".join(out.parts), tuple(out.spans), tuple(constructs))


def helper_call(reference: Reference) -> str:
    """The Jinja expression that reads ``reference``."""
    args = ", ".join(repr(name) for name in (reference.scope, *reference.path))
    return f"{HELPER}({args})"


def _write_literal(out: _Writer, literal: Literal) -> None:
    start = 0
    for match in _LONE_BRACE.finditer(literal.text):
        out.add(literal.text[start : match.start()], literal.offset + start, True)
        out.add("{{ '{' }}", literal.offset + match.start(), False)
        start = match.end()
    out.add(literal.text[start:], literal.offset + start, True)


def _write_construct(out: _Writer, construct: Construct) -> None:
    if construct.opener == "raw":
        out.add(construct.inner[0].text, construct.start, True)
        return
    out.add(construct.opener, construct.start, True)
    for piece in construct.inner:
        if isinstance(piece, Literal):
            out.add(piece.text, piece.offset, True)
        else:
            out.add(helper_call(piece), piece.offset, False)
    if construct.closed:
        closer = "}}" if construct.opener == "{{" else "%}"
        out.add(closer, construct.end - 2, True)


# --- reading values ------------------------------------------------------------------


@dataclass(slots=True)
class Variables:
    """What a render reads: the call, the flow keys, the user keys, the system values."""

    call: Mapping[str, Any] = field(default_factory=dict)
    flow: MutableMapping[str, Any] = field(default_factory=dict)
    user: MutableMapping[str, Any] = field(default_factory=dict)
    sys: Mapping[str, Any] = field(default_factory=dict)


class Missing(Exception):
    """A reference to something unset, with the nearest existing name if there is one."""

    def __init__(self, reference: str, suggestion: str | None) -> None:
        super().__init__(reference)
        self.reference = reference
        self.suggestion = suggestion


def resolve(variables: Variables, scope: str, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``scope`` (not a copy); raises Missing."""
    value: Any = getattr(variables, _SCOPE_FIELDS[scope])
    for name in path:
        try:
            value = value[name]
        except (LookupError, TypeError):  # unset, or not a mapping
            raise _missing(variables, scope, path) from None
    return value


def _missing(variables: Variables, scope: str, path: tuple[str, ...]) -> Missing:
    written = f"${scope}." + ".".join(path)
    container: Any = getattr(variables, _SCOPE_FIELDS[scope])
    for index, name in enumerate(path):
        if not isinstance(container, Mapping):
            break
        if name not in container:
            near = suggest(name, container.keys())
            if near is None:
                break
            fixed = (*path[:index], near, *path[index + 1 :])
            return Missing(written, f"${scope}." + ".".join(fixed))
        container = container[name]
    return Missing(written, None)
