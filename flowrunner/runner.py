"""Run executions of a plan with everything around them: the state store, the HTTP
client, secrets checked up front, the on-complete push recorded and sent.

``Runner`` is an async context manager shared by ``run``, ``run --events`` and ``demo``:
one HTTP session and one store connection serve every execution of a run. With
``group_commit=True`` (``run --events``) execution ends are recorded through an
:class:`~flowrunner.state.AsyncRecorder`: one transaction for every execution that ended
while the previous one committed, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from contextlib import AsyncExitStack
from typing import Any

from flowrunner import model as m
from flowrunner import oncomplete
from flowrunner.budget import FINISHING_BYTES, ByteBudget, record_cost
from flowrunner.compiler import CompiledWebhook, Plan
from flowrunner.engine import Engine, Inputs, MemoryUserKeys, Services, UserKeyStore
from flowrunner.errors import StateError, TemplateError
from flowrunner.jsoncodec import dumps
from flowrunner.result import ExecutionRecord, iso
from flowrunner.secrets import Secrets
from flowrunner.templating import Variables, format_text

REFRESH = 0.1  # seconds a cached user key may lag behind another process's write


def used_secrets(plan: Plan, *, on_complete: bool = True) -> list[m.SecretRef]:
    """Every secret the plan may need: of the webhooks its steps (and push) use."""
    hooks = [s.webhook.webhook for s in plan.steps if s.webhook is not None]
    if on_complete and plan.on_complete is not None:
        hooks.append(plan.on_complete.webhook)
    refs: list[m.SecretRef] = []
    for hook in hooks:
        refs += [v for v in hook.headers.values() if isinstance(v, m.SecretRef)]
        if isinstance(hook.auth, m.BasicAuth):
            refs.append(hook.auth.password)
        elif isinstance(hook.auth, m.BearerAuth):
            refs.append(hook.auth.token)
        if hook.signing_secret is not None:
            refs.append(hook.signing_secret)
    return refs


class CachedUserKeys:
    """The store's user keys, cached: this process's writes at once, others' within
    :data:`REFRESH` seconds.

    A write goes to the store at once (its own transaction, last write wins) and into
    the cache, so this process always reads its own writes. At most every ``REFRESH``
    seconds a read asks SQLite whether another connection (another process, or this
    process's recorder thread) committed since, and reloads if so. Asking on every read
    would cost a query per execution, and each query lets other threads take the GIL.
    """

    def __init__(self, store: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store  # flowrunner.state.Store; Any keeps sqlite out of this import
        self._clock = clock
        self._checked = clock()
        self._version = store.data_version()
        self._values: dict[str, Any] = store.user_keys()

    def user_keys(self) -> dict[str, Any]:
        now = self._clock()
        if now - self._checked >= REFRESH:
            self._checked = now
            version = self._store.data_version()
            if version != self._version:
                self._version = version
                self._values = self._store.user_keys()
        return dict(self._values)

    def set_user_key(self, name: str, value: Any) -> None:
        self._store.set_user_key(name, value)
        self._values[name] = value

    def update_user_keys(
        self, names: Collection[str], change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read, change and write ``names`` in one store transaction (never from the
        cache, which may lag); returns what was written."""
        written: dict[str, Any] = self._store.update_user_keys(names, change)
        self._values.update(written)
        return written


class PushBatcher:
    """Sends pushes asked for in the same pass of the event loop with one
    :meth:`~flowrunner.delivery.Deliverer.send_now`: one lease transaction for the lot.

    A group commit wakes all its executions in one pass, so their pushes go together.
    """

    def __init__(self, deliverer: Any) -> None:
        self._deliverer = deliverer
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, push_id: str) -> dict[str, Any]:
        """One attempt at push ``push_id``; its on-complete status afterwards."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiting[push_id] = future
        return await future

    async def aclose(self) -> None:
        """Cancel the sends still running; their pushes stay pending in the outbox."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, {}
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        try:
            status = await self._deliverer.send_now(list(batch))
        except asyncio.CancelledError:
            for future in batch.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for push_id, future in batch.items():
            if not future.done():
                future.set_result(status[push_id])


class Runner:
    """Executes a plan; ``on_complete=False`` skips pushes; ``dry_run`` sends nothing.

    ``concurrency`` sizes the connection pool; ``group_commit`` records execution ends
    in shared transactions (for many concurrent executions).
    """

    def __init__(
        self,
        plan: Plan,
        secrets: Secrets,
        *,
        dry_run: bool = False,
        on_complete: bool = True,
        concurrency: int = 64,
        group_commit: bool = False,
    ) -> None:
        self.plan = plan
        self.project = plan.project.project
        self.secrets = secrets
        self.dry_run = dry_run
        self.push_to = plan.on_complete if on_complete else None
        self.concurrency = concurrency
        self.group_commit = group_commit
        self._stack = AsyncExitStack()
        self.store: Any = None
        self.client: Any = None
        self.deliverer: Any = None
        self.recorder: Any = None
        self.pushes: PushBatcher | None = None
        self.budget = ByteBudget(FINISHING_BYTES)  # bounds the memory of large records
        for ref in used_secrets(plan, on_complete=on_complete):
            secrets.resolve(ref)  # fail before anything runs, naming the secret

    async def __aenter__(self) -> Runner:
        users: UserKeyStore
        if self.dry_run:
            # what a real run would read (seeds, then the stored values), never written
            stored: dict[str, Any] = {}
            if self.project.state.exists():
                from flowrunner.state import stored_user_keys

                stored = stored_user_keys(self.project.state)
            users = MemoryUserKeys({**self.project.user_keys, **stored})
        else:
            users = await self._open_state()
        services = Services(
            client=self.client, secrets=self.secrets, users=users, dry_run=self.dry_run
        )
        self.engine = Engine(self.plan, services)
        return self

    async def _open_state(self) -> UserKeyStore:
        from flowrunner.delivery import Deliverer
        from flowrunner.http import HttpClient
        from flowrunner.state import AsyncRecorder, Store

        self.store = Store.open(self.project.state)
        self._stack.callback(self.store.close)
        self.store.check_before_use()  # damage found now costs no side effect
        self.store.seed_user_keys(self.project.user_keys)
        self._prune()  # before the work: nothing of this command's is held meanwhile
        self.client = await self._stack.enter_async_context(
            HttpClient(self.project.http, limit=self.concurrency)
        )
        self.deliverer = Deliverer(self.store, self.client, self.project, self.secrets)
        if self.group_commit:
            self.recorder = await self._stack.enter_async_context(AsyncRecorder(self.store))
            self.pushes = PushBatcher(self.deliverer)
            self._stack.push_async_callback(self.pushes.aclose)
        return CachedUserKeys(self.store)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _prune(self) -> None:
        """Apply the project's history retention, once per command, when it opens the
        state file (in bounded batches)."""
        history = self.project.history
        self.store.prune_runs(older_than=history.keep_days * 86_400, keep=history.keep_runs)

    async def run(self, inputs: Inputs) -> ExecutionRecord:
        """One execution, recorded, with its push recorded and tried once."""
        record = await self.engine.execute(inputs)
        if self.dry_run:
            return record
        push = self._push(record)
        self.store.record_end(record.as_dict(), push)
        if push is not None:
            record.on_complete = await self._send(push.id, push.webhook)
        return record

    async def run_encoded(self, inputs: Inputs) -> tuple[ExecutionRecord, bytes]:
        """Like :meth:`run`, for many executions at once: also returns the record as
        compact JSON, encoded once (the store keeps the same text).

        With ``group_commit`` the end is recorded with other executions' ends.
        """
        record = await self.engine.execute(inputs)
        cost = record_cost((record.keys, record.call))
        if not cost:
            return await self._finish_encoded(record)
        async with self.budget.hold(cost):
            return await self._finish_encoded(record)

    async def _finish_encoded(self, record: ExecutionRecord) -> tuple[ExecutionRecord, bytes]:
        from flowrunner.state import EncodedRecord

        data = record.as_dict()
        encoded = dumps(data)
        if self.dry_run:
            return record, encoded
        push = self._push(record)
        if record.on_complete is not None:  # the push could not be built: say so
            data["on_complete"] = record.on_complete
            encoded = dumps(data)
        stored = EncodedRecord(
            execution_id=record.execution_id,
            flow=record.flow,
            status=record.status,
            started_at=record.started_at.timestamp(),
            ended_at=record.ended_at.timestamp(),
            text=encoded.decode(),
        )
        if self.recorder is not None:
            await self.recorder.record_end(stored, push)
        else:
            self.store.record_end(stored, push)
        del stored  # large records: no copy outlives its use
        if push is not None:
            del encoded
            push_id, webhook = push.id, push.webhook
            del push
            record.on_complete = data["on_complete"] = await self._send(push_id, webhook)
            encoded = dumps(data)
        return record, encoded

    async def _send(self, push_id: str, webhook: str) -> dict[str, Any]:
        """One attempt at a push already stored with its execution. The execution stays
        what it was when the attempt cannot be recorded (a full disk): the push is
        pending in the outbox, and a later drain sends it (again, same ``webhook-id``)."""
        try:
            if self.pushes is not None:
                return await self.pushes.send(push_id)
            status: dict[str, dict[str, Any]] = await self.deliverer.send_now([push_id])
            return status[push_id]
        except StateError as exc:
            return {
                "webhook": webhook, "webhook_id": push_id, "status": "pending",
                "attempts": None, "last_error": f"the attempt could not be recorded: {exc}",
            }  # fmt: skip

    def _push(self, record: ExecutionRecord) -> Any:
        """The push of ``record`` (None without one). A push whose URL or headers cannot
        be rendered is not lost silently: the record says it is dead, and why."""
        from flowrunner.state import NewPush

        target = self.push_to
        if target is None:
            return None
        webhook_id = oncomplete.webhook_id(record.execution_id)
        variables = self._variables(record)
        try:
            url = format_text(target.url.render(variables))
            headers = _plain_headers(target, variables)
        except TemplateError as exc:
            record.on_complete = {
                "webhook": target.webhook.name, "webhook_id": webhook_id, "status": "dead",
                "attempts": 0, "last_error": f"the push could not be built: {exc}",
            }  # fmt: skip
            return None
        return NewPush(
            id=webhook_id,
            execution_id=record.execution_id,
            webhook=target.webhook.name,
            url=url,
            headers=headers,
            payload=oncomplete.encode(oncomplete.build_payload(record)),
            created_at=time.time(),
        )

    def _variables(self, record: ExecutionRecord) -> Variables:
        sys_vars = {
            "execution_id": record.execution_id,
            "flow": record.flow,
            "datetime": iso(record.ended_at),
        }
        users = self.engine.services.users.user_keys()
        return Variables(call=record.call, flow=record.keys, user=users, sys=sys_vars)


def _plain_headers(target: CompiledWebhook, variables: Variables) -> dict[str, str]:
    return {
        name: format_text(value.render(variables))
        for name, value in target.headers.items()
        if not isinstance(value, m.SecretRef)
    }
