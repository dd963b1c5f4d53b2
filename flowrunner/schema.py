"""JSON Schema checks of flows, the project file and on-complete payloads.

The schemas are the files in ``schemas/`` (shipped inside the wheel as
``flowrunner/schemas``); this is the only module that imports jsonschema. ``check``
turns validation errors into ``Diagnostic``s (rule ``schema``, or ``plaintext-secret``)
with one-line messages of our own, each at the most specific position: an unknown or
badly named key at the key, anything else at the value. Messages name keys but never
quote a value, which may be a secret.

Two keywords outside the standard tune the messages; validators ignore them and editors
built on vscode-json-languageservice show them too:

* ``errorMessage``: the whole message for any error raised by that subschema's own
  keywords (other than ``pattern``);
* ``patternErrorMessage``: what a value failing that subschema's ``pattern`` must be,
  e.g. ``must be an absolute URL such as https://host/path``.
"""

from __future__ import annotations

import difflib
import functools
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, UnknownType, ValidationError, best_match

from flowrunner.errors import Diagnostic, FlowrunnerError, Mark

Kind = Literal["flow", "project", "on-complete", "test"]
Path = tuple[str | int, ...]
KINDS: tuple[Kind, ...] = ("flow", "project", "on-complete", "test")

_ROOT_NOUNS: dict[Kind, str] = {
    "flow": "the flow",
    "project": "the project file",
    "on-complete": "the payload",
    "test": "the test file",
}
# Objects that are named by the key holding them: "webhook 'crm'", not "'crm'".
_NAMED_TITLES = frozenset({"webhook", "webhook method"})
_SECRET_TITLE = "secret reference"
_TYPE_NOUNS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}
_DEFS = "#/$defs/"
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_KEYWORDS = frozenset(
    {"items", "contains", "additionalProperties", "propertyNames", "not", "if", "then", "else"}
    | {"unevaluatedItems", "unevaluatedProperties"}
)
_ANNOTATIONS = frozenset({"title", "description", "default", "examples"})
_PLAINTEXT = "{} holds a plaintext secret; write {{secret: NAME}} and set NAME in the environment"


@dataclass(frozen=True, slots=True)
class _Problem:
    """One message at ``path`` (at its key ``key`` when set, e.g. an unknown key)."""

    path: Path
    message: str
    key: str | int | None = None
    rule: str = "schema"
    # A whole anyOf/oneOf that failed without a clear best branch: dropped when a
    # problem under the same value is reported.
    summary: bool = False


def schema_path(kind: Kind) -> pathlib.Path:
    """The file of the ``kind`` schema: inside the installed package, else the repo's."""
    if kind not in KINDS:
        raise ValueError(f"unknown schema kind {kind!r}")
    return _schema_dir() / f"{kind}.schema.json"


@functools.cache
def _schema_dir() -> pathlib.Path:
    here = pathlib.Path(__file__).resolve().parent
    installed = here / "schemas"
    return installed if installed.is_dir() else here.parent / "schemas"


def schema_text(kind: Kind) -> str:
    """The ``kind`` schema as written in its file (what ``flowrunner schema`` prints)."""
    return schema_path(kind).read_text(encoding="utf-8")


@functools.cache
def schema(kind: Kind) -> dict[str, Any]:
    """The parsed ``kind`` schema, loaded once; callers must not modify it."""
    return cast(dict[str, Any], json.loads(schema_text(kind)))


@functools.cache
def _validator(kind: Kind) -> Draft202012Validator:
    # Resolving a $ref costs about a third of a validation; the schemas are not
    # recursive, so the validator gets a copy with every local reference inlined.
    document = schema(kind)
    return Draft202012Validator(_inline(document, document.get("$defs", {}), ()))


def _inline(node: Any, defs: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    """Schema ``node`` with ``#/$defs/NAME`` references replaced by their targets.

    A subschema left with annotations only becomes ``True``, which the validator skips
    without descending into the value.
    """
    if not isinstance(node, dict):
        return node
    out = {key: _inline_keyword(key, value, defs, seen) for key, value in node.items()}
    ref = out.get("$ref")
    name = ref.removeprefix(_DEFS) if isinstance(ref, str) and ref.startswith(_DEFS) else None
    if name is not None and name in defs and name not in seen:
        target = _inline(defs[name], defs, (*seen, name))
        siblings = {k: v for k, v in out.items() if k != "$ref"}
        if target is True and siblings.keys() <= _ANNOTATIONS:
            return True
        if isinstance(target, dict) and not (siblings.keys() & target.keys()) - _ANNOTATIONS:
            out = {**target, **siblings}  # else merging would change what is validated
    return True if out.keys() <= _ANNOTATIONS else out


def _inline_keyword(key: str, value: Any, defs: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return {name: _inline(sub, defs, seen) for name, sub in value.items()}
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [_inline(sub, defs, seen) for sub in value]
    if key in _SCHEMA_KEYWORDS:
        return _inline(value, defs, seen)
    return value


def _errors(data: Any, kind: Kind) -> list[ValidationError]:
    try:
        return list(_validator(kind).iter_errors(data))
    except (SchemaError, UnknownType, referencing.exceptions.Unresolvable) as exc:
        raise FlowrunnerError(f"the {kind} schema is broken: {exc}") from exc


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
    errors = _errors(data, kind)
    if not errors:
        return []
    diagnostics = []
    for problem in _problems(errors, _ROOT_NOUNS[kind]):
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
    errors = _errors(payload, "on-complete")
    if not errors:
        return []
    problems = _problems(errors, _ROOT_NOUNS["on-complete"])
    return sorted(f"{_location(p.path)}: {p.message}" if p.path else p.message for p in problems)


def _location(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{_quote(part)[1:-1]}"
    return text.lstrip(".")


def _problems(errors: Iterable[ValidationError], root: str) -> list[_Problem]:
    """One problem per cause: the best branch of each error, duplicates dropped."""
    found: dict[tuple[Path, str | int | None, str, str], _Problem] = {}
    for error in errors:
        best = cast(ValidationError, best_match([error])) if error.context else error
        for problem in _explain(best, root):
            found.setdefault((problem.path, problem.key, problem.rule, problem.message), problem)
    problems = list(found.values())
    return [p for p in problems if not (p.summary and _has_descendant(p, problems))]


def _has_descendant(problem: _Problem, problems: list[_Problem]) -> bool:
    size = len(problem.path)
    return any(len(p.path) > size and p.path[:size] == problem.path for p in problems)


def _explain(error: ValidationError, root: str) -> list[_Problem]:
    path: Path = tuple(error.absolute_path)
    sub = error.schema if isinstance(error.schema, Mapping) else {}
    keyword = error.validator if isinstance(error.validator, str) else ""
    if "propertyNames" in error.absolute_schema_path:
        name = str(error.instance)
        subject = f"key {_quote(name)} in {_subject(path) or root}"
        return [_Problem(path, _phrase(error, subject, root), key=name)]
    if "errorMessage" in sub and keyword != "pattern":
        return [_Problem(path, str(sub["errorMessage"]))]
    if keyword == "additionalProperties" and sub.get("additionalProperties") is False:
        return _unknown_keys(error.instance, sub, path, root)
    if keyword == "required":
        return _missing(error.instance, error.validator_value, path)
    if keyword == "type" and sub.get("title") == _SECRET_TITLE:
        return [_not_a_secret(error.instance, path)]
    message = _phrase(error, _subject(path), root)
    return [_Problem(path, message, summary=bool(error.context))]


def _subject(path: Path) -> str | None:
    """How a message names the value at ``path``: ``'timeout'``, ``item 2 of 'steps'``."""
    if not path:
        return None
    last = path[-1]
    if isinstance(last, str):
        return _quote(last)
    container = path[-2] if len(path) > 1 else None
    if isinstance(container, str):
        return f"item {last + 1} of {_quote(container)}"
    return f"item {last + 1}"


def _quote(name: object) -> str:
    """``'name'`` for a message: escaped onto one line and at most 60 characters."""
    text = str(name)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    if len(text) > 60:
        text = text[:57] + "..."
    return f"'{text}'"


def _unknown_keys(instance: Any, sub: Mapping[str, Any], path: Path, root: str) -> list[_Problem]:
    allowed = sorted(sub.get("properties", {}))
    where = _noun(sub, path, root)
    expected = f"expected one of: {', '.join(allowed)}" if allowed else "no keys are allowed"
    problems = []
    patterns = list(sub.get("patternProperties", {}))
    for key in instance:
        if key in allowed or any(re.search(p, str(key)) for p in patterns):
            continue
        message = f"unknown key {_quote(key)} in {where} ({expected})"
        close = difflib.get_close_matches(str(key), allowed, n=1)
        if close:
            message += f"; did you mean '{close[0]}'?"
        problems.append(_Problem(path, message, key=key))
    return problems


def _noun(sub: Mapping[str, Any], path: Path, root: str) -> str:
    """How a message names the object at ``path``: ``webhook step``, ``webhook 'crm'``."""
    title = sub.get("title")
    if not path:
        return root
    if title in _NAMED_TITLES and isinstance(path[-1], str):
        return f"{title} {_quote(path[-1])}"
    return str(title) if title else (_subject(path) or root)


def _missing(instance: Any, required: Any, path: Path) -> list[_Problem]:
    return [
        _Problem(path, f"missing required key '{name}'")
        for name in required
        if name not in instance
    ]


def _not_a_secret(value: Any, path: Path) -> _Problem:
    subject = _subject(path) or "the document"
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return _Problem(path, _PLAINTEXT.format(subject), rule="plaintext-secret")
    return _Problem(path, f"{subject} must be a secret {{secret: NAME}}, got {_kind_of(value)}")


def _phrase(error: ValidationError, subject: str | None, root: str) -> str:
    """``<subject> must ...`` for one failed keyword (``root`` names the document)."""
    keyword = error.validator if isinstance(error.validator, str) else ""
    if keyword == "type":
        expected = " or ".join(_TYPE_NOUNS.get(t, t) for t in _as_list(error.validator_value))
        got = _kind_of(error.instance)
        if subject is None:
            return f"expected {expected}, got {got}"
        return f"{subject} must be {expected}, got {got}"
    sub = error.schema if isinstance(error.schema, Mapping) else {}
    predicate = _PREDICATES.get(keyword, _invalid)(error.validator_value, sub)
    return f"{subject or root} {predicate}"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _literal(value: Any, quote: bool) -> str:
    if isinstance(value, str):
        return f"'{value}'" if quote else value
    return json.dumps(value)


def _enum(values: Any, sub: Mapping[str, Any]) -> str:
    if len(values) == 1:
        return f"must be {_literal(values[0], quote=True)}"
    return "must be one of: " + ", ".join(sorted(_literal(v, quote=False) for v in values))


def _pattern(pattern: Any, sub: Mapping[str, Any]) -> str:
    custom = sub.get("patternErrorMessage")
    if custom:
        return str(custom)
    return "must match " + str(pattern).removeprefix("^").removesuffix("$")


def _size(noun: str) -> Callable[[Any, Mapping[str, Any]], str]:
    def at_least(limit: Any, sub: Mapping[str, Any]) -> str:
        if limit == 1:
            return "must not be empty"
        return f"must have at least {limit} {noun}"

    return at_least


def _max_properties(limit: Any, sub: Mapping[str, Any]) -> str:
    names = sorted(sub.get("properties", {}))
    if limit == 1 and sub.get("minProperties") == 1 and names:
        return "must have exactly one of: " + ", ".join(names)
    return f"must have at most {limit} keys"


def _min_properties(limit: Any, sub: Mapping[str, Any]) -> str:
    if sub.get("maxProperties") == 1 and limit == 1:
        return _max_properties(1, sub)
    return _size("keys")(limit, sub)


def _invalid(value: Any, sub: Mapping[str, Any]) -> str:
    return "is not valid here"


_Predicate = Callable[[Any, Mapping[str, Any]], str]
_PREDICATES: dict[str, _Predicate] = {
    "enum": _enum,
    "const": lambda value, sub: f"must be {_literal(value, quote=True)}",
    "pattern": _pattern,
    "minimum": lambda value, sub: f"must be at least {value}",
    "maximum": lambda value, sub: f"must be at most {value}",
    "exclusiveMinimum": lambda value, sub: f"must be greater than {value}",
    "exclusiveMaximum": lambda value, sub: f"must be less than {value}",
    "minLength": lambda value, sub: (
        "must not be empty" if value == 1 else f"must be at least {value} characters long"
    ),
    "maxLength": lambda value, sub: f"must be at most {value} characters long",
    "minItems": _size("items"),
    "maxItems": lambda value, sub: f"must have at most {value} items",
    "uniqueItems": lambda value, sub: "must not contain the same item twice",
    "minProperties": _min_properties,
    "maxProperties": _max_properties,
    "anyOf": lambda value, sub: "matches none of its allowed forms",
    "oneOf": lambda value, sub: "must match exactly one of its allowed forms",
}
