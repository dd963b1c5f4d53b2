"""Compiling a flow's value: strings by their cheapest shape, dicts and lists item by
item. Only a string with ``{{ }}`` or ``{% %}`` takes the Jinja path
(:mod:`flowrunner.templating.parsing`), and only then is jinja2 imported: a flow without
templates never loads it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from flowrunner.errors import Mark, TemplateError, Where
from flowrunner.templating import limits
from flowrunner.templating.references import (
    Construct,
    Literal,
    Piece,
    Reference,
    ScanError,
    scan,
)
from flowrunner.templating.values import (
    Compiled,
    Constant,
    ListValue,
    MappingValue,
    ReferenceValue,
    Text,
)

MAX_SOURCE = 64 * 1024  # characters of one Jinja template: parsing is linear, but slow


def offset_mark(mark: Mark, source: str, offset: int) -> Mark:
    """The position of character ``offset`` of a scalar whose value is ``source`` and
    which starts at ``mark``. A value written over several lines, and a quoted value with
    escapes, carry a map in ``mark.lines`` (from the loader): exact for quoted values,
    exact line by line for plain and block ones. One-line values without escapes are
    exact; without a map, a block scalar's content starts on the line after the
    indicator and its column is a guess."""
    offset = max(0, min(offset, len(source)))
    if mark.lines:
        # a value written over several lines: the line holding the offset, then columns
        start, line, column = max(
            (entry for entry in mark.lines if entry[0] <= offset), default=mark.lines[0]
        )
        return Mark(line, column + max(0, offset - start), mark.style)
    before = source[:offset]
    newlines = before.count("\n")
    in_line = offset - (before.rfind("\n") + 1)
    if mark.style in ("|", ">"):
        return Mark(mark.line + 1 + newlines, in_line + 1, mark.style)
    if newlines:
        return Mark(mark.line + newlines, in_line + 1, mark.style)
    quote = 1 if mark.style in ("'", '"') else 0
    return Mark(mark.line, mark.column + quote + offset, mark.style)


def compile_value(value: Any, where: Where) -> Compiled:
    """Compile a value of a flow: a string into a template, a dict or list into a
    structure of compiled values (keys are not templated), anything else into a
    constant.

    Raises TemplateError (rules ``template-syntax``, ``unknown-scope``,
    ``template-unsafe``) with ``where.mark`` moved to the problem inside the string.
    Strings nested in a dict or list keep the container's mark and get a field path
    (``params.order_hint``, ``items[0]``).
    """
    return _compile(value, where, nested=False)


def _compile(value: Any, where: Where, *, nested: bool) -> Compiled:
    if isinstance(value, str):
        return _compile_str(value, where, nested=nested)
    if isinstance(value, Mapping):
        return MappingValue(
            tuple(
                (key, _compile(item, _child(where, f".{key}"), nested=True))
                for key, item in value.items()
            )
        )
    if isinstance(value, list | tuple):
        return ListValue(
            tuple(
                _compile(item, _child(where, f"[{index}]"), nested=True)
                for index, item in enumerate(value)
            )
        )
    return Constant(value)


def _child(where: Where, suffix: str) -> Where:
    if where.field is None:
        return replace(where, field=suffix.lstrip("."))
    return replace(where, field=where.field + suffix)


def _compile_str(text: str, where: Where, *, nested: bool) -> Compiled:
    try:
        pieces = scan(text)
        if not any(isinstance(piece, Construct) for piece in pieces):
            return _compile_plain(pieces, where)
        inner = _single_expression(pieces)
        bare = _bare_reference(inner) if inner is not None else None
        if bare is not None:
            return ReferenceValue(bare, where)
        if len(text) > MAX_SOURCE:
            message = f"template is {len(text)} characters; the limit is {MAX_SOURCE} (64 KiB)"
            raise ScanError(message, 0, limits.TOO_LARGE)
        from flowrunner.templating.parsing import compile_jinja  # here: imports jinja2

        return compile_jinja(text, pieces, where, expression=inner is not None)
    except ScanError as exc:
        if where.mark is not None and not nested:
            where = replace(where, mark=offset_mark(where.mark, text, exc.offset))
        raise TemplateError(exc.message, where, exc.rule) from exc


def _compile_plain(pieces: Iterable[Piece], where: Where) -> Compiled:
    parts: list[str | Reference] = []
    for piece in pieces:
        if isinstance(piece, Literal) and parts and isinstance(parts[-1], str):
            parts[-1] += piece.text
        elif isinstance(piece, Literal):
            parts.append(piece.text)
        elif isinstance(piece, Reference):
            parts.append(piece)
    if not parts:
        return Constant("")
    if len(parts) == 1:
        only = parts[0]
        return Constant(only) if isinstance(only, str) else ReferenceValue(only, where)
    return Text(tuple(parts), where)


def _single_expression(pieces: tuple[Piece, ...]) -> tuple[Literal | Reference, ...] | None:
    """The inside of the string's only piece when that is a whole ``{{ }}``."""
    if len(pieces) != 1:
        return None
    only = pieces[0]
    if isinstance(only, Construct) and only.opener == "{{" and only.closed:
        return only.inner
    return None


_BEFORE = re.compile(r"-?\s*")  # Jinja's whitespace control sits right at the braces
_AFTER = re.compile(r"\s*-?")


def _bare_reference(inner: tuple[Literal | Reference, ...]) -> Reference | None:
    found = [index for index, piece in enumerate(inner) if isinstance(piece, Reference)]
    if len(found) != 1:
        return None
    index = found[0]
    before = "".join(piece.text for piece in inner[:index])
    after = "".join(piece.text for piece in inner[index + 1 :])
    if _BEFORE.fullmatch(before) and _AFTER.fullmatch(after):
        reference = inner[index]
        assert isinstance(reference, Reference)
        return reference
    return None
