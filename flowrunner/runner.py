"""Run executions of a plan with everything around them: the state store, the HTTP
client, secrets checked up front, the on-complete push recorded and sent.

``Runner`` is an async context manager shared by ``run``, ``run --events`` and ``demo``:
one HTTP session and one store connection serve every execution of a run. With
``group_commit=True`` (``run --events``) execution ends are recorded through the
store's :class:`~flowrunner.state.protocol.Recorder`: one transaction for many ends.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any

from flowrunner.budget import FINISHING_BYTES, ByteBudget, record_cost
from flowrunner.errors import StateError, TemplateError
from flowrunner.execution.context import (
    Inputs,
    MemoryUserKeys,
    Services,
    Span,
    Tracer,
    UserKeyStore,
)
from flowrunner.execution.engine import Engine
from flowrunner.execution.record import ExecutionRecord
from flowrunner.jsoncodec import dumps
from flowrunner.oncomplete import payload as oncomplete
from flowrunner.plan.types import CompiledWebhook, Plan
from flowrunner.secrets import Secrets
from flowrunner.source import model as m
from flowrunner.templating import Variables, format_text
from flowrunner.times import iso

if TYPE_CHECKING:  # the sender imports the HTTP layer: only when a run sends
    from flowrunner.oncomplete.delivery import PushBatcher
    from flowrunner.state.protocol import UserKeys
    from flowrunner.state.records import Waiter

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
    seconds a read asks SQLite whether another connection (another process) committed
    since, and reloads if so. Asking on every read would cost a query per execution,
    and each query lets other threads take the GIL.
    """

    def __init__(self, store: UserKeys, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
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


class Runner:
    """Executes a plan; ``on_complete=False`` skips pushes; ``dry_run`` sends nothing.

    ``concurrency`` sizes the connection pool; ``group_commit`` records execution ends
    in shared transactions (for many concurrent executions); ``transport`` names the
    HTTP transport (see :mod:`flowrunner.net.transport`).
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
        transport: str | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.plan = plan
        self.project = plan.project.project
        self.secrets = secrets
        self.dry_run = dry_run
        self.push_to = plan.on_complete if on_complete else None
        self._push_constant = self.push_to is not None and push_is_constant(self.push_to)
        self.concurrency = concurrency
        self.group_commit = group_commit
        self.transport = transport

        self.tracer = tracer
        self._stack = AsyncExitStack()
        self.store: Any = None
        self.client: Any = None
        self.deliverer: Any = None
        self.recorder: Any = None
        self.pushes: PushBatcher | None = None
        self.budget = ByteBudget(FINISHING_BYTES)  # bounds the memory of large records
        self._encoded_record: Any = None  # the store's record type, once it is open
        for ref in used_secrets(plan, on_complete=on_complete):
            secrets.resolve(ref)  # fail before anything runs, naming the secret

    async def __aenter__(self) -> Runner:
        users: UserKeyStore
        if self.dry_run:
            # what a real run would read (seeds, then the stored values), never written
            users = MemoryUserKeys({**self.project.user_keys, **self._stored_user_keys()})
        else:
            users = await self._open_state()
        services = Services(
            client=self.client,
            secrets=self.secrets,
            users=users,
            dry_run=self.dry_run,
            tracer=self.tracer,
        )
        self.engine = Engine(self.plan, services)
        return self

    def _stored_user_keys(self) -> dict[str, Any]:
        place = self.project.state
        if not isinstance(place, m.PostgresPlace) and not place.exists():
            return {}  # no state file yet: the store (and sqlite3) is not even imported
        from flowrunner.state import read_user_keys

        # a masked (dry-run) secret is no password: read it from the environment
        return read_user_keys(place, None if self.secrets.masked else self.secrets)

    async def _open_state(self) -> UserKeyStore:
        from flowrunner.net.transport import open_client
        from flowrunner.oncomplete.delivery import Deliverer, PushBatcher
        from flowrunner.state import open_recorder, open_store
        from flowrunner.state.records import EncodedRecord

        self._encoded_record = EncodedRecord  # looked up once, not per execution
        self.store = open_store(self.project.state, self.secrets)
        self._stack.callback(self.store.close)
        self.store.check_before_use()  # damage found now costs no side effect
        self.store.seed_user_keys(self.project.user_keys)
        self._prune()  # before the work: nothing of this command's is held meanwhile
        self.client = await self._stack.enter_async_context(
            open_client(self.project.http, limit=self.concurrency, transport=self.transport)
        )
        if self.tracer is not None:
            self.client = self.tracer.transport(self.client)
        if self.group_commit:
            self.recorder = await self._stack.enter_async_context(open_recorder(self.store))
        # with a recorder, pushes are marked delivered on its connection, between its
        # commits (SQLite: the loop's own; PostgreSQL: its thread's), never waiting for them
        marker = self.recorder.mark_delivered if self.recorder is not None else None
        self.deliverer = Deliverer(
            self.store, self.client, self.project, self.secrets, mark_delivered=marker
        )
        if self.group_commit:
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
        """One execution, recorded, with its push recorded and tried once (in one span
        when tracing)."""
        if self.tracer is None:
            return await self._run(inputs)
        with self._span(inputs) as span:
            record = await self._run(inputs)
            end_span(span, record)
            return record

    async def _run(self, inputs: Inputs) -> ExecutionRecord:
        record = await self.engine.execute(inputs)
        if self.dry_run:
            return record
        push = self._push(record)
        self.store.record_end(record.as_dict(), push)
        if push is not None:
            record.on_complete = await self._send(push)
        return record

    async def run_encoded(self, inputs: Inputs) -> tuple[ExecutionRecord, bytes]:
        """Like :meth:`run`, for many executions at once: also returns the record as
        compact JSON, encoded once (the store keeps the same text).

        With ``group_commit`` the end is recorded with other executions' ends.
        """
        if self.tracer is None:
            return await self._run_encoded(inputs)
        with self._span(inputs) as span:
            record, encoded = await self._run_encoded(inputs)
            end_span(span, record)
            return record, encoded

    def _span(self, inputs: Inputs) -> AbstractContextManager[Span]:
        """The span of the execution ``inputs`` starts (its id chosen here if not given)."""
        assert self.tracer is not None
        inputs.execution_id = inputs.execution_id or str(uuid.uuid4())
        flow = self.plan.flow.name
        return self.tracer.execution(inputs.execution_id, flow, inputs.traceparent)

    def hold_ends(self, wait: float, most: int) -> None:
        """Let ends wait up to ``wait`` seconds, or until ``most`` wait, to be recorded
        together (a batch, whose other executions go on meanwhile)."""
        if self.recorder is not None:
            self.recorder.hold_ends(wait, most)

    def flush_ends(self) -> None:
        """Commit the ends waiting to be recorded together, now (a batch whose window
        is full waits for them)."""
        if self.recorder is not None:
            self.recorder.flush()

    @property
    def pipelined(self) -> bool:
        """Whether a batch may start its next execution while this one's end is still
        being recorded (:meth:`finish_encoded`): only when nothing else hangs on the end,
        no push to send and no span to close."""
        return self.push_to is None and self.tracer is None

    async def _run_encoded(self, inputs: Inputs) -> tuple[ExecutionRecord, bytes]:
        return await self.finish_encoded(await self.engine.execute(inputs))

    async def finish_encoded(self, record: ExecutionRecord) -> tuple[ExecutionRecord, bytes]:
        """The second half of :meth:`run_encoded`: record the end of an execution that
        ran (with its push), and encode its record."""
        data = record.as_dict()
        encoded, push = self._written(record, data)
        cost = record_cost(len(encoded), 0 if push is None else len(push.payload))
        if not cost:
            return await self._finish_encoded(record, data, encoded, push)
        if self.budget.take_now(cost):  # room at once: what was written is kept
            try:
                return await self._finish_encoded(record, data, encoded, push)
            finally:
                await self.budget.give(cost)
        del encoded, push  # a large record waits for room without its copies
        async with self.budget.hold(cost):
            return await self._finish_encoded(record, data, *self._written(record, data))

    def finish_then(self, record: ExecutionRecord, waiter_for: Callable[[bytes], Waiter]) -> bool:
        """:meth:`finish_encoded` without a task, where nothing hangs on the end (see
        :attr:`pipelined`): the record's end is handed to the group commit with the
        waiter ``waiter_for`` makes of the record's JSON text, which hears once it is
        committed (maybe before this returns). False, with nothing done, when the end
        must go through :meth:`finish_encoded` instead: a dry run, no group commit, or
        a large record that may have to wait for the byte budget."""
        if not self.pipelined or self.recorder is None or self.dry_run:
            return False
        encoded = dumps(record.as_dict())
        if record_cost(len(encoded), 0):
            return False
        waiter = waiter_for(encoded)
        self.recorder.record_end_then(self._stored(record, encoded), None, waiter)
        return True

    def _stored(self, record: ExecutionRecord, encoded: bytes) -> Any:
        """The row of ``record`` as the state store keeps it."""
        return self._encoded_record(
            execution_id=record.execution_id,
            flow=record.flow,
            status=record.status,
            started_at=record.started_at.timestamp(),
            ended_at=record.ended_at.timestamp(),
            text=encoded.decode(),
        )

    def _written(self, record: ExecutionRecord, data: dict[str, Any]) -> tuple[bytes, Any]:
        """The record's JSON text and its push (None in a dry run or without one); the
        text says so when the push could not be built."""
        if self.dry_run:
            return dumps(data), None
        push = self._push(record, (data["started_at"], data["ended_at"]))
        if record.on_complete is not None:
            data["on_complete"] = record.on_complete
        return dumps(data), push

    async def _finish_encoded(
        self, record: ExecutionRecord, data: dict[str, Any], encoded: bytes, push: Any
    ) -> tuple[ExecutionRecord, bytes]:
        if self.dry_run:
            return record, encoded
        stored = self._stored(record, encoded)
        if self.recorder is not None:
            await self.recorder.record_end(stored, push)
        else:
            self.store.record_end(stored, push)
        del stored  # large records: no copy outlives its use
        if push is not None:
            del encoded
            record.on_complete = data["on_complete"] = await self._send(push)
            encoded = dumps(data)
        return record, encoded

    async def _send(self, push: Any) -> dict[str, Any]:
        """One attempt at a push already stored with its execution. The execution stays
        what it was when the attempt cannot be recorded (a full disk): the push is
        pending in the outbox, and a later drain sends it (again, same ``webhook-id``)."""
        try:
            if self.pushes is not None:
                return await self.pushes.send(push)
            status: dict[str, dict[str, Any]] = await self.deliverer.send_leased([push])
            return status[push.id]
        except StateError as exc:
            return {
                "webhook": push.webhook, "webhook_id": push.id, "status": "pending",
                "attempts": None, "last_error": f"the attempt could not be recorded: {exc}",
            }  # fmt: skip

    def _push(self, record: ExecutionRecord, times: tuple[str, str] | None = None) -> Any:
        """The push of ``record`` (None without one); see :func:`build_push`."""
        if self.push_to is None:
            return None
        users = {} if self._push_constant else self.engine.services.users.user_keys()
        lease = self.deliverer.lease_for_now()
        return build_push(self.push_to, record, users, lease=lease, times=times)


def build_push(
    target: CompiledWebhook,
    record: ExecutionRecord,
    user_keys: dict[str, Any],
    *,
    lease: tuple[str, float] | None = None,
    times: tuple[str, str] | None = None,
) -> Any:
    """The :class:`~flowrunner.state.records.NewPush` of ``record`` to ``target``,
    recorded already leased to ``lease`` (owner, until) when the sender will attempt it
    at once. ``times``: the record's start and end as :func:`~flowrunner.times.iso`
    text, when already written. ``user_keys`` are not read when the push's URL and
    headers are constant (:func:`push_is_constant`).

    A push whose URL or headers cannot be rendered is not lost silently: the record
    says it is dead, and why, and None is returned.
    """
    webhook_id = oncomplete.webhook_id(record.execution_id)
    started, ended = times or (iso(record.started_at), iso(record.ended_at))
    if push_is_constant(target):  # nothing to render: no variables to gather
        variables = _NO_VARIABLES
    else:
        sys_vars = {"execution_id": record.execution_id, "flow": record.flow, "datetime": ended}
        variables = Variables(call=record.call, flow=record.keys, user=user_keys, sys=sys_vars)
    try:
        url = format_text(target.url.render(variables))
        headers = _plain_headers(target, variables)
    except TemplateError as exc:
        record.on_complete = {
            "webhook": target.webhook.name, "webhook_id": webhook_id, "status": "dead",
            "attempts": 0, "last_error": f"the push could not be built: {exc}",
        }  # fmt: skip
        return None
    return _state_records().NewPush(
        lease_owner=lease[0] if lease else None,
        lease_until=lease[1] if lease else None,
        id=webhook_id,
        execution_id=record.execution_id,
        webhook=target.webhook.name,
        url=url,
        headers=headers,
        payload=oncomplete.encode(oncomplete.build_payload(record, started, ended)),
        created_at=time.time(),
    )


_NO_VARIABLES = Variables(call={}, flow={}, user={}, sys={})  # what constants render with


def push_is_constant(target: CompiledWebhook) -> bool:
    """Whether the push's URL and headers (secrets aside) are the same for every
    execution: then nothing of an execution is rendered into them."""
    return target.url.is_constant and all(
        isinstance(value, m.SecretRef) or value.is_constant for value in target.headers.values()
    )


@functools.cache
def _state_records() -> Any:
    """The state store's record types, imported on first use (a dry run never needs
    them) and looked up once, not on every execution."""
    from flowrunner.state import records

    return records


def end_span(span: Span, record: ExecutionRecord) -> None:
    """Mark the span of an execution with its outcome."""
    attributes: dict[str, str] = {"flowrunner.status": record.status}
    push = record.on_complete
    if push is not None:
        attributes["flowrunner.on_complete.status"] = str(push.get("status"))
    span.set(attributes)
    if record.error is not None:
        span.fail(f"{record.error['reason']}: {record.error['message']}")


def _plain_headers(target: CompiledWebhook, variables: Variables) -> dict[str, str]:
    return {
        name: format_text(value.render(variables))
        for name, value in target.headers.items()
        if not isinstance(value, m.SecretRef)
    }
