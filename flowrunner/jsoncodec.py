"""JSON for the hot path: orjson (a dependency), else ``json`` where orjson cannot be imported.

Both give the same compact, UTF-8 text for the data flowrunner handles (``dumps``
falls back to ``json`` for what orjson refuses, such as integers over 64 bits, and
``loads`` for text that may hold one), and both refuse the same input (``loads``: NaN
and Infinity, lone surrogate escapes).
"""

from __future__ import annotations

import importlib
import json
import re
from json import encoder as json_encoder
from typing import Any


def optional_module(name: str) -> Any:
    """The module ``name`` if it is installed, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


orjson = optional_module("orjson")

# the C encoder behind json.dumps (None without the C accelerator, as on PyPy)
c_make_encoder: Any = getattr(json_encoder, "c_make_encoder", None)

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# a run of 19 digits may be an integer orjson cannot hold: digits become b"1" and
# everything else b" ", so that one bytes.find (not a regular expression, four times
# slower than orjson's parse of a typical line) spots the run
_DIGIT_MAP = bytes(0x31 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"1" * 19


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(raw: bytes) -> Any:
    """Decode UTF-8 JSON; raises ValueError (or RecursionError, nested too deeply).

    Integers are exact at any size: orjson reads one over 64 bits as a float, so text
    holding a run of 19 digits or more is decoded by ``json`` instead."""
    if orjson is not None and raw.translate(_DIGIT_MAP).find(_LONG_RUN) < 0:
        return orjson.loads(raw)
    value = _DECODER.decode(raw.decode("utf-8"))
    if _SURROGATE_ESCAPE.search(raw):
        # orjson refuses a lone surrogate escape ("\ud800"): refuse it the same way
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def compact(data: Any) -> str:
    """``json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)``.

    Calls the C encoder directly when there is one: ``json.dumps`` with these arguments
    builds a new ``JSONEncoder`` on every call, which costs as much as a small document.
    """
    if c_make_encoder is None:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    # a new markers dict each time: it guards against cycles and must not be shared
    encode = c_make_encoder(
        {}, str, json_encoder.encode_basestring, None, ":", ",", False, False, True
    )
    return "".join(encode(data, 0))


def dumps_strict(data: Any) -> bytes:
    """Compact UTF-8 JSON of data to send: like :func:`dumps`, but a lone surrogate in a
    string raises UnicodeEncodeError instead of being written as an escape."""
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(data, default=str)
            return encoded
        except TypeError:  # a lone surrogate, an integer over 64 bits: json decides
            pass
    return compact(data).encode("utf-8")


def dumps(data: Any) -> bytes:
    """Compact JSON as UTF-8 bytes; values JSON cannot hold are written as strings."""
    if orjson is not None:
        try:
            encoded: bytes = orjson.dumps(data, default=str)
            return encoded
        except TypeError:  # an integer over 64 bits, a non-string key: json copes
            pass
    text = compact(data)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, so the bytes stay UTF-8
        return json.dumps(data, separators=(",", ":"), default=str).encode("ascii")
