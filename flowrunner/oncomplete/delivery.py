"""The outbox sender: delivers recorded on-complete pushes, at least once.

Every attempt leases its push in the store first, so two senders (in one process or
several) never send one push at the same time; a lease left by a process that died runs
out and the push is taken over. The outcome of each attempt decides what happens next:

* 2xx: delivered.
* no answer (timeout, connection error, refused by the egress policy, HTTP disabled),
  429 or 5xx: retried after ``retry_schedule[attempts - 1]`` seconds ±20 %, never before
  a ``Retry-After`` (itself never later than the longest wait of the schedule); once
  the schedule is spent the push is dead.
* any other status (3xx, 4xx, 410): dead at once.
* the webhook was removed from the project: dead. A secret is missing: nothing is sent,
  no attempt is counted, the push stays pending (a fix to the environment may come).

``last_error`` holds a status or a failure description, never a secret or the payload.
See docs/delivery.md for the reasoning.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from flowrunner.errors import SecretError, StateError
from flowrunner.net import request as wire
from flowrunner.net import signing
from flowrunner.net.request import HttpRequest, HttpResponse
from flowrunner.net.retry_after import retry_after as bounded_retry_after
from flowrunner.net.transport import Client
from flowrunner.secrets import Secrets
from flowrunner.source.model import Project, Webhook
from flowrunner.state.protocol import Outbox
from flowrunner.state.records import NewPush, OutboxRow

JITTER = 0.2  # each wait is its schedule entry times a factor in [0.8, 1.2]
LEASE_MARGIN = 5.0  # seconds a lease outlasts the longest possible attempt
BATCH = 64  # pushes leased and sent together
MAX_POLL = 0.25  # seconds between looks at the outbox while draining
IDS_PER_LEASE = 500  # stays far below SQLite's limit on statement parameters

Outcome = Literal["delivered", "retry", "dead", "blocked"]

_FAILURES = {
    "timeout": "timeout",
    "connection": "connection error",
    "refused": "refused by the egress policy",
    "disabled": "HTTP disabled",
    "too_large": "response too large",
}


@dataclass(slots=True)
class DeliveryStats:
    """Counts of one delivery call; ``pending`` is what the outbox still holds after it."""

    attempts: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    blocked: int = 0
    pending: int = 0

    def count(self, outcome: Outcome) -> None:
        if outcome != "blocked":
            self.attempts += 1
        if outcome == "delivered":
            self.delivered += 1
        elif outcome == "retry":
            self.retried += 1
        elif outcome == "dead":
            self.dead += 1
        else:
            self.blocked += 1

    def merge(self, other: DeliveryStats) -> None:
        """Add ``other``'s counts; ``pending`` becomes ``other``'s (the later look)."""
        self.attempts += other.attempts
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        self.blocked += other.blocked
        self.pending = other.pending

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an answer means for a push: ``kind``, the error to record, the earliest retry."""

    kind: Literal["delivered", "retry", "dead"]
    error: str | None = None
    not_before: float | None = None


def judge(response: HttpResponse, now: float) -> Verdict:
    """Classify one attempt's answer; ``now`` anchors a ``Retry-After``."""
    status = response.status
    if status is None:
        label = _FAILURES.get(response.failure or "", "no answer")
        return Verdict("retry", f"{label}: {response.message}" if response.message else label)
    if 200 <= status < 300:
        return Verdict("delivered")
    if status == 429 or status >= 500:
        return Verdict("retry", f"HTTP {status}", retry_after(response.headers, now))
    return Verdict("dead", f"HTTP {status} (not retried)")


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The unix time a ``Retry-After`` header (seconds or HTTP date) names; None if none
    or unreadable (a huge or junk value included)."""
    seconds = bounded_retry_after(headers, now)
    return None if seconds is None else now + seconds


def merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win, names compared case-insensitively (``content-type`` too)."""
    out: dict[str, str] = {}
    names: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            lower = name.lower()
            previous = names.get(lower)
            if previous is not None:
                del out[previous]
            names[lower] = name
            out[name] = value
    return out


def default_owner() -> str:
    """A lease owner name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_local_owners(owners: list[str]) -> list[str]:
    """The lease owners (``host:pid:random``) of this host whose process is gone.

    Call it before this process claims anything: an owner with this process's pid is
    counted as gone."""
    host = socket.gethostname()
    dead = []
    for owner in owners:
        parts = owner.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        # our own pid: a process before us had it (in a container, each start may get
        # the same pid); this process has claimed nothing yet when this is asked
        if pid == os.getpid() or not _alive(pid):
            dead.append(owner)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# marks pushes delivered (ids, owner, now) elsewhere than on the store's own connection;
# returns how many it marked (see Deliverer)
MarkDelivered = Callable[[Sequence[str], str, float], Awaitable[int]]


class Deliverer:
    """Sends the pushes of one store through one HTTP client, by the project's rules.

    ``mark_delivered`` marks successes instead of the store's ``mark_delivered_many``:
    a batch passes its recorder's, so that the marks share the recorder's connection
    (on PostgreSQL, its thread too) and never wait for the write lock of its commits.
    """

    def __init__(
        self,
        store: Outbox,
        client: Client,
        project: Project,
        secrets: Secrets,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        mark_delivered: MarkDelivered | None = None,
    ) -> None:
        self.store = store
        self._mark_delivered = mark_delivered
        self.client = client
        self.project = project
        self.secrets = secrets
        self.owner = owner or default_owner()
        self.rng = rng or random.Random()
        self.clock = clock
        self.batch = max(1, min(BATCH, client.limit))
        # a lease must outlast the slowest attempt, or a second sender could join in
        slowest = max((w.timeout for w in project.webhooks.values()), default=0.0)
        self.lease_seconds = max(project.delivery.lease, slowest + LEASE_MARGIN)
        # a receiver's Retry-After is honoured up to the longest wait of the schedule; a
        # stored time later than any wait could reach came from a clock that was ahead
        self.longest_wait = max(project.delivery.retry_schedule, default=0.0)
        self.horizon = self.longest_wait * (1 + JITTER)

    async def send_now(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """One immediate attempt for each pending push of ``ids`` that no one else holds.

        Returns, for each known id, ``{"webhook", "webhook_id", "status", "attempts"}``
        as the store has it afterwards.
        """
        cutoff = self.clock()
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), IDS_PER_LEASE):
            chunk = ids[start : start + IDS_PER_LEASE]
            rows = self._lease(cutoff, ids=chunk, limit=len(chunk), ignore_schedule=True)
            await self._attempt_all(rows)
            rows = []  # their payloads are not kept while the states are read
            out.update(self._statuses(chunk))
        return out

    def lease_for_now(self) -> tuple[str, float]:
        """``(lease_owner, lease_until)`` for a push recorded to be sent at once by
        :meth:`send_leased`: no other sender takes it before that attempt is settled."""
        return self.owner, self.clock() + self.lease_seconds

    async def send_leased(self, pushes: Sequence[NewPush]) -> dict[str, dict[str, Any]]:
        """One immediate attempt at each of ``pushes``, recorded (and committed) with
        :meth:`lease_for_now`'s lease: no lease transaction, and no reading back when
        every push was delivered and marked. Returns what :meth:`send_now` returns."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pushes), IDS_PER_LEASE):
            chunk = [_leased_row(push) for push in pushes[start : start + IDS_PER_LEASE]]
            outcomes, marked = await self._attempt_all(chunk)
            if marked and all(outcome == "delivered" for outcome in outcomes):
                out.update({row.id: _status(row, "delivered", 1) for row in chunk})
            else:
                out.update(self._statuses([row.id for row in chunk]))
        return out

    def release_leases(self) -> int:
        """Give up every lease this sender holds (when it is stopped): those pushes stay
        pending and another sender may take them at once. Returns how many."""
        return self.store.release_leases(self.owner)

    def free_dead_leases(self) -> int:
        """Free the pushes leased by processes of this host that are gone (a run that
        could not record its attempt, a killed sender), so they need not wait for their
        lease to run out. Call it before this sender leases anything; how many."""
        dead = dead_local_owners(self.store.push_lease_owners(now=self.clock()))
        return sum(self.store.release_leases(owner) for owner in dead)

    def _statuses(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        # the states alone: a payload (up to megabytes) is not read back to report them
        return {
            id_: {"webhook": webhook, "webhook_id": id_, "status": status, "attempts": attempts}
            for id_, (webhook, status, attempts) in self.store.push_states(ids).items()
        }

    async def deliver_due(self, *, ignore_schedule: bool = False) -> DeliveryStats:
        """One pass: attempt once every push due now (every pending one with
        ``ignore_schedule``) that no live lease holds."""
        stats = DeliveryStats()
        cutoff = self.clock()
        while rows := self._lease(cutoff, limit=self.batch, ignore_schedule=ignore_schedule):
            for outcome in (await self._attempt_all(rows))[0]:
                stats.count(outcome)
        stats.pending = self.store.pending_count()
        return stats

    async def drain(self, *, timeout: float, ignore_schedule: bool = False) -> DeliveryStats:
        """Send everything due, then keep sending what falls due within ``timeout`` s.

        Returns when nothing is pending, or when the next push falls due after the
        deadline; ``pending`` in the result tells which.
        """
        deadline = self.clock() + timeout
        stats = await self.deliver_due(ignore_schedule=ignore_schedule)
        while stats.pending:
            due = self.store.next_due()
            now = self.clock()
            if due is None or due > deadline or now >= deadline:
                break
            # wake at least every MAX_POLL: another sender may settle a push it holds
            await asyncio.sleep(min(max(due - now, 0.005), MAX_POLL))
            stats.merge(await self.deliver_due())
        return stats

    def _lease(
        self,
        cutoff: float,
        *,
        limit: int,
        ids: Sequence[str] | None = None,
        ignore_schedule: bool = False,
    ) -> list[OutboxRow]:
        now = self.clock()
        return self.store.lease(
            self.owner,
            now=now,
            seconds=self.lease_seconds,
            horizon=now + self.horizon,
            limit=limit,
            ids=ids,
            ignore_schedule=ignore_schedule,
            due_by=cutoff,
        )

    async def _attempt_all(self, rows: list[OutboxRow]) -> tuple[list[Outcome], bool]:
        """One attempt at each of ``rows`` (leased by us), all at once: the outcomes, and
        whether every delivered one was marked so (False: a lease was lost meanwhile).

        Successes are marked together, in one transaction after the last attempt of
        the lot: one commit instead of one per push. A crash between a receiver's 2xx
        and that commit leaves the push leased; it is sent again (same ``webhook-id``)
        once the lease runs out, as after a crash between a 2xx and a single mark.
        """
        delivered: list[str] = []
        marked = 0
        try:
            outcomes = await asyncio.gather(*(self._attempt(row, delivered) for row in rows))
        finally:  # also when one attempt failed or the lot was cancelled
            if delivered and self._mark_delivered is not None:
                marked = await self._mark_delivered(delivered, self.owner, self.clock())
            elif delivered:
                marked = self.store.mark_delivered_many(delivered, self.owner, now=self.clock())
        return list(outcomes), marked == len(delivered)

    async def _attempt(self, row: OutboxRow, delivered: list[str]) -> Outcome:
        now = self.clock()
        webhook = self.project.webhooks.get(row.webhook)
        if webhook is None:
            error = f"webhook '{row.webhook}' is no longer defined in the project"
            self.store.mark_dead(row.id, self.owner, now=now, error=error)
            return "dead"
        try:
            request = self._request(row, webhook, now)
        except SecretError as exc:  # its message names the secret, never a value
            wait = self._wait(min(row.attempts, len(self.project.delivery.retry_schedule) - 1))
            self.store.mark_blocked(
                row.id, self.owner, now=now, next_attempt_at=now + wait, error=str(exc)
            )
            return "blocked"
        try:
            response = await self.client.send(request)
            verdict = judge(response, self.clock())
        except Exception as exc:  # a bug in the client must not strand the push
            verdict = Verdict("retry", f"unexpected error ({type(exc).__name__})")
        return self._settle(row, verdict, delivered)

    def _request(self, row: OutboxRow, webhook: Webhook, now: float) -> HttpRequest:
        secret = None
        if webhook.signing_secret is not None:
            secret = self.secrets.resolve(webhook.signing_secret)
        headers = merge_headers(
            row.headers,
            {"Content-Type": "application/json", "User-Agent": wire.USER_AGENT},
            wire.auth_headers(webhook, self.secrets),
            signing.headers(secret, row.id, int(now), row.payload),
        )
        return HttpRequest(
            method="POST", url=row.url, headers=headers, body=row.payload, timeout=webhook.timeout
        )

    def _settle(self, row: OutboxRow, verdict: Verdict, delivered: list[str]) -> Outcome:
        now = self.clock()
        if verdict.kind == "delivered":
            delivered.append(row.id)  # marked with the rest of the lot
            return "delivered"
        attempts = row.attempts + 1
        schedule = self.project.delivery.retry_schedule
        error = verdict.error or "failed"
        if verdict.kind == "retry" and attempts <= len(schedule):
            next_at = now + self._wait(attempts - 1)
            if verdict.not_before is not None:
                next_at = max(next_at, min(verdict.not_before, now + self.longest_wait))
            self.store.mark_retry(row.id, self.owner, now=now, next_attempt_at=next_at, error=error)
            return "retry"
        if verdict.kind == "retry":
            error = f"{error}; gave up after {attempts} attempts"
        self.store.mark_dead(row.id, self.owner, now=now, error=error)
        return "dead"

    def _wait(self, index: int) -> float:
        base = self.project.delivery.retry_schedule[index]
        return base * self.rng.uniform(1 - JITTER, 1 + JITTER)


def _leased_row(push: NewPush) -> OutboxRow:
    """The outbox row of a push just recorded, as the store holds it."""
    return OutboxRow(
        id=push.id,
        execution_id=push.execution_id,
        webhook=push.webhook,
        url=push.url,
        headers=push.headers,
        payload=push.payload,
        status="pending",
        attempts=0,
        next_attempt_at=push.created_at,
        last_attempt_at=None,
        last_error=None,
        created_at=push.created_at,
        delivered_at=None,
    )


def _status(row: OutboxRow, status: str, attempts: int) -> dict[str, Any]:
    return {"webhook": row.webhook, "webhook_id": row.id, "status": status, "attempts": attempts}


class PushBatcher:
    """Sends pushes asked for in the same pass of the event loop with one
    :meth:`~flowrunner.oncomplete.delivery.Deliverer.send_leased`: one transaction marks the lot.

    A group commit wakes all its executions in one pass, so their pushes go together.
    """

    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer
        self._waiting: dict[str, tuple[Any, asyncio.Future[dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # of the first send: asked once

    async def send(self, push: Any) -> dict[str, Any]:
        """One attempt at ``push`` (a recorded, leased NewPush); its on-complete status."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._flush)
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiting[push.id] = (push, future)
        return await future

    async def aclose(self) -> None:
        """Cancel the sends still running; their pushes stay pending in the outbox."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, {}
        assert self._loop is not None
        task = self._loop.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: dict[str, tuple[Any, asyncio.Future[dict[str, Any]]]]) -> None:
        try:
            status = await self._deliverer.send_leased([push for push, _ in batch.values()])
        except asyncio.CancelledError:
            for _, future in batch.values():
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for push_id, (_, future) in batch.items():
            if future.done():
                continue
            if push_id in status:
                future.set_result(status[push_id])
            else:  # never leave a caller waiting: its push is pending, for a drain
                future.set_exception(StateError(f"push {push_id} is missing from the outbox"))
