"""The JSON Schemas of flows, the project file and on-complete payloads, and the check of
a document against them.

The schemas are the files in ``schemas/`` (shipped inside the wheel as
``flowrunner/schemas``). :func:`check` answers a valid document with the quick validator
of :mod:`flowrunner.source.fastcheck`, which imports nothing; only a document it does not
find valid goes through jsonschema (:mod:`flowrunner.source.schema_errors`, the only module
that imports it), whose errors become ``Diagnostic``s with one-line messages of our own.
So validating a sound repository, the common case in a pre-commit hook, never pays for
importing jsonschema.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

from flowrunner.errors import Diagnostic, Mark
from flowrunner.source.fastcheck import is_valid

Kind = Literal["flow", "project", "on-complete", "test"]
Path = tuple[str | int, ...]
KINDS: tuple[Kind, ...] = ("flow", "project", "on-complete", "test")

DEFS_PREFIX = "#/$defs/"
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs"})
SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SCHEMA_KEYWORDS = frozenset(
    {"items", "contains", "additionalProperties", "propertyNames", "not", "if", "then", "else"}
    | {"unevaluatedItems", "unevaluatedProperties"}
)
ANNOTATIONS = frozenset({"title", "description", "default", "examples"})


def schema_path(kind: Kind) -> pathlib.Path:
    """The file of the ``kind`` schema: inside the installed package, else the repo's."""
    if kind not in KINDS:
        raise ValueError(f"unknown schema kind {kind!r}")
    return _schema_dir() / f"{kind}.schema.json"


@functools.cache
def _schema_dir() -> pathlib.Path:
    package = pathlib.Path(__file__).resolve().parent.parent
    installed = package / "schemas"
    return installed if installed.is_dir() else package.parent / "schemas"


def schema_text(kind: Kind) -> str:
    """The ``kind`` schema as written in its file (what ``flowrunner schema`` prints)."""
    return schema_path(kind).read_text(encoding="utf-8")


@functools.cache
def schema(kind: Kind) -> dict[str, Any]:
    """The parsed ``kind`` schema, loaded once; callers must not modify it."""
    return cast(dict[str, Any], json.loads(schema_text(kind)))


@functools.cache
def inlined(kind: Kind) -> dict[str, Any] | bool:
    """The ``kind`` schema with every local ``$ref`` replaced by its target (cached).

    Resolving a $ref costs about a third of a validation; the schemas are not recursive,
    so validators get this copy.
    """
    document = schema(kind)
    return cast("dict[str, Any] | bool", _inline(document, document.get("$defs", {}), ()))


def _inline(node: Any, defs: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    """Schema ``node`` with ``#/$defs/NAME`` references replaced by their targets.

    A subschema left with annotations only becomes ``True``, which the validator skips
    without descending into the value.
    """
    if not isinstance(node, dict):
        return node
    out = {key: _inline_keyword(key, value, defs, seen) for key, value in node.items()}
    ref = out.get("$ref")
    name = (
        ref.removeprefix(DEFS_PREFIX)
        if isinstance(ref, str) and ref.startswith(DEFS_PREFIX)
        else None
    )
    if name is not None and name in defs and name not in seen:
        target = _inline(defs[name], defs, (*seen, name))
        siblings = {k: v for k, v in out.items() if k != "$ref"}
        if target is True and siblings.keys() <= ANNOTATIONS:
            return True
        if isinstance(target, dict) and not (siblings.keys() & target.keys()) - ANNOTATIONS:
            out = {**target, **siblings}  # else merging would change what is validated
    return True if out.keys() <= ANNOTATIONS else out


def _inline_keyword(key: str, value: Any, defs: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    if key in SCHEMA_MAPS and isinstance(value, dict):
        return {name: _inline(sub, defs, seen) for name, sub in value.items()}
    if key in SCHEMA_LISTS and isinstance(value, list):
        return [_inline(sub, defs, seen) for sub in value]
    if key in SCHEMA_KEYWORDS:
        return _inline(value, defs, seen)
    return value


def check(
    data: Any,
    kind: Kind,
    file: str,
    mark: Callable[[Path], Mark],
    key_mark: Callable[[Path], Mark],
) -> list[Diagnostic]:
    """Validate parsed YAML ``data`` against the ``kind`` schema.

    Returns every problem found, sorted by position ([] when valid). ``mark(path)`` and
    ``key_mark(path)`` give the 1-based position of the value at ``path`` and of the key
    holding it. Raises ``FlowrunnerError`` only if the schema itself is broken.
    """
    if is_valid(inlined(kind), data):
        return []
    from flowrunner.source.schema_errors import problems

    diagnostics = []
    for problem in problems(data, kind, inlined(kind)):
        if problem.key is None:
            at = mark(problem.path)
        else:
            at = key_mark((*problem.path, problem.key))
        diagnostics.append(
            Diagnostic(
                file=file,
                line=at.line,
                column=at.column,
                rule=problem.rule,
                message=problem.message,
            )
        )
    return sorted(diagnostics, key=Diagnostic.sort_key)


def payload_errors(payload: Any) -> list[str]:
    """Problems of an on-complete payload as ``location: message`` lines; [] when valid."""
    if is_valid(inlined("on-complete"), payload):
        return []
    from flowrunner.source.schema_errors import location, problems

    found = problems(payload, "on-complete", inlined("on-complete"))
    return sorted(f"{location(p.path)}: {p.message}" if p.path else p.message for p in found)
