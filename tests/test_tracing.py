"""Traces, checked with the OpenTelemetry SDK's own in-memory exporter: an execution
span per execution (one trace each), a span per step inside it, a client span per
request inside its step (or its execution, for the push), the ``traceparent`` the
receiver got; and that nothing of OpenTelemetry is imported unless tracing is on."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Receiver, free_port, plan_of, write_project

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from flowrunner.execution.context import Inputs  # noqa: E402
from flowrunner.runner import Runner  # noqa: E402
from flowrunner.secrets import Secrets  # noqa: E402
from flowrunner.tracing import valid_traceparent, wanted  # noqa: E402
from flowrunner.tracing.otel import OtelTracer  # noqa: E402

FLOW = """\
flow: traced
on_complete: true
steps:
  - id: note
    operation: assign
    set: {caller: $call.cli}
  - id: skipped
    when: false
    operation: assign
    set: {never: true}
  - id: ask
    webhook: hook
    method: lookup
    retry: {attempts: 3, delay: 0.01, jitter: 0}
"""


@pytest.fixture
def spans() -> tuple[OtelTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelTracer(provider), exporter


def project(tmp_path: Path, receiver: Receiver) -> Path:
    hooks = {
        "hook": {"url": receiver.at("/hook"), "methods": {"lookup": {}}},
        "events": {"url": receiver.at("/events"), "default": True},
    }
    return write_project(tmp_path, hooks, {"traced": FLOW})


def scripted(receiver: Receiver, *statuses: int) -> None:
    answered: list[int] = []

    async def answer(_: web.Request) -> web.StreamResponse:
        status = statuses[min(len(answered), len(statuses) - 1)]
        answered.append(status)
        return web.json_response({}, status=status)

    receiver.on("/hook", answer)


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_span_tree_of_one_execution_and_the_traceparent_sent(
    receiver: Receiver, tmp_path: Path, spans: tuple[OtelTracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    scripted(receiver, 503, 200)
    plan = plan_of(project(tmp_path, receiver), "traced")
    async with Runner(plan, Secrets(env={}), tracer=tracer) as runner:
        record = await runner.run(Inputs(call={"cli": "+1555"}))
    assert record.status == "COMPLETED"
    finished = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1  # one trace
    [execution] = by_name(finished, "execution traced")
    assert execution.parent is None
    assert execution.attributes["flowrunner.execution_id"] == record.execution_id
    assert execution.attributes["flowrunner.status"] == "COMPLETED"
    steps = [s for s in finished if s.name.startswith("step ")]
    assert sorted(s.name for s in steps) == ["step ask", "step note", "step skipped"]
    assert all(parent_id(s) == execution.context.span_id for s in steps)
    [ask] = by_name(finished, "step ask")
    assert ask.attributes["flowrunner.step.attempts"] == 2
    assert ask.attributes["flowrunner.webhook"] == "hook"
    assert by_name(finished, "step skipped")[0].attributes["flowrunner.step.outcome"] == "skipped"
    calls = [
        s for s in finished if s.kind == SpanKind.CLIENT and parent_id(s) == ask.context.span_id
    ]
    assert [c.attributes["http.response.status_code"] for c in calls] == [503, 200]
    assert calls[0].status.status_code == StatusCode.ERROR
    # what the receiver got is each attempt's own client span
    sent = [r.headers["traceparent"] for r in receiver.hits("/hook")]
    assert sent == [traceparent(c) for c in calls]
    assert len({r.headers["Idempotency-Key"] for r in receiver.hits("/hook")}) == 1
    # the push: a client span of the execution
    [push] = [s for s in finished if s.kind == SpanKind.CLIENT and s not in calls]
    assert parent_id(push) == execution.context.span_id
    assert receiver.hits("/events")[0].headers["traceparent"] == traceparent(push)
    assert "?" not in str(push.attributes["url.full"])


async def test_each_execution_of_a_batch_is_its_own_trace(
    receiver: Receiver, tmp_path: Path, spans: tuple[OtelTracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    plan = plan_of(project(tmp_path, receiver), "traced")
    runner = Runner(plan, Secrets(env={}), tracer=tracer, group_commit=True, concurrency=8)
    import asyncio

    async with runner:
        done = await asyncio.gather(
            *(runner.run_encoded(Inputs(call={"cli": f"+{i}"})) for i in range(6))
        )
    finished = exporter.get_finished_spans()
    executions = by_name(finished, "execution traced")
    assert len(executions) == 6
    assert len({s.context.trace_id for s in executions}) == 6
    for record, _ in done:
        [root] = [
            s for s in executions if s.attributes["flowrunner.execution_id"] == record.execution_id
        ]
        mine = [s for s in finished if s.context.trace_id == root.context.trace_id]
        # note, skipped, ask; the request; the push, sent in a lot from another task
        assert len(mine) == 1 + 3 + 1 + 1
        pushes = [
            s for s in mine if s.kind == SpanKind.CLIENT and parent_id(s) == root.context.span_id
        ]
        assert len(pushes) == 1
    assert len(receiver.hits("/events")) == 6


async def test_a_failed_execution_is_an_error_span(
    receiver: Receiver, tmp_path: Path, spans: tuple[OtelTracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    scripted(receiver, 500)
    plan = plan_of(project(tmp_path, receiver), "traced")
    async with Runner(plan, Secrets(env={}), tracer=tracer, on_complete=False) as runner:
        record = await runner.run(Inputs(call={"cli": "+1"}))
    assert record.status == "FAILED"
    finished = exporter.get_finished_spans()
    [execution] = by_name(finished, "execution traced")
    assert execution.status.status_code == StatusCode.ERROR
    assert execution.status.description.startswith("SERVER_ERROR: ")
    assert by_name(finished, "step ask")[0].status.status_code == StatusCode.ERROR
    assert len([s for s in finished if s.kind == SpanKind.CLIENT]) == 3  # three attempts


async def test_an_incoming_traceparent_is_continued(
    receiver: Receiver, tmp_path: Path, spans: tuple[OtelTracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    plan = plan_of(project(tmp_path, receiver), "traced")
    async with Runner(plan, Secrets(env={}), tracer=tracer, on_complete=False) as runner:
        await runner.run(Inputs(call={"cli": "+1"}, traceparent=valid_traceparent(incoming)))
        await runner.run(Inputs(call={"cli": "+2"}, traceparent=valid_traceparent("junk")))
    first, second = by_name(exporter.get_finished_spans(), "execution traced")
    assert f"{first.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_id(first) == 0x00F067AA0BA902B7
    assert second.parent is None
    sent = receiver.hits("/hook")[0].headers["traceparent"]
    assert sent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")


def test_valid_traceparent() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert valid_traceparent(good) == good
    assert valid_traceparent(" " + good + " ") == good
    assert valid_traceparent(good.upper()) is None
    for bad in (
        None, "", "junk", good + "-extra", "01" + good[2:], good.replace("4bf9", "xyz0"),
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
        good * 100,
    ):  # fmt: skip
        assert valid_traceparent(bad) is None, bad


def test_tracing_is_on_only_when_asked() -> None:
    assert not wanted(None, {})
    assert wanted(Path("t.jsonl"), {})
    assert wanted(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert wanted(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"})
    assert not wanted(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "TRUE"}
    assert not wanted(Path("t.jsonl"), off)


# ---- through the CLI --------------------------------------------------------------------

PROBE = textwrap.dedent(
    """\
    import sys
    from click.testing import CliRunner
    from flowrunner.cli.main import main
    %s
    result = CliRunner().invoke(main, sys.argv[1:])
    loaded = sorted({m.split(".")[0] for m in sys.modules if m.startswith("opentelemetry")})
    print(result.exit_code, ",".join(loaded) or "-", result.stderr.strip().replace("\\n", " | "))
    """
)
BLOCK_OTEL = """
import importlib.abc
class NoOtel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, *args):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, NoOtel())
"""


def probe(
    root: Path, *args: str, block: bool = False, env: dict[str, str] | None = None
) -> list[str]:
    code = PROBE % (BLOCK_OTEL if block else "")
    done = subprocess.run(
        [sys.executable, "-c", code, "--project", str(root), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=root,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(" ", 2)


def test_nothing_of_opentelemetry_is_imported_without_tracing(tmp_path: Path) -> None:
    hooks = {"hook": {"url": f"http://127.0.0.1:{free_port()}/h", "methods": {"lookup": {}}}}
    root = write_project(tmp_path, hooks, {"traced": FLOW.replace("on_complete: true\n", "")})
    # a real run (its call is refused: nobody listens) and a dry run
    assert probe(root, "run", "traced", "--call", "cli=1")[:2] == ["1", "-"]
    assert probe(root, "run", "traced", "--call", "cli=1", "--dry-run")[:2] == ["0", "-"]
    # the control: with --trace-file it is imported, and spans are written
    assert probe(root, "run", "traced", "--call", "cli=1", "--trace-file", "t.jsonl")[:2] == [
        "1",
        "opentelemetry",
    ]
    lines = (root / "t.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3 + 3  # execution, three steps, three refused attempts
    assert {json.loads(line)["context"]["trace_id"] for line in lines} == {
        json.loads(lines[0])["context"]["trace_id"]
    }


def test_trace_file_without_the_otel_extra_is_a_usage_error(tmp_path: Path) -> None:
    hooks = {"hook": {"url": f"http://127.0.0.1:{free_port()}/h", "methods": {"lookup": {}}}}
    root = write_project(tmp_path, hooks, {"traced": FLOW.replace("on_complete: true\n", "")})
    code, loaded, err = probe(root, "run", "traced", "--trace-file", "t.jsonl", block=True)
    assert (code, loaded) == ("2", "-")
    assert err == "flowrunner: --trace-file needs OpenTelemetry: pip install 'flowrunner[otel]'"
    assert not (root / "t.jsonl").exists()
    # only the environment asks: said once, and the run goes on untraced
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    code, loaded, err = probe(root, "run", "traced", "--call", "cli=1", block=True, env=env)
    assert (code, loaded) == ("1", "-")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed" in err


def test_an_unwritable_trace_file_is_a_usage_error(tmp_path: Path) -> None:
    hooks = {"hook": {"url": f"http://127.0.0.1:{free_port()}/h", "methods": {"lookup": {}}}}
    root = write_project(tmp_path, hooks, {"traced": FLOW.replace("on_complete: true\n", "")})
    code, _, err = probe(root, "run", "traced", "--trace-file", "no/such/t.jsonl")
    assert code == "2"
    assert err == "flowrunner: no/such/t.jsonl: cannot write spans (no such file or directory)"


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_trace_file_of_a_batch(receiver: Receiver, tmp_path: Path, workers: str) -> None:
    import asyncio

    root = project(tmp_path, receiver)
    lines = b"".join(b'{"call": {"cli": "+%d"}}\n' % i for i in range(20))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), "run", "traced",
        "--events", "-", "--trace-file", "spans.jsonl", "--workers", workers,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=root,
    )  # fmt: skip
    out, err = await proc.communicate(lines)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    spans_ = [json.loads(line) for line in (root / "spans.jsonl").read_text().splitlines()]
    assert len(spans_) == 20 * 6  # execution, 3 steps, the request, the push
    roots = [s for s in spans_ if s["parent_id"] is None]
    assert sorted(s["attributes"]["flowrunner.execution_id"] for s in roots) == sorted(
        r["execution_id"] for r in records
    )
    assert len({s["context"]["trace_id"] for s in spans_}) == 20
    sent = {r.headers["traceparent"].split("-")[1] for r in receiver.requests}
    assert sent == {s["context"]["trace_id"][2:] for s in roots}


def test_the_trace_file_has_the_sdks_own_json_shape(tmp_path: Path) -> None:
    from flowrunner.tracing.jsonlines import JsonLinesExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("outer", attributes={"a": "b", "n": 2, "l": (1, 2)}):
        with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT) as inner:
            inner.add_event("sent", {"bytes": 3})
            inner.set_status(StatusCode.ERROR, "HTTP 503")
    spans = exporter.get_finished_spans()
    lines = JsonLinesExporter(tmp_path / "t.jsonl")
    lines.export(spans)
    lines.shutdown()
    written = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert written == [json.loads(span.to_json(indent=None)) for span in spans]


async def otlp_collector(aiohttp_server: Any) -> tuple[str, list[str], list[str]]:
    """A real OTLP/HTTP receiver on loopback: its URL, the span names and service names
    it received (protobuf decoded with the OpenTelemetry proto package)."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    names: list[str] = []
    services: list[str] = []

    async def collect(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            services.extend(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                names.extend(span.name for span in scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), names, services


async def flowrunner_cli(root: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowrunner", "--project", str(root), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_spans_reach_an_otlp_http_receiver(aiohttp_server: Any, tmp_path: Path) -> None:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` alone turns tracing on: the OTLP exporter posts
    the spans (protobuf over HTTP) to a real receiver on loopback."""
    url, names, services = await otlp_collector(aiohttp_server)
    hooks = {"hook": {"url": f"http://127.0.0.1:{free_port()}/h", "methods": {"lookup": {}}}}
    root = write_project(tmp_path, hooks, {"traced": FLOW.replace("on_complete: true\n", "")})
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_SERVICE_NAME": "ivr-flows"}
    code, err = await flowrunner_cli(root, "run", "traced", "--call", "cli=1", env=env)
    assert code == 1, err  # the call is refused: FAILED
    assert sorted(names) == sorted(
        ["execution traced", "step note", "step skipped", "step ask", "POST", "POST", "POST"]
    )
    assert set(services) == {"ivr-flows"}


async def test_deliveries_drain_traces_each_push(aiohttp_server: Any, tmp_path: Path) -> None:
    url, names, _ = await otlp_collector(aiohttp_server)
    port = free_port()
    hooks = {
        "hook": {"url": f"http://127.0.0.1:{port}/h", "methods": {"lookup": {}}},
        "events": {"url": f"http://127.0.0.1:{port}/events", "default": True},
    }
    flow = FLOW.replace("    retry: {attempts: 3, delay: 0.01, jitter: 0}\n", "")
    root = write_project(tmp_path, hooks, {"traced": flow})
    code, err = await flowrunner_cli(root, "run", "traced", "--call", "cli=1", env={})
    assert code == 1, err  # nobody listens yet: the call fails, the push stays pending
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    await aiohttp_server(app, port=port)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url}
    code, err = await flowrunner_cli(root, "deliveries", "drain", "--now", env=env)
    assert code == 0, err
    [push] = receiver.hits("/events")
    assert valid_traceparent(push.headers["traceparent"]) is not None
    assert names == ["POST"]
