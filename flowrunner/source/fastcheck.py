"""A quick answer to "is this document valid against that schema?", importing nothing.

It knows the JSON Schema 2020-12 keywords flowrunner's schemas use, with jsonschema's
meaning of each (``integer`` accepts ``1.0``, booleans are neither numbers nor equal to
them, ``pattern`` is ``re.search``, ``format`` is an annotation). Where a schema uses a
keyword it does not know, it gives no answer rather than a guess.

:func:`is_valid` is True only when the document is valid; False means "not valid, or not
known": the caller then asks jsonschema, which also explains what is wrong. A test
holds the two to the same answer over the golden cases and generated documents.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sized
from typing import Any

# keywords that never make a document invalid
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "$schema", "$id", "$defs"}
    | {"format", "deprecated", "readOnly", "writeOnly", "markdownDescription"}
    | {"errorMessage", "patternErrorMessage", "defaultSnippets"}
)


class _Unknown(Exception):
    """The schema uses something this checker does not decide."""


def is_valid(schema: Mapping[str, Any] | bool, instance: Any) -> bool:
    """True when ``instance`` is valid against ``schema`` (references already inlined);
    False when it is not, or when the schema holds a keyword this module does not know."""
    try:
        return _valid(schema, instance)
    except (_Unknown, RecursionError, re.error, TypeError):
        return False


def _valid(schema: Any, instance: Any) -> bool:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, Mapping):
        raise _Unknown
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        check = _KEYWORDS.get(keyword)
        if check is None:
            if keyword == "then" or keyword == "else":
                continue  # decided with "if"
            raise _Unknown
        if not check(value, instance, schema):
            return False
    return True


def _is_type(name: str, value: Any) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "number":
        return isinstance(value, int | float)
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    raise _Unknown


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``; ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _type(expected: Any, instance: Any, _: Any) -> bool:
    names = expected if isinstance(expected, list) else [expected]
    return any(_is_type(name, instance) for name in names)


def _properties(props: Any, instance: Any, _: Any) -> bool:
    if not isinstance(instance, dict):
        return True
    return all(_valid(sub, instance[key]) for key, sub in props.items() if key in instance)


def _additional(sub: Any, instance: Any, schema: Mapping[str, Any]) -> bool:
    if not isinstance(instance, dict):
        return True
    known = schema.get("properties", {})
    patterns = [_regex(p) for p in schema.get("patternProperties", {})]
    for key, value in instance.items():
        if key in known or any(p.search(key) for p in patterns):
            continue
        if not _valid(sub, value):
            return False
    return True


def _pattern_properties(props: Any, instance: Any, _: Any) -> bool:
    if not isinstance(instance, dict):
        return True
    for pattern, sub in props.items():
        regex = _regex(pattern)
        for key, value in instance.items():
            if regex.search(key) and not _valid(sub, value):
                return False
    return True


def _required(names: Any, instance: Any, _: Any) -> bool:
    return not isinstance(instance, dict) or all(name in instance for name in names)


def _property_names(sub: Any, instance: Any, _: Any) -> bool:
    return not isinstance(instance, dict) or all(_valid(sub, key) for key in instance)


def _items(sub: Any, instance: Any, schema: Mapping[str, Any]) -> bool:
    if "prefixItems" in schema:
        raise _Unknown
    return not isinstance(instance, list) or all(_valid(sub, item) for item in instance)


def _unique(flag: Any, instance: Any, _: Any) -> bool:
    if not flag or not isinstance(instance, list):
        return True
    return all(
        not _equal(a, b) for i, a in enumerate(instance) for b in instance[i + 1 :]
    )  # lists in a flow are short


def _pattern(pattern: Any, instance: Any, _: Any) -> bool:
    return not isinstance(instance, str) or _regex(pattern).search(instance) is not None


def _if(sub: Any, instance: Any, schema: Mapping[str, Any]) -> bool:
    branch = "then" if _valid(sub, instance) else "else"
    return _valid(schema.get(branch, True), instance)


def _size(kind: type[Sized], most: bool) -> Callable[[Any, Any, Any], bool]:
    def check(limit: Any, instance: Any, _: Any) -> bool:
        if not isinstance(instance, kind):
            return True
        size = len(instance)
        return bool(size <= limit if most else size >= limit)

    return check


def _bound(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any, Any], bool]:
    def check(limit: Any, instance: Any, _: Any) -> bool:
        return not _number(instance) or bool(test(instance, limit))

    return check


_KEYWORDS: dict[str, Callable[[Any, Any, Mapping[str, Any]], bool]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "patternProperties": _pattern_properties,
    "required": _required,
    "propertyNames": _property_names,
    "items": _items,
    "uniqueItems": _unique,
    "if": _if,
    "enum": lambda values, instance, _: any(_equal(instance, v) for v in values),
    "const": lambda value, instance, _: _equal(instance, value),
    "pattern": lambda p, instance, _: (
        not isinstance(instance, str) or bool(_regex(p).search(instance))
    ),
    "minLength": _size(str, most=False),
    "maxLength": _size(str, most=True),
    "minItems": _size(list, most=False),
    "maxItems": _size(list, most=True),
    "minProperties": _size(dict, most=False),
    "maxProperties": _size(dict, most=True),
    "minimum": _bound(lambda v, limit: v >= limit),
    "maximum": _bound(lambda v, limit: v <= limit),
    "exclusiveMinimum": _bound(lambda v, limit: v > limit),
    "exclusiveMaximum": _bound(lambda v, limit: v < limit),
    "allOf": lambda subs, instance, _: all(_valid(s, instance) for s in subs),
    "anyOf": lambda subs, instance, _: any(_valid(s, instance) for s in subs),
    "oneOf": lambda subs, instance, _: sum(1 for s in subs if _valid(s, instance)) == 1,
    "not": lambda sub, instance, _: not _valid(sub, instance),
}
