"""The values the state store takes and gives: pushes, execution records, outbox rows.

Also the time conversions (:func:`iso`, :func:`unix`) and the encoding of records and
pushes into table rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flowrunner.jsoncodec import compact


@dataclass(frozen=True, slots=True, kw_only=True)
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


@dataclass(frozen=True, slots=True, kw_only=True)
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


@dataclass(frozen=True, slots=True, kw_only=True)
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
            "next_attempt_at": iso(self.next_attempt_at) if self.status == "pending" else None,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "delivered_at": iso(self.delivered_at),
        }


_LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second datetime can show


def iso(moment: float | None) -> str | None:
    """A unix time as ISO 8601 UTC with milliseconds; ``None`` stays ``None``.

    A time outside years 1970..9999 (a damaged row, a value an older version stored from
    a peer) is shown as the nearest of the two ends, never raises."""
    if moment is None:
        return None
    try:
        bounded = min(max(float(moment), 0.0), _LATEST)
    except (TypeError, ValueError):
        bounded = 0.0
    if bounded != bounded:  # NaN
        bounded = 0.0
    return datetime.fromtimestamp(bounded, UTC).isoformat(timespec="milliseconds")


def unix(text: Any) -> float:
    """An ISO 8601 string as unix seconds (naive means UTC); anything else: now."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return time.time()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


Item = tuple[Record, NewPush | None]


def _dump(value: Any) -> str:
    return compact(value)


def _run_row(record: Record) -> tuple[Any, ...]:
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
        _dump(record),
    )


def _push_row(push: NewPush) -> tuple[Any, ...]:
    return (
        push.id,
        push.execution_id,
        push.webhook,
        push.url,
        _dump(push.headers),
        push.payload,
        push.created_at,
        push.created_at,
    )
