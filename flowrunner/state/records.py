"""The values the state store takes and gives: pushes, execution records, outbox rows.

Also the encoding of records and pushes into table rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from flowrunner.jsoncodec import compact
from flowrunner.times import iso_unix, unix

# seconds the clocks of several senders may disagree; a stored time further ahead than
# any sender could have written was written by a clock that was wrong
CLOCK_SLACK = 300.0


@dataclass(slots=True, kw_only=True)  # not frozen: made per execution (see HttpRequest)
class NewPush:
    """An on-complete push to record: ``id`` is its ``webhook-id``.

    ``headers`` are the rendered, non-secret headers of the webhook (no auth, no
    secrets); ``payload`` is the exact JSON body sent on every attempt.
    """

    id: str
    execution_id: str
    webhook: str
    url: str
    headers: dict[str, str]
    payload: bytes
    created_at: float
    # a sender about to attempt the push at once records it already leased to itself
    lease_owner: str | None = None
    lease_until: float | None = None


@dataclass(slots=True, kw_only=True)  # not frozen: made per execution (see HttpRequest)
class EncodedRecord:
    """An execution record already written as JSON (``text``), with the fields the
    ``runs`` table indexes; :meth:`Store.record_ends` stores it without encoding again.
    """

    execution_id: str
    flow: str
    status: str
    started_at: float  # unix seconds
    ended_at: float
    text: str


Record = Mapping[str, Any] | EncodedRecord


@dataclass(slots=True, kw_only=True)  # not frozen: made per execution (see HttpRequest)
class OutboxRow:
    """One push as stored in the outbox."""

    id: str
    execution_id: str
    webhook: str
    url: str
    headers: dict[str, str]
    payload: bytes
    status: str
    attempts: int
    next_attempt_at: float
    last_attempt_at: float | None
    last_error: str | None
    created_at: float
    delivered_at: float | None

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> OutboxRow:
        (id_, execution_id, webhook, url, headers, payload, status, attempts) = row[:8]
        return cls(
            id=id_,
            execution_id=execution_id,
            webhook=webhook,
            url=url,
            headers=json.loads(headers),
            payload=bytes(payload),
            status=status,
            attempts=attempts,
            next_attempt_at=row[8],
            last_attempt_at=row[9],
            last_error=row[10],
            created_at=row[11],
            delivered_at=row[12],
        )

    def as_dict(self) -> dict[str, Any]:
        """The ``deliveries list --json`` shape, plus ``delivered_at``."""
        return {
            "id": self.id,
            "execution_id": self.execution_id,
            "webhook": self.webhook,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso_unix(self.next_attempt_at) if self.status == "pending" else None,
            "last_error": self.last_error,
            "created_at": iso_unix(self.created_at),
            "delivered_at": iso_unix(self.delivered_at),
        }


Item = tuple[Record, NewPush | None]


def dump_value(value: Any) -> str:
    return compact(value)


def run_row(record: Record) -> tuple[Any, ...]:
    if isinstance(record, EncodedRecord):
        return (
            record.execution_id,
            record.flow,
            record.status,
            record.started_at,
            record.ended_at,
            record.text,
        )
    started = unix(record.get("started_at"))
    ended = unix(record.get("ended_at")) if record.get("ended_at") else started
    return (
        str(record["execution_id"]),
        str(record.get("flow", "")),
        str(record.get("status", "")),
        started,
        ended,
        dump_value(record),
    )


def push_row(push: NewPush) -> tuple[Any, ...]:
    return (
        push.id,
        push.execution_id,
        push.webhook,
        push.url,
        dump_value(push.headers),
        push.payload,
        push.created_at,
        push.created_at,
        push.lease_owner,
        push.lease_until,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaStatus:
    """The schema of a store, for ``flowrunner db status``: ``version`` applied (0: none
    yet), ``latest`` known to this flowrunner, ``applied`` as (version, name, unix time
    or None), ``pending`` as (version, name)."""

    backend: str  # "sqlite" or "postgresql"
    where: str  # the path, or the URL without its password
    version: int
    latest: int
    applied: tuple[tuple[int, str, float | None], ...] = ()
    pending: tuple[tuple[int, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The ``db status --json`` shape."""
        return {
            "backend": self.backend,
            "where": self.where,
            "version": self.version,
            "latest": self.latest,
            "up_to_date": self.version == self.latest,
            "applied": [
                {"version": v, "name": n, "applied_at": iso_unix(at)} for v, n, at in self.applied
            ],
            "pending": [{"version": v, "name": n} for v, n in self.pending],
        }


class Waiter(Protocol):
    """The caller of a group commit waiting for its item: an ``asyncio.Future``, or an
    object whose methods act at once (a batch writing an execution's record)."""

    def done(self) -> bool: ...

    def set_result(self, result: None) -> None: ...

    def set_exception(self, exception: Exception) -> None: ...


def settle(batch: Sequence[tuple[Item, Waiter]], errors: Sequence[Exception | None]) -> None:
    """Wake the callers of one group commit: each with its own error, or done."""
    for (_, future), error in zip(batch, errors, strict=True):
        if future.done():
            continue  # the caller was cancelled; its record is stored anyway
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
