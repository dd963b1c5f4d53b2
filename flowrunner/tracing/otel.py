"""The OpenTelemetry side of tracing: the SDK's tracer provider with its exporters, the
spans of executions and steps, and client spans around HTTP requests.

Exporters: ``--trace-file FILE`` writes each finished span as one JSON line
(:mod:`flowrunner.tracing.jsonlines`); ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``..._TRACES_ENDPOINT``) sends spans with the OTLP exporter, over HTTP
(``http/protobuf``, the default) or gRPC (``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``),
configured by the usual ``OTEL_*`` variables.
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the service (default
``flowrunner``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flowrunner import __version__
from flowrunner.execution.context import Span
from flowrunner.net.request import HttpRequest, HttpResponse
from flowrunner.net.transport import Transport
from flowrunner.tracing.jsonlines import JsonLinesExporter

PROPAGATOR = TraceContextTextMapPropagator()
PUSH_PREFIX = "msg_"  # an on-complete push's webhook-id is msg_<execution id>


class SpanHandle:
    """A :class:`~flowrunner.execution.context.Span` over an SDK span."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, attributes: Mapping[str, str | int | float | bool]) -> None:
        self.span.set_attributes(attributes)

    def fail(self, message: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, message))


class OtelTracer:
    """Spans of executions and steps, and client spans of requests, from ``provider``."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("flowrunner", __version__)
        # the spans of executions in flight, by execution id: an on-complete push sent
        # from another task (a batch sends pushes in lots) still finds its parent
        self.live: dict[str, trace.Span] = {}

    @contextmanager
    def execution(
        self, execution_id: str, flow: str, traceparent: str | None = None
    ) -> Iterator[Span]:
        parent = PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        attributes = {"flowrunner.flow": flow, "flowrunner.execution_id": execution_id}
        with self.tracer.start_as_current_span(
            f"execution {flow}", context=parent, attributes=attributes
        ) as span:
            self.live[execution_id] = span
            try:
                yield SpanHandle(span)
            finally:
                self.live.pop(execution_id, None)

    @contextmanager
    def step(self, step_id: str, kind: str) -> Iterator[Span]:
        attributes = {"flowrunner.step.id": step_id, "flowrunner.step.kind": kind}
        with self.tracer.start_as_current_span(f"step {step_id}", attributes=attributes) as span:
            yield SpanHandle(span)

    def transport(self, inner: Transport) -> Transport:
        return TracedTransport(inner, self)

    def close(self) -> None:
        self.provider.shutdown()

    def parent_of(self, request: HttpRequest) -> otel_context.Context | None:
        """The context a client span starts in: for an on-complete push, its execution's
        span while that runs (the push may be sent from another task, which may carry
        another execution's context); else the current context."""
        webhook_id = _header(request.headers, "webhook-id") or ""
        if webhook_id.startswith(PUSH_PREFIX):
            span = self.live.get(webhook_id[len(PUSH_PREFIX) :])
            if span is not None:
                return trace.set_span_in_context(span)
        return None


class TracedTransport:
    """A transport that wraps each request in a client span and sends ``traceparent``."""

    def __init__(self, inner: Transport, tracer: OtelTracer) -> None:
        self.inner = inner
        self.tracer = tracer

    @property
    def limit(self) -> int:
        """The wrapped transport's connection limit (the outbox sizes its lots by it)."""
        return int(getattr(self.inner, "limit", 1))

    async def send(self, request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.url)
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            # no query string: it carries the call's values (numbers, names)
            "url.full": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "server.address": parts.hostname or "",
        }
        if parts.port is not None:
            attributes["server.port"] = parts.port
        with self.tracer.tracer.start_as_current_span(
            request.method,
            context=self.tracer.parent_of(request),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        ) as span:
            headers = dict(request.headers)
            PROPAGATOR.inject(headers)
            response = await self.inner.send(dataclasses.replace(request, headers=headers))
            if response.status is not None:
                span.set_attribute("http.response.status_code", response.status)
            if response.failure is not None:
                span.set_attribute("error.type", response.failure)
                span.set_status(Status(StatusCode.ERROR, response.message or response.failure))
            elif response.status is not None and response.status >= 400:
                span.set_attribute("error.type", str(response.status))
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status}"))
            return response


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    """The OTLP exporter the environment asks for (it reads its own ``OTEL_*``)."""
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip().lower() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter()


def build(trace_file: Path | None, env: Mapping[str, str], *, append: bool = False) -> OtelTracer:
    """A tracer exporting to ``trace_file`` and, when the environment names an OTLP
    endpoint, there. Raises OSError when ``trace_file`` cannot be opened, ImportError
    when the OTLP exporter is not installed."""
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or "flowrunner"})
    provider = TracerProvider(resource=resource)
    if trace_file is not None:
        provider.add_span_processor(
            BatchSpanProcessor(JsonLinesExporter(trace_file, append=append))
        )
    if any(
        env.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        provider.add_span_processor(BatchSpanProcessor(otlp_exporter(env)))
    return OtelTracer(provider)
