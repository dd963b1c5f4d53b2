"""``flowrunner worker``: run the queue of executions of a shared state store, with the
same executor as ``serve`` and no HTTP API.

Any number of workers on any number of machines share one queue (PostgreSQL; on SQLite,
the processes of one machine). A worker claims waiting executions with a lease
(``workers: {lease: 30}``) that it renews while they run, runs up to ``concurrency`` at
once, and records each end with its push in the transaction that removes it from the
queue (:class:`~flowrunner.server.executor.Executor`). On PostgreSQL it wakes on
``NOTIFY`` as soon as something is queued; it looks at the queue every second anyway,
which is how it takes over executions whose worker died. It sends its pushes at once and
every due push of the outbox every :data:`DELIVER_EVERY` seconds.

A store error never stops a worker: it says so on stderr and tries again, also when the
server is not there when it starts. SIGTERM or SIGINT: nothing new is claimed, running
executions get ``grace`` seconds, the rest are cancelled and released (waiting again),
and the worker exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrunner.errors import FlowrunnerError, StateError
from flowrunner.secrets import Secrets, scrub
from flowrunner.server.executor import Ended, Executor

DELIVER_EVERY = 2.0  # seconds between passes over the due pushes of the outbox
RETRY_AFTER = 2.0  # seconds before trying the store again after an error


def say(message: str) -> None:
    """One line on stderr, secrets masked."""
    print(f"flowrunner worker: {scrub(message)}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Counts:
    """Executions this worker ran to their end, and how many of them failed."""

    ended: int = 0
    failed: int = 0
    cancelled: int = 0
    flows: list[str] = field(default_factory=list)

    def count(self, ended: Ended) -> None:
        self.ended += 1
        self.failed += ended.status != "COMPLETED"


async def _open_store(place: Any, secrets: Secrets, stop: asyncio.Event) -> Any:
    """The store, waiting for its server as long as it takes; None when stopped first."""
    from flowrunner.state import open_store

    while not stop.is_set():
        try:
            return open_store(place, secrets)
        except StateError as exc:
            say(f"{exc}; trying again in {RETRY_AFTER:g} s")
            try:
                await asyncio.wait_for(stop.wait(), RETRY_AFTER)
            except TimeoutError:
                pass
    return None


async def _executor(
    stack: AsyncExitStack, store: Any, root: Path, secrets: Secrets, counts: Counts, **opts: Any
) -> tuple[Executor, Any]:
    """The executor of every flow of the project, on ``store``, and its push sender."""
    from flowrunner.execution.context import Services
    from flowrunner.net.transport import open_client
    from flowrunner.oncomplete.delivery import Deliverer, PushBatcher, dead_local_owners
    from flowrunner.runner import CachedUserKeys
    from flowrunner.server.flows import load_revision
    from flowrunner.server.main import check_secrets
    from flowrunner.server.storeio import StoreWriter
    from flowrunner.tracing import open_tracer

    revision = load_revision(root)
    check_secrets(revision, secrets)  # a missing secret stops the worker before it claims
    project = revision.project
    counts.flows = sorted(revision.plans)
    store.seed_user_keys(project.user_keys)
    # executions held by dead processes of this machine wait no longer for their lease
    store.requeue(now=time.time(), dead_owners=dead_local_owners(store.lease_owners()))
    client = await stack.enter_async_context(open_client(project.http, limit=opts["concurrency"]))
    tracer = open_tracer(None)  # from the OTEL_* environment; None when it asks for none
    if tracer is not None:
        stack.callback(tracer.close)
    sender: Any = client if tracer is None else tracer.transport(client)
    deliverer = Deliverer(store, sender, project, secrets, owner=opts["owner"])
    pushes = PushBatcher(deliverer)
    stack.push_async_callback(pushes.aclose)
    writer = StoreWriter(project.state, secrets)
    stack.push_async_callback(writer.aclose)
    services = Services(client=sender, secrets=secrets, users=CachedUserKeys(store), tracer=tracer)
    executor = Executor(
        writer, services, revision, owner=opts["owner"], concurrency=opts["concurrency"],
        pushes=pushes, on_end=counts.count, on_error=say, lease=project.workers.lease,
    )  # fmt: skip
    return executor, deliverer


async def _deliver(deliverer: Any) -> None:
    while True:
        await asyncio.sleep(DELIVER_EVERY)
        try:
            await deliverer.deliver_due()
        except FlowrunnerError as exc:
            say(f"cannot send due pushes: {exc}")


async def run_worker(
    root: Path, place: Any, secrets: Secrets, *, concurrency: int, grace: float, owner: str
) -> Counts:
    """Run a worker on the store at ``place`` until SIGTERM or SIGINT, then stop it
    within ``grace`` seconds; returns its counts. Raises InvalidProject when a flow of
    the project is invalid."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts = Counts()
    try:
        async with AsyncExitStack() as stack:
            store = await _open_store(place, secrets, stop)
            if store is None:
                return counts
            stack.callback(store.close)
            executor, deliverer = await _executor(
                stack, store, root, secrets, counts, concurrency=concurrency, owner=owner
            )
            if hasattr(store, "listen"):  # PostgreSQL: wake on NOTIFY
                listener = store.listen(lambda: loop.call_soon_threadsafe(executor.wake))
                stack.callback(listener.close)
            say(f"{owner} running {', '.join(counts.flows)} (concurrency {concurrency})")
            await _until_stopped(executor, deliverer, stop, grace, counts)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return counts


async def _until_stopped(
    executor: Executor, deliverer: Any, stop: asyncio.Event, grace: float, counts: Counts
) -> None:
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(executor.run()), loop.create_task(_deliver(deliverer))]
    await stop.wait()
    try:
        counts.cancelled = await executor.stop(grace)
    except StateError as exc:
        say(f"cannot release the claimed executions ({exc}); their lease runs out")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
