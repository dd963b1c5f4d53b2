"""jsonschema's full validation of a document, turned into one-line problems of our own.

This is the only module that imports jsonschema; :func:`flowrunner.source.schema.check`
comes here only for a document its quick check did not find valid. Each problem sits at
the most specific position: an unknown or badly named key at the key, anything else at
the value. Messages name keys but never quote a value, which may be a secret.

Two keywords outside the standard tune the messages; validators ignore them and editors
built on vscode-json-languageservice show them too:

* ``errorMessage``: the whole message for any error raised by that subschema's own
  keywords (other than ``pattern``);
* ``patternErrorMessage``: what a value failing that subschema's ``pattern`` must be,
  e.g. ``must be an absolute URL such as https://host/path``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, UnknownType, ValidationError, best_match

from flowrunner.document import Path
from flowrunner.errors import FlowrunnerError

_ROOT_NOUNS: dict[str, str] = {
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
_PLAINTEXT = "{} holds a plaintext secret; write {{secret: NAME}} and set NAME in the environment"


@dataclass(frozen=True, slots=True)
class Problem:
    """One message at ``path`` (at its key ``key`` when set, e.g. an unknown key)."""

    path: Path
    message: str
    key: str | int | None = None
    rule: str = "schema"
    # A whole anyOf/oneOf that failed without a clear best branch: dropped when a
    # problem under the same value is reported.
    summary: bool = False


_VALIDATORS: dict[str, Draft202012Validator] = {}


def validator(kind: str, schema: Mapping[str, Any] | bool) -> Draft202012Validator:
    """jsonschema's validator of ``schema``, the ``kind`` schema (kept per kind)."""
    found = _VALIDATORS.get(kind)
    if found is None:
        found = _VALIDATORS[kind] = Draft202012Validator(schema)
    return found


def problems(data: Any, kind: str, schema: Mapping[str, Any] | bool) -> list[Problem]:
    """Every problem of ``data`` against ``schema``, the ``kind`` schema ([] when valid).

    Raises ``FlowrunnerError`` if the schema itself is broken.
    """
    try:
        errors = list(validator(kind, schema).iter_errors(data))
    except (SchemaError, UnknownType, referencing.exceptions.Unresolvable) as exc:
        raise FlowrunnerError(f"the {kind} schema is broken: {exc}") from exc
    return explain_all(errors, _ROOT_NOUNS[kind]) if errors else []


def location(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{_quote(part)[1:-1]}"
    return text.lstrip(".")


def explain_all(errors: Iterable[ValidationError], root: str) -> list[Problem]:
    """One problem per cause: the best branch of each error, duplicates dropped."""
    found: dict[tuple[Path, str | int | None, str, str], Problem] = {}
    for error in errors:
        best = cast(ValidationError, best_match([error])) if error.context else error
        for problem in _explain(best, root):
            found.setdefault((problem.path, problem.key, problem.rule, problem.message), problem)
    problems = list(found.values())
    return [p for p in problems if not (p.summary and _has_descendant(p, problems))]


def _has_descendant(problem: Problem, problems: list[Problem]) -> bool:
    size = len(problem.path)
    return any(len(p.path) > size and p.path[:size] == problem.path for p in problems)


def _explain(error: ValidationError, root: str) -> list[Problem]:
    path: Path = tuple(error.absolute_path)
    sub = error.schema if isinstance(error.schema, Mapping) else {}
    keyword = error.validator if isinstance(error.validator, str) else ""
    if "propertyNames" in error.absolute_schema_path:
        name = str(error.instance)
        subject = f"key {_quote(name)} in {_subject(path) or root}"
        return [Problem(path, _phrase(error, subject, root), key=name)]
    if "errorMessage" in sub and keyword != "pattern":
        return [Problem(path, str(sub["errorMessage"]))]
    if keyword == "additionalProperties" and sub.get("additionalProperties") is False:
        return _unknown_keys(error.instance, sub, path, root)
    if keyword == "required":
        return _missing(error.instance, error.validator_value, path)
    if keyword == "type" and sub.get("title") == _SECRET_TITLE:
        return [_not_a_secret(error.instance, path)]
    message = _phrase(error, _subject(path), root)
    return [Problem(path, message, summary=bool(error.context))]


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


def _unknown_keys(instance: Any, sub: Mapping[str, Any], path: Path, root: str) -> list[Problem]:
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
        problems.append(Problem(path, message, key=key))
    return problems


def _noun(sub: Mapping[str, Any], path: Path, root: str) -> str:
    """How a message names the object at ``path``: ``webhook step``, ``webhook 'crm'``."""
    title = sub.get("title")
    if not path:
        return root
    if title in _NAMED_TITLES and isinstance(path[-1], str):
        return f"{title} {_quote(path[-1])}"
    return str(title) if title else (_subject(path) or root)


def _missing(instance: Any, required: Any, path: Path) -> list[Problem]:
    return [
        Problem(path, f"missing required key '{name}'") for name in required if name not in instance
    ]


def _not_a_secret(value: Any, path: Path) -> Problem:
    subject = _subject(path) or "the document"
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return Problem(path, _PLAINTEXT.format(subject), rule="plaintext-secret")
    return Problem(path, f"{subject} must be a secret {{secret: NAME}}, got {_kind_of(value)}")


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
