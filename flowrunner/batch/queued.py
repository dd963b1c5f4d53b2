"""``flowrunner worker``: run the queue of executions of a shared (PostgreSQL) store.

Any number of workers on any number of machines share one queue. A worker claims
waiting executions with a lease (``workers: {lease: 30}``), renews it every third of
that while they run, runs up to ``concurrency`` at once through the same
:class:`~flowrunner.runner.Runner` as ``run --events``, and records each end with its
push in the transaction that removes it from the queue (group-committed). It wakes on
``NOTIFY`` when executions are queued and looks at the queue every :data:`POLL` seconds
anyway, which is also how it takes over executions whose worker died (their lease ran
out). It sends its pushes at once and every due push of the outbox every
:data:`DELIVER_EVERY` seconds.

A store error (the server restarting, a dropped connection) never stops a worker: the
store retries for a while, then the worker says so on stderr and tries again later; a
claimed execution it could not record is taken over when its lease runs out. SIGTERM
or SIGINT: nothing new is claimed, running executions get ``grace`` seconds, the rest
are cancelled and released (waiting again), and the worker exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import deque
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowrunner.errors import FlowrunnerError, InvalidProject, StateError, UsageError
from flowrunner.execution.context import Inputs
from flowrunner.secrets import Secrets, scrub
from flowrunner.source.model import Project
from flowrunner.state.queue_values import Claimed
from flowrunner.times import iso

POLL = 1.0  # seconds between looks at the queue when nothing wakes the worker
DELIVER_EVERY = 2.0  # seconds between passes over the due pushes of the outbox
RETRY_AFTER = 2.0  # seconds before trying the store again after an error


def say(message: str) -> None:
    """One line on stderr, secrets masked."""
    print(f"flowrunner worker: {scrub(message)}", file=sys.stderr, flush=True)


class QueueWorker:
    """Runs queued executions of the project in ``root`` until :meth:`stop`."""

    def __init__(
        self, root: Path, project: Project, secrets: Secrets, *, concurrency: int, owner: str
    ) -> None:
        self.root = root
        self.project = project
        self.secrets = secrets
        self.concurrency = concurrency
        self.owner = owner
        self.lease = project.workers.lease
        self.started = self.failed = 0
        self._stack = AsyncExitStack()
        self._runners: dict[str, Any] = {}
        self._runner_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: deque[Claimed] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._drained = False
        self.writer: Any = None
        self.store: Any = None

    async def open(self) -> None:
        """Open the store, its queue writer, the wake-up listener and the push sender."""
        from flowrunner.net.http import HttpClient
        from flowrunner.oncomplete.delivery import Deliverer
        from flowrunner.state import open_recorder, open_store

        self.store = open_store(self.project.state, self.secrets)
        self._stack.callback(self.store.close)
        if not hasattr(self.store, "claim"):
            raise UsageError("worker needs a PostgreSQL state store (state: or --state URL)")
        self.writer = await self._stack.enter_async_context(open_recorder(self.store, queue=True))
        loop = asyncio.get_running_loop()
        listener = self.store.listen(lambda: loop.call_soon_threadsafe(self.wake))
        self._stack.callback(listener.close)
        client = await self._stack.enter_async_context(HttpClient(self.project.http))
        self.deliverer = Deliverer(self.store, client, self.project, self.secrets)

    def wake(self) -> None:
        """Look at the queue now (something was queued or released)."""
        self._drained = False
        self._wake.set()

    async def run(self) -> None:
        """Claim and run executions until :meth:`stop`; then wait for the stop to end."""
        loop = asyncio.get_running_loop()
        helpers = [loop.create_task(self._renew()), loop.create_task(self._deliver())]
        try:
            while not self._stopping:
                self._start_ready()
                room = 2 * self.concurrency - len(self._tasks) - len(self._ready)
                if not self._drained and room >= max(1, self.concurrency // 4):
                    if await self._claim(room) < room:
                        self._drained = True
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL)
                except TimeoutError:
                    self._drained = False  # leases of dead workers run out; look again
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def stop(self, grace: float) -> int:
        """Claim nothing more; give running executions ``grace`` seconds, cancel the
        rest and release what this worker holds. Returns how many were cancelled."""
        self._stopping = True
        self._wake.set()
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._ready.clear()
        try:
            await self.writer.call(lambda store: store.release(self.owner))
        except StateError as exc:
            say(f"could not release the claimed executions ({exc}); their lease runs out")
        return len(pending)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def _claim(self, limit: int) -> int:
        def claim(store: Any) -> list[Claimed]:
            return list(store.claim(self.owner, now=time.time(), seconds=self.lease, limit=limit))

        try:
            rows = await self.writer.call(claim)
        except StateError as exc:
            say(f"{exc}; trying again in {RETRY_AFTER:g} s")
            await asyncio.sleep(RETRY_AFTER)
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
                say(f"could not renew the leases ({exc})")

    async def _deliver(self) -> None:
        while True:
            await asyncio.sleep(DELIVER_EVERY)
            try:
                await self.deliverer.deliver_due()
            except FlowrunnerError as exc:
                say(f"could not send due pushes ({exc})")

    async def _execute(self, row: Claimed) -> None:
        try:
            runner = await self._runner(row.flow)
        except (InvalidProject, UsageError) as exc:  # the flow is gone or broken: FAILED
            self.failed += 1
            await self._record_failed(row, "UNKNOWN_FLOW", _first_line(exc))
            return
        except FlowrunnerError as exc:  # a secret missing here, say: leave it to its lease
            say(f"execution {row.execution_id}: {_first_line(exc)}; left for another worker")
            return
        try:
            record, _ = await runner.run_encoded(_inputs(row))
        except StateError as exc:  # not recorded: the lease runs out and it runs again
            say(f"execution {row.execution_id} not recorded ({exc}); it will run again")
            return
        if record.status != "COMPLETED":
            self.failed += 1

    async def _record_failed(self, row: Claimed, reason: str, message: str) -> None:
        try:
            await self.writer.record_end(_failed(row, reason, message), None)
        except StateError as exc:
            say(f"execution {row.execution_id} not recorded ({exc}); it will run again")

    async def _runner(self, flow: str) -> Any:
        """The runner of ``flow`` (loaded once), recording through the queue writer."""
        async with self._runner_lock:
            runner = self._runners.get(flow)
            if runner is None:
                from flowrunner.project import load_plan
                from flowrunner.runner import PushBatcher, Runner

                runner = Runner(load_plan(self.root, flow), self.secrets,
                                concurrency=self.concurrency)  # fmt: skip
                await self._stack.enter_async_context(runner)
                runner.recorder = self.writer  # ends go into the queue's transactions
                runner.pushes = PushBatcher(runner.deliverer)
                self._stack.push_async_callback(runner.pushes.aclose)
                self._runners[flow] = runner
            return runner


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _inputs(row: Claimed) -> Inputs:
    call = dict(row.inputs.get("call") or {})
    call.setdefault("request_id", row.request_id)
    return Inputs(
        call=call,
        keys=dict(row.inputs.get("keys") or {}),
        user_keys=dict(row.inputs.get("user_keys") or {}),
        execution_id=row.execution_id,
    )


def _failed(row: Claimed, reason: str, message: str) -> dict[str, Any]:
    now = iso(datetime.now(UTC))
    return {
        "execution_id": row.execution_id, "flow": row.flow, "status": "FAILED",
        "error": {"step": None, "reason": reason, "message": message},
        "started_at": now, "ended_at": now, "duration_ms": 0.0, "steps": [], "keys": {},
        "on_complete": None,
    }  # fmt: skip


async def _opened(worker: QueueWorker, stop: asyncio.Event) -> bool:
    """Open the worker, waiting for its server as long as it takes (False: stopped
    before it could open)."""
    while not stop.is_set():
        try:
            await worker.open()
            return True
        except StateError as exc:
            say(f"{exc}; trying again in {RETRY_AFTER:g} s")
            try:
                await asyncio.wait_for(stop.wait(), RETRY_AFTER)
            except TimeoutError:
                pass
    return False


async def run_worker(
    root: Path, project: Project, secrets: Secrets, *, concurrency: int, grace: float, owner: str
) -> QueueWorker:
    """Run a worker until SIGTERM or SIGINT, then stop it within ``grace`` seconds;
    returns it (for its counts). Raises UsageError when the store has no queue."""
    worker = QueueWorker(root, project, secrets, concurrency=concurrency, owner=owner)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await _opened(worker, stop):
            return worker
        runs = loop.create_task(worker.run())
        stopped = loop.create_task(stop.wait())
        await asyncio.wait({runs, stopped}, return_when=asyncio.FIRST_COMPLETED)
        cancelled = await worker.stop(grace)
        await runs
        if cancelled:
            say(f"{cancelled} executions did not finish within {grace:g} s: released")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await worker.aclose()
    return worker
