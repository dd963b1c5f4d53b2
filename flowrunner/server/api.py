"""The handlers of the API: what each route does, between the HTTP and the store."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flowrunner.jsoncodec import loads
from flowrunner.server import app, body
from flowrunner.server.auth import Tokens
from flowrunner.server.executor import Ended, Executor
from flowrunner.server.flows import Revision
from flowrunner.server.logs import Log
from flowrunner.server.metrics import Gauge, Metrics
from flowrunner.server.openapi import document
from flowrunner.server.problems import Problem
from flowrunner.server.storeio import StoreWriter
from flowrunner.times import iso_unix as iso
from flowrunner.tracing import valid_traceparent

MAX_RETRY_AFTER = 60  # seconds
WAITING_TTL = 0.05  # seconds a count of the waiting executions is used for
Request = Any  # aiohttp.web.Request (aiohttp stays in flowrunner.server.app)
Response = Any  # aiohttp.web.StreamResponse


class Api:
    """The state the handlers share: project revision, tokens, store, queue, metrics."""

    def __init__(
        self,
        *,
        revision: Revision,
        tokens: Tokens,
        store: Any,  # flowrunner.state.Store, read from the event loop's thread
        writer: StoreWriter,
        executor: Executor,
        log: Log,
    ) -> None:
        self.revision = revision
        self.tokens = tokens
        self.store = store
        self.writer = writer
        self.executor = executor
        self.log = log
        self.stopping = False
        self.metrics = Metrics()
        self._inflight: set[str] = set()
        self._waiting_count = 0
        self._counted_at = -WAITING_TTL
        self._ended: list[float] = []  # monotonic times of recent ends, for Retry-After
        self._add_gauges()

    def _add_gauges(self) -> None:
        def waiting() -> float:  # exact at each scrape (the backlog check uses a cache)
            return float(self.store.queue_counts(now=time.time())[0])

        gauges: list[tuple[str, str, Callable[[], float]]] = [
            ("flowrunner_queued_executions", "Executions queued, waiting to run.", waiting),
            ("flowrunner_running_executions", "Executions running in this process.",
             lambda: float(self.executor.running)),
            ("flowrunner_outbox_pending", "On-complete pushes pending.",
             lambda: float(self.store.pending_count())),
            ("flowrunner_outbox_dead", "On-complete pushes given up.",
             lambda: float(self.store.dead_count())),
        ]  # fmt: skip
        self.metrics.gauges = [Gauge(n, h, f) for n, h, f in gauges]

    def ended(self, end: Ended) -> None:
        """Count and log an execution that ended."""
        m = self.metrics
        m.executions.inc((end.flow, end.status))
        m.execution_duration.observe((end.flow,), end.seconds)
        for webhook, outcome, seconds in end.webhook_calls:
            m.webhook_duration.observe((webhook, outcome), seconds)
        now = time.monotonic()
        self._ended.append(now)
        if len(self._ended) > 4096:
            del self._ended[:2048]
        self.log.event(
            "execution", execution_id=end.execution_id, flow=end.flow, status=end.status,
            ms=round(end.seconds * 1000, 2), reason=end.reason,
        )  # fmt: skip

    # ---- /v1 --------------------------------------------------------------------------

    async def post_executions(self, request: Request) -> Response:
        """Queue one execution per call of the body; 202 once recorded."""
        if self.stopping:
            raise Problem("shutting-down", "the server is stopping; retry on another instance")
        flow = request.match_info["flow"]
        if flow not in self.revision.plans:
            raise Problem("not-found", f"no flow named '{flow[:64]}' is loaded")
        app.check_json_type(request)
        raw = await app.read_body(request)
        calls = body.parse(raw)
        key = app.idempotency_key(request)
        print_ = body.fingerprint(flow, calls) if key is not None else ""
        if key is not None:
            replay = self._replay(key, print_)
            if replay is not None:
                return replay
        self._check_backlog(len(calls))
        if key is not None:
            self._inflight.add(key)
        try:
            # a caller's trace goes on through the executions it asked for
            traceparent = valid_traceparent(request.headers.get("traceparent"))
            queued = app.new_request(flow, calls, key, print_, traceparent)
            done = await self.writer.enqueue(queued)
        finally:
            if key is not None:
                self._inflight.discard(key)
        if done.replayed and done.fingerprint != print_:
            raise Problem("idempotency-mismatch", "this Idempotency-Key was used with another body")
        if not done.replayed:
            self._waiting_count += len(calls)
            self.metrics.accepted.inc((flow,), len(calls))
            self.executor.wake()
        return app.accepted(done.answer, replayed=done.replayed)

    def _replay(self, key: str, print_: str) -> Response | None:
        if key in self._inflight:
            raise Problem(
                "idempotency-in-flight",
                "a request with this Idempotency-Key is still being recorded; retry shortly",
                headers={"Retry-After": "1"},
            )
        known = self.store.idempotent_answer(key)
        if known is None:
            return None
        if known[0] != print_:
            raise Problem("idempotency-mismatch", "this Idempotency-Key was used with another body")
        return app.accepted(known[1], replayed=True)

    def _waiting(self) -> int:
        """Executions waiting in the queue, counted at most every WAITING_TTL seconds
        (counting scans the queue); those accepted since are added."""
        now = time.monotonic()
        if now - self._counted_at >= WAITING_TTL:
            self._waiting_count = self.store.queue_counts(now=time.time())[0]
            self._counted_at = now
        return self._waiting_count

    def _check_backlog(self, count: int) -> None:
        limit = self.revision.project.serve.max_backlog
        waiting = self._waiting()
        if waiting + count <= limit:
            return
        raise Problem(
            "backlog-full",
            f"{waiting} executions are waiting (at most {limit}); retry later",
            headers={"Retry-After": str(self._retry_after(waiting + count - limit))},
        )

    def _retry_after(self, excess: int) -> int:
        """Seconds until about ``excess`` executions have ended, at the recent pace."""
        now = time.monotonic()
        recent = [t for t in self._ended if now - t <= 10.0]
        rate = len(recent) / 10.0
        if rate <= 0:
            return 5
        return max(1, min(MAX_RETRY_AFTER, math.ceil(excess / rate)))

    async def get_execution(self, request: Request) -> Response:
        """The execution record, or its queue state while it waits or runs."""
        execution_id = request.match_info["id"]
        found = self.store.execution_states([execution_id[: app.MAX_ID]], now=time.time())
        if len(execution_id) > app.MAX_ID or execution_id not in found:
            raise Problem("not-found", "no execution with this id")
        return app.json_response(found[execution_id])

    async def get_request(self, request: Request) -> Response:
        """The executions of a request, each with its status."""
        request_id = request.match_info["id"]
        known = None if len(request_id) > app.MAX_ID else self.store.request_answer(request_id)
        if known is None:
            raise Problem("not-found", "no request with this id")
        flow, answer, created = known
        listed = loads(answer.encode())["executions"]
        states = self.store.execution_states([e["execution_id"] for e in listed], now=time.time())
        executions = []
        for entry in listed:
            state = states.get(entry["execution_id"])
            status = state["status"] if state is not None else "UNKNOWN"
            executions.append({**entry, "status": status})
        return app.json_response(
            {"request-id": request_id, "flow": flow, "created_at": iso(created),
             "executions": executions}
        )  # fmt: skip

    # ---- operations ---------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """Alive."""
        return app.json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Ready: flows loaded, the store answers, not stopping."""
        if self.stopping:
            raise Problem("shutting-down", "the server is stopping")
        self.store.queue_counts(now=time.time())  # raises StateError when unreachable
        return app.json_response({"status": "ready", "flows": sorted(self.revision.plans)})

    async def metrics_text(self, request: Request) -> Response:
        """The metrics in Prometheus text format."""
        return app.text_response(self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI document of this server (its flows listed)."""
        return app.json_response(document(sorted(self.revision.plans)))
