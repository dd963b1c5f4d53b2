"""Starting, running and stopping ``serve``.

Start: load and check the project and every flow (exit 2 on an error), resolve the API
tokens and every secret the flows need (exit 2 naming one that is unset), open the
store, make waiting again what a dead process of this host held, listen.

Signals: SIGTERM or SIGINT stop the server: new requests get 503, nothing new is
started, running executions get ``grace`` seconds (a second signal cuts it short), the
rest stays queued, exit 0.
SIGHUP reloads the project and its flows; a revision with errors is refused (its
diagnostics logged) and the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrunner.errors import FlowrunnerError, InvalidProject
from flowrunner.oncomplete.delivery import dead_local_owners
from flowrunner.secrets import Secrets
from flowrunner.server.flows import Revision, load_revision
from flowrunner.server.logs import Log

if TYPE_CHECKING:
    from flowrunner.server.auth import Tokens

KEY_DAYS = 1.0  # idempotency keys are kept at least this many days
SEND_POLL = 1.0  # seconds between looks at the outbox for due pushes
HOUSEKEEPING = 3600.0  # seconds between applications of the retention


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The options of ``flowrunner serve``."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 8080
    concurrency: int = 64
    grace: float = 30.0
    log_format: str = "text"
    signals: bool = True  # handle SIGTERM/SIGINT/SIGHUP (off when embedded, as in tests)


def check_secrets(revision: Revision, secrets: Secrets) -> None:
    """Resolve every secret the flows of ``revision`` use (raises SecretError)."""
    from flowrunner.runner import used_secrets

    for plan in revision.plans.values():
        for ref in used_secrets(plan):
            secrets.resolve(ref)


class Server:
    """One running ``serve``: everything opened, the stop event, reloads."""

    def __init__(self, options: Options, secrets: Secrets, log: Log) -> None:
        self.options = options
        self.secrets = secrets
        self.log = log
        self.stop_event = asyncio.Event()
        self.port = 0

    async def run(self) -> int:
        """Serve until stopped; returns the exit code (0)."""
        from flowrunner.server.auth import Tokens

        revision = load_revision(self.options.root)
        tokens = Tokens.resolve(revision.project.serve, self.secrets)
        check_secrets(revision, self.secrets)
        async with AsyncExitStack() as stack:
            await self._open(stack, revision, tokens)
            await self._serve(stack)
        return 0

    async def _open(self, stack: AsyncExitStack, revision: Revision, tokens: Tokens) -> None:
        from flowrunner.execution.context import Services
        from flowrunner.net.transport import open_client
        from flowrunner.oncomplete.delivery import Deliverer, PushBatcher, default_owner
        from flowrunner.runner import CachedUserKeys
        from flowrunner.server.api import Api
        from flowrunner.server.executor import Executor
        from flowrunner.server.storeio import StoreWriter
        from flowrunner.state import open_store
        from flowrunner.tracing import open_tracer

        project = revision.project
        self.store: Any = open_store(project.state, self.secrets)
        store = self.store
        stack.callback(store.close)
        store.seed_user_keys(project.user_keys)
        self._recover(store, revision)
        client = await stack.enter_async_context(
            open_client(project.http, limit=self.options.concurrency)
        )
        tracer = open_tracer(None)  # from the OTEL_* environment; None when it asks for none
        if tracer is not None:
            stack.callback(tracer.close)
        # the traced transport keeps the client's connection limit, all the sender reads
        sender: Any = client if tracer is None else tracer.transport(client)
        self.owner = default_owner()
        self.deliverer = Deliverer(store, sender, project, self.secrets, owner=self.owner)
        pushes = PushBatcher(self.deliverer)
        stack.push_async_callback(pushes.aclose)
        self.writer = writer = StoreWriter(project.state, self.secrets)
        stack.push_async_callback(writer.aclose)
        services = Services(
            client=sender, secrets=self.secrets, users=CachedUserKeys(store), tracer=tracer
        )
        self.executor = Executor(
            writer, services, revision, owner=self.owner,
            concurrency=self.options.concurrency, pushes=pushes, lease=project.workers.lease,
        )  # fmt: skip
        self.api = Api(
            revision=revision, tokens=tokens, store=store, writer=writer,
            executor=self.executor, log=self.log,
        )  # fmt: skip
        if hasattr(store, "listen"):  # PostgreSQL: executions queued by other processes
            loop = asyncio.get_running_loop()
            listener = store.listen(lambda: loop.call_soon_threadsafe(self.executor.wake))
            stack.callback(listener.close)
        self.executor.on_end = self.api.ended
        self.executor.on_error = lambda detail: self.log.event("state-error", detail=detail)

    def _recover(self, store: Any, revision: Revision) -> None:
        """Make waiting again what dead processes of this host held; forget old keys."""
        now = time.time()
        owners = store.lease_owners()
        freed = store.requeue(now=now, dead_owners=dead_local_owners(owners))
        prune(store, revision, now)
        waiting, _ = store.queue_counts(now=now)
        if waiting:
            self.log.event("recover", waiting=waiting, released=freed)

    async def _serve(self, stack: AsyncExitStack) -> None:
        from flowrunner.server.app import listen
        from flowrunner.server.logs import LibraryLogs

        LibraryLogs.install(self.log, ("aiohttp.server", "aiohttp.web", "aiohttp.internal"))
        close, self.port = await listen(self.api, self.options.host, self.options.port)
        stack.push_async_callback(close)
        self._signals()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self.executor.run()), loop.create_task(self._send_pushes())]
        self.log.event(
            "start", host=self.options.host, port=self.port,
            flows=",".join(sorted(self.api.revision.plans)), pid=os.getpid(),
        )  # fmt: skip
        await self.stop_event.wait()
        await self._stop(tasks)
        if self.options.signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        self.api.stopping = True
        self.log.event("stopping", running=self.executor.running, grace=self.options.grace)
        cancelled = await self.executor.stop(self.options.grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiting, _ = self.store.queue_counts(now=time.time())
        self.log.event("stop", cancelled=cancelled, waiting=waiting)

    def _signals(self) -> None:
        if not self.options.signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _signalled(self) -> None:
        """The first SIGTERM/SIGINT stops gracefully; a second one cuts the grace short."""
        if self.stop_event.is_set():
            self.executor.hurry()
        self.stop_event.set()

    def reload(self) -> None:
        """Load the project again; keep the previous revision if the new one has errors."""
        from flowrunner.server.auth import Tokens

        try:
            revision = load_revision(self.options.root)
            tokens = Tokens.resolve(revision.project.serve, self.secrets)
            check_secrets(revision, self.secrets)
        except InvalidProject as exc:
            for diag in exc.diagnostics:
                self.log.event("reload-refused", problem=diag.format())
            return
        except FlowrunnerError as exc:
            self.log.event("reload-refused", problem=str(exc))
            return
        self.store.seed_user_keys(revision.project.user_keys)
        self.api.revision = revision
        self.api.tokens = tokens
        self.executor.use(revision)
        self.log.event("reload", flows=",".join(sorted(revision.plans)))

    async def _send_pushes(self) -> None:
        """Send due on-complete pushes in the background, as ``deliveries drain`` does;
        apply the retention of history and requests every HOUSEKEEPING seconds."""
        kept = time.monotonic()
        while True:
            try:
                await self.deliverer.deliver_due()
                if time.monotonic() - kept >= HOUSEKEEPING:
                    kept = time.monotonic()
                    retain = functools.partial(prune, revision=self.api.revision, now=time.time())
                    await self.writer.call(retain)
            except Exception as exc:  # the sender must outlive one bad pass
                detail = str(exc) if isinstance(exc, FlowrunnerError) else type(exc).__name__
                self.log.event("delivery-error", detail=detail)
            await asyncio.sleep(SEND_POLL)


def prune(store: Any, revision: Revision, now: float) -> None:
    """Retention: the history of the project (``history:``), idempotency keys older
    than KEY_DAYS, requests older than the history (and than KEY_DAYS)."""
    history = revision.project.history
    keep = history.keep_days * 86_400
    store.prune_runs(older_than=keep, keep=history.keep_runs, now=now)
    store.prune_requests(
        keys_before=now - KEY_DAYS * 86_400, requests_before=now - max(keep, KEY_DAYS * 86_400)
    )


def serve(options: Options, secrets: Secrets) -> int:
    """Run ``serve`` until SIGTERM/SIGINT; returns the exit code.

    Raises :class:`InvalidProject`, :class:`~flowrunner.errors.SecretError` or
    :class:`~flowrunner.errors.UsageError` (exit 2) when it cannot start.
    """
    from flowrunner.batch.local import loop_factory

    log = Log(options.log_format)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as loop:
            return loop.run(Server(options, secrets, log).run())
    finally:
        log.flush()
