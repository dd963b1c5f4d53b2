"""Runs the queue: claims waiting executions, runs up to ``concurrency`` at once, and
records each end (with its push) in the transaction that removes it from the queue.

Leases: every claim holds its executions for ``lease`` seconds (:data:`LEASE` unless
given), renewed every third of that while they run; an execution whose holder died is
claimed again once its lease runs out (at-least-once). A store that fails a claim or a
renewal is reported through ``on_error`` and tried again; it never stops the executor.
On stop, nothing new is claimed, running executions get ``grace`` seconds, and whatever
this process still holds is released, waiting again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flowrunner.errors import StateError
from flowrunner.execution.context import Inputs, Services
from flowrunner.execution.engine import Engine
from flowrunner.execution.record import ExecutionRecord
from flowrunner.jsoncodec import dumps
from flowrunner.runner import build_push, end_span
from flowrunner.server.flows import Revision
from flowrunner.server.storeio import StoreWriter
from flowrunner.state.queue_values import Claimed
from flowrunner.state.records import EncodedRecord
from flowrunner.times import iso

LEASE = 30.0  # seconds a claim holds its executions
POLL = 1.0  # seconds between looks at the queue when nothing wakes the executor


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended:
    """What the executor tells about an execution that ended (for metrics and logs)."""

    execution_id: str
    flow: str
    status: str
    seconds: float
    reason: str | None
    webhook_calls: tuple[tuple[str, str, float], ...]  # (webhook, outcome, seconds)


class Executor:
    """Runs queued executions of ``revision``'s flows through ``services``."""

    def __init__(
        self,
        writer: StoreWriter,
        services: Services,
        revision: Revision,
        *,
        owner: str,
        concurrency: int,
        pushes: Any = None,  # oncomplete.delivery.PushBatcher, or None: pushes wait
        on_end: Callable[[Ended], None] = lambda ended: None,
        on_error: Callable[[str], None] = lambda detail: None,
        lease: float = LEASE,
    ) -> None:
        self.writer = writer
        self.lease = lease
        self.services = services
        self.owner = owner
        self.concurrency = concurrency
        self.pushes = pushes
        self.on_end = on_end
        self.on_error = on_error
        self.started = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._drained = False  # the last claim found fewer than it asked for
        self._hurry = asyncio.Event()
        self._ready: deque[Claimed] = deque()  # claimed, waiting for a slot
        self.use(revision)

    def use(self, revision: Revision) -> None:
        """Run the flows of ``revision`` from now on (executions running keep theirs)."""
        self.revision = revision
        self._engines = {name: Engine(plan, self.services) for name, plan in revision.plans.items()}
        self._steps = {name: revision.webhook_of_step(name) for name in revision.plans}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def wake(self) -> None:
        """Look at the queue now (something was queued)."""
        self._drained = False
        self._wake.set()

    async def run(self) -> None:
        """Claim and start executions until :meth:`stop` is called.

        Claims run ahead of the slots: up to ``concurrency`` claimed executions wait in
        memory (leased, so shown RUNNING), and a slot that frees up starts the next one
        at once instead of after a round trip to the store. A claim asks for at least a
        quarter of the concurrency, so claims are few and large.
        """
        renewer = asyncio.get_running_loop().create_task(self._renew())
        try:
            while not self._stopping:
                self._start_ready()
                room = 2 * self.concurrency - len(self._tasks) - len(self._ready)
                if not self._drained and room >= max(1, self.concurrency // 4):
                    if await self._claim(room) < room:
                        self._drained = True  # until something is queued, or POLL passes
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL)
                except TimeoutError:
                    self._drained = False  # another process may have queued executions
        finally:
            renewer.cancel()

    async def stop(self, grace: float) -> int:
        """Claim nothing more; give running executions ``grace`` seconds, cancel the
        rest and release everything held. Returns how many were cancelled."""
        self._stopping = True
        self._wake.set()
        pending = set(self._tasks)
        if pending:
            hurry = asyncio.ensure_future(self._hurry.wait())
            ended = asyncio.ensure_future(asyncio.wait(pending))
            first = asyncio.FIRST_COMPLETED
            await asyncio.wait({ended, hurry}, timeout=grace, return_when=first)
            hurry.cancel()
            ended.cancel()  # stops waiting; the executions go on until cancelled below
            pending = {task for task in pending if not task.done()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.writer.call(lambda store: store.release(self.owner))
        return len(pending)

    def hurry(self) -> None:
        """Cut the grace of :meth:`stop` short: cancel running executions now."""
        self._hurry.set()

    async def _claim(self, limit: int) -> int:
        try:
            rows: list[Claimed] = await self.writer.call(
                lambda store: store.claim(
                    self.owner, now=time.time(), seconds=self.lease, limit=limit
                )
            )
        except StateError as exc:  # the store is away: say so, try again after a pause
            self.on_error(f"cannot claim executions: {exc}")
            await asyncio.sleep(POLL)
            return 0
        self._ready.extend(rows)
        return len(rows)

    def _start_ready(self) -> None:
        loop = asyncio.get_running_loop()
        while self._ready and len(self._tasks) < self.concurrency and not self._stopping:
            task = loop.create_task(self._execute(self._ready.popleft()))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            self.started += 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if not (self._tasks or self._ready):
                continue
            try:
                await self.writer.call(
                    lambda store: store.renew(self.owner, now=time.time(), seconds=self.lease)
                )
            except StateError as exc:
                self.on_error(f"cannot renew the leases: {exc}")

    async def _run(self, engine: Engine, inputs: Inputs) -> ExecutionRecord:
        """One execution, in a span of its own when tracing is on."""
        tracer = self.services.tracer
        if tracer is None:
            return await engine.execute(inputs)
        assert inputs.execution_id is not None  # the queue gave it
        flow = engine.plan.flow.name
        with tracer.execution(inputs.execution_id, flow, inputs.traceparent) as span:
            outcome = await engine.execute(inputs)
            end_span(span, outcome)
            return outcome

    async def _execute(self, row: Claimed) -> None:
        started = time.monotonic()
        engine = self._engines.get(row.flow)
        push = None
        if engine is None:
            record: Any = _failed(row, "UNKNOWN_FLOW", f"flow '{row.flow}' is no longer loaded")
            data = record
        else:
            try:
                outcome = await self._run(engine, _inputs(row))
                plan = engine.plan
                if plan.on_complete is not None:
                    users = self.services.users.user_keys()
                    push = build_push(plan.on_complete, outcome, users)
                data = outcome.as_dict()
                record = EncodedRecord(
                    execution_id=outcome.execution_id, flow=outcome.flow,
                    status=outcome.status, started_at=outcome.started_at.timestamp(),
                    ended_at=outcome.ended_at.timestamp(), text=dumps(data).decode(),
                )  # fmt: skip
            except Exception as exc:  # a bug: the execution ends FAILED, never re-run forever
                record = data = _failed(
                    row, "INTERNAL_ERROR", f"internal error: {type(exc).__name__}"
                )
        try:
            await self.writer.finish((record, push))
        except StateError as exc:
            # not recorded: the execution stays claimed, and runs again after a restart
            self.on_error(f"execution {row.execution_id} could not be recorded: {exc}")
            return
        self._report(row, data, time.monotonic() - started)
        if push is not None and self.pushes is not None:
            try:
                await self.pushes.send(push.id)
            except Exception:  # the push stays pending in the outbox; the sender retries it
                pass

    def _report(self, row: Claimed, data: dict[str, Any], seconds: float) -> None:
        steps = self._steps.get(row.flow, {})
        calls = tuple(
            (steps[s["id"]], s["outcome"], s["duration_ms"] / 1000)
            for s in data.get("steps") or ()
            if s.get("kind") == "webhook" and s["id"] in steps and s["outcome"] != "skipped"
        )
        error = data.get("error") or {}
        self.on_end(
            Ended(
                execution_id=row.execution_id,
                flow=row.flow,
                status=data["status"],
                seconds=seconds,
                reason=error.get("reason"),
                webhook_calls=calls,
            )  # fmt: skip
        )


def _inputs(row: Claimed) -> Inputs:
    call = dict(row.inputs.get("call") or {})
    call.setdefault("request_id", row.request_id)
    return Inputs(
        call=call,
        keys=dict(row.inputs.get("keys") or {}),
        user_keys=dict(row.inputs.get("user_keys") or {}),
        execution_id=row.execution_id,
        traceparent=row.inputs.get("traceparent"),
    )


def _failed(row: Claimed, reason: str, message: str) -> dict[str, Any]:
    now = iso(datetime.now(UTC))
    return {
        "execution_id": row.execution_id,
        "flow": row.flow,
        "status": "FAILED",
        "error": {"step": None, "reason": reason, "message": message},
        "started_at": now,
        "ended_at": now,
        "duration_ms": 0.0,
        "steps": [],
        "keys": {},
        "on_complete": None,
    }
