"""The body of ``POST /v1/flows/{flow}/executions``: read, checked, turned into inputs.

The body is checked against ``schemas/executions-request.schema.json`` (also part of
the OpenAPI document); every problem is reported with the JSON Pointer of its value.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re
from typing import Any

from jsonschema import Draft202012Validator

from flowrunner.jsoncodec import loads
from flowrunner.server.problems import Problem, pointer
from flowrunner.source.schema import schema_path

MAX_BODY = 256 * 1024  # bytes
MAX_ERRORS = 20  # schema problems listed in one answer
FLOW_KEY = "$flow.key."


def request_schema_path() -> pathlib.Path:
    """The file of the request body schema (beside the other schemas)."""
    return schema_path("flow").parent / "executions-request.schema.json"


@functools.cache
def request_schema() -> dict[str, Any]:
    """The request body schema, parsed once; callers must not modify it."""
    data: dict[str, Any] = json.loads(request_schema_path().read_text(encoding="utf-8"))
    return data


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(request_schema())


def parse(raw: bytes) -> list[dict[str, Any]]:
    """The calls of a request body, each ``{"client-identifier"?, "call", "keys",
    "user_keys"}`` with ``keys`` as a mapping.

    Raises :class:`Problem` ``bad-json`` or ``invalid-body`` (with pointers).
    """
    try:
        data = loads(raw)
    except (ValueError, RecursionError):
        raise Problem("bad-json", "the body is not valid UTF-8 JSON") from None
    if conforms(data):
        return [_call(c) for c in data["calls"]]
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.path)))
    if errors:
        listed = [
            {"pointer": pointer(list(e.absolute_path)), "detail": _detail(e.message)}
            for e in errors[:MAX_ERRORS]
        ]
        more = f" (the first {MAX_ERRORS} are listed)" if len(errors) > MAX_ERRORS else ""
        raise Problem("invalid-body", f"{len(errors)} problem(s) in the body{more}", errors=listed)
    return [_call(c) for c in data["calls"]]


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The name patterns of the schema (a variable name; a flow key's name in a list)."""
    defs = request_schema()["$defs"]
    name = defs["name"]["pattern"]
    key = defs["key"]["properties"]["name"]["pattern"]
    return re.compile(name), re.compile(key)


_CALL_MEMBERS = frozenset({"client-identifier", "call", "keys", "user_keys"})
_KEY_MEMBERS = frozenset({"name", "value"})


def conforms(data: Any) -> bool:
    """True when ``data`` matches the request schema: the same rules, checked directly.

    jsonschema takes about 0.8 ms per call of a request; this takes a few µs. It is
    only a fast path: when it says no, jsonschema finds and locates the problems (and a
    property test holds the two to the same verdict).
    """
    if not isinstance(data, dict) or data.keys() != {"calls"}:
        return False
    calls = data["calls"]
    if not isinstance(calls, list) or not 1 <= len(calls) <= 500:
        return False
    return all(_call_conforms(c) for c in calls)


def _call_conforms(call: Any) -> bool:
    if not isinstance(call, dict) or not call.keys() <= _CALL_MEMBERS:
        return False
    ident = call.get("client-identifier", "")
    if not isinstance(ident, str) or len(ident) > 256:
        return False
    name, _ = _patterns()
    for member in ("call", "user_keys"):
        value = call.get(member, {})
        if not isinstance(value, dict) or not all(name.search(k) for k in value):
            return False
    keys = call.get("keys", {})
    if isinstance(keys, dict):
        return all(name.search(k) for k in keys)
    return isinstance(keys, list) and len(keys) <= 1000 and all(map(_key_conforms, keys))


def _key_conforms(key: Any) -> bool:
    _, pattern = _patterns()
    return (
        isinstance(key, dict)
        and key.keys() <= _KEY_MEMBERS
        and isinstance(key.get("name"), str)
        and pattern.search(key["name"]) is not None
    )


def _call(data: dict[str, Any]) -> dict[str, Any]:
    keys = data.get("keys") or {}
    if isinstance(keys, list):
        keys = {k["name"].removeprefix(FLOW_KEY): k.get("value") for k in keys}
    out = {"call": data.get("call") or {}, "keys": keys, "user_keys": data.get("user_keys") or {}}
    if "client-identifier" in data:
        out["client-identifier"] = data["client-identifier"]
    return out


def _detail(message: str) -> str:
    """jsonschema's message, cut short: it may quote the value."""
    return message if len(message) <= 200 else message[:199] + "…"


def fingerprint(flow: str, calls: list[dict[str, Any]]) -> str:
    """What tells two requests with one Idempotency-Key apart: the flow and the calls
    as parsed (the same JSON written with other spacing or member order is the same)."""
    text = json.dumps([flow, calls], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
