"""The values of the execution queue, shared by every backend: what is queued, what a
claim hands out, what queuing a request did.

The shapes follow the SQLite queue of the trigger API (``serve``): a request
(:class:`NewRequest`) queues one execution per call (:class:`QueuedCall`) in one
transaction, at most once per idempotency key (:class:`Enqueued`); a worker leases
waiting executions (:class:`Claimed`) until a time and renews the lease while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedCall:
    """One execution to queue: its id and what it starts from."""

    execution_id: str
    inputs: dict[str, Any]  # {"call": {...}, "keys": {...}, "user_keys": {...}}


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRequest:
    """A request to record: its executions, the answer to give for it, and its
    idempotency key (with the fingerprint of its body) when it came with one."""

    request_id: str
    flow: str
    calls: tuple[QueuedCall, ...]
    answer: str  # the JSON body of the answer to the request
    idempotency_key: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Enqueued:
    """What queuing one request did. ``replayed``: its idempotency key was recorded
    already; nothing was queued, ``answer`` and ``fingerprint`` are the first request's."""

    answer: str
    replayed: bool
    fingerprint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A queued execution leased to this process."""

    execution_id: str
    request_id: str
    flow: str
    inputs: dict[str, Any]
    enqueued_at: float
