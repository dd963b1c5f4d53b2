"""The on-complete payload (the "predefined format"): a pure builder."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flowrunner.execution.record import ExecutionRecord
from flowrunner.jsoncodec import compact, dumps_strict
from flowrunner.times import iso

# callDetails field <- $call name
CALL_DETAILS = (
    ("cdrId", "cdr"),
    ("startTime", "start"),
    ("connectTime", "connect"),
    ("endTime", "end"),
    ("calleeNumber", "dnis"),
    ("didNumber", "did"),
    ("duration", "duration"),
    ("hangupCause", "hangup_cause"),
)


def key_value(value: Any) -> str | None:
    """A key's value as the original format has it: text, JSON for the rest, null kept."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    # the JSON of the usual scalars, without calling the encoder
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if isinstance(value, str):  # a subclass of str
        return value
    return compact(value)


def _text(value: Any) -> str | None:
    return None if value is None else key_value(value)


def call_details(call: Mapping[str, Any]) -> dict[str, Any]:
    """``callDetails[0]``: only the fields whose inputs are present."""
    details: dict[str, Any] = {}
    for field, name in CALL_DETAILS:
        value = call.get(name)
        if value is not None:
            details[field] = value if type(value) is str else key_value(value)
    if call.get("direction") is not None:
        details["incoming"] = call["direction"] == "inbound"
    return details


def build_payload(
    record: ExecutionRecord, started: str | None = None, ended: str | None = None
) -> dict[str, Any]:
    """The payload pushed to the on-complete webhook for ``record`` (``started`` and
    ``ended``: its times as :func:`~flowrunner.times.iso` text, when already written)."""
    call = record.call
    recordings = call.get("recording_urls")
    return {
        "phonon-uuid": _text(call.get("uuid")) or record.execution_id,
        "request-id": _text(call.get("request_id")),
        "cli": _text(call.get("cli")),
        "flow": record.flow,
        "flowStatus": record.status,
        "error": record.error,
        "callDetails": [call_details(call)],
        "keys": [
            {
                "name": "$flow.key." + name,
                "value": value if type(value) is str else key_value(value),
            }
            for name, value in record.keys.items()
        ],
        "recordingUrls": [str(u) for u in recordings] if isinstance(recordings, list) else [],
        "startedAt": started or iso(record.started_at),
        "endedAt": ended or iso(record.ended_at),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and stored in the outbox); raises UnicodeEncodeError for a
    lone surrogate, which UTF-8 cannot carry."""
    return dumps_strict(payload)


def webhook_id(execution_id: str) -> str:
    """The ``webhook-id`` of an execution's push, stable across every retry."""
    return f"msg_{execution_id}"
