"""Expectation matching: a mapping matches when each of its members matches, a list
element by element with the same length, a scalar by value.

:func:`mismatch` returns the first difference as a :class:`Mismatch` (its path, the
expected and the actual value), or None when everything matches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]

_MISSING: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class Mismatch:
    """The first difference: at ``path``, ``expected`` was wanted, ``actual`` found."""

    path: Path
    expected: Any
    actual: Any
    note: str = ""

    def describe(self, prefix: str = "") -> str:
        """``expect.keys.order_id: expected 'A-1', got 'A-2'``."""
        where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        actual = "nothing" if self.actual is _MISSING else show(self.actual)
        text = f"{where.lstrip('.')}: expected {show(self.expected)}, got {actual}"
        return text + (f" ({self.note})" if self.note else "")


def show(value: Any) -> str:
    """A value as the failure message prints it (JSON, strings in single quotes)."""
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=False)


def mismatch(expected: Any, actual: Any, path: Path = ()) -> Mismatch | None:
    """The first place where ``actual`` does not match ``expected``, or None."""
    if isinstance(expected, Mapping):
        return _mapping(expected, actual, path)
    if isinstance(expected, list):
        return _list(expected, actual, path)
    if _same(expected, actual):
        return None
    return Mismatch(path=path, expected=expected, actual=actual)


def _same(expected: Any, actual: Any) -> bool:
    # a boolean is not the number 1, nor 1 the boolean true
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


def _mapping(expected: Mapping[str, Any], actual: Any, path: Path) -> Mismatch | None:
    if not isinstance(actual, Mapping):
        return Mismatch(path=path, expected=dict(expected), actual=actual)
    for key, want in expected.items():
        if key not in actual:
            return Mismatch(path=(*path, key), expected=want, actual=_MISSING)
        found = mismatch(want, actual[key], (*path, key))
        if found is not None:
            return found
    return None


def _list(expected: list[Any], actual: Any, path: Path) -> Mismatch | None:
    if not isinstance(actual, list):
        return Mismatch(path=path, expected=expected, actual=actual)
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        found = mismatch(want, got, (*path, i))
        if found is not None:
            return found
    if len(expected) != len(actual):
        note = f"{len(expected)} expected, {len(actual)} found"
        return Mismatch(path=path, expected=expected, actual=actual, note=note)
    return None
