"""``--trace-file``: finished spans as JSON lines, in the shape of the SDK's own
``ReadableSpan.to_json`` (one object a line), written faster: the resource is encoded
once per file, not once per span, and the encoder is the fast one of
:mod:`flowrunner.jsoncodec`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from flowrunner.jsoncodec import compact


def _iso(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as the SDK writes them: ``2026-12-04T17:56:15.053599Z``."""
    if not ns:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (attributes or {}).items()}


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """The members of ``span.to_json()`` but ``resource``, in its order."""
    ctx = span.context
    status: dict[str, str] = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    return {
        "name": span.name,
        "context": {
            "trace_id": f"0x{ctx.trace_id:032x}",
            "span_id": f"0x{ctx.span_id:016x}",
            "trace_state": repr(ctx.trace_state),
        }
        if ctx is not None
        else None,
        "kind": str(span.kind),
        "parent_id": f"0x{span.parent.span_id:016x}" if span.parent is not None else None,
        "start_time": _iso(span.start_time),
        "end_time": _iso(span.end_time),
        "status": status,
        "attributes": _attributes(span.attributes),
        "events": [
            {
                "name": e.name,
                "timestamp": _iso(e.timestamp),
                "attributes": _attributes(e.attributes),
            }
            for e in span.events
        ],
        "links": [
            {
                "context": {
                    "trace_id": f"0x{link.context.trace_id:032x}",
                    "span_id": f"0x{link.context.span_id:016x}",
                    "trace_state": repr(link.context.trace_state),
                },
                "attributes": _attributes(link.attributes),
            }
            for link in span.links
        ],
    }


class JsonLinesExporter(SpanExporter):
    """Each span as one line of JSON, appended with one ``write`` per batch of spans
    (whole lines, so worker processes may share the file)."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self.fd: int | None = os.open(path, flags, 0o644)
        self._resource: tuple[int, str] | None = None  # (id of the resource, its JSON)

    def _resource_json(self, span: ReadableSpan) -> str:
        resource = span.resource
        if self._resource is None or self._resource[0] != id(resource):
            data = {
                "attributes": _attributes(resource.attributes),
                "schema_url": resource.schema_url,
            }
            self._resource = (id(resource), compact(data))
        return self._resource[1]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.fd is None:
            return SpanExportResult.FAILURE
        lines = [
            compact(span_dict(span))[:-1] + ',"resource":' + self._resource_json(span) + "}\n"
            for span in spans
        ]
        data = "".join(lines).encode("utf-8", "replace")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
