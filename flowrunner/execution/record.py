"""The execution record: what happened in one execution, in its documented JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["COMPLETED", "FAILED"]
Outcome = Literal["ok", "skipped", "failed"]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# the last UTC second formatted, as ((days, seconds) since the epoch, its text up to the
# seconds): records come many per second, and formatting a whole datetime costs twice
# as much as adding the milliseconds to a known second
_last_second: tuple[tuple[int, int], str] = ((0, 0), "1970-01-01T00:00:00")


def iso(moment: datetime) -> str:
    """ISO 8601 with milliseconds and offset: ``2026-11-28T10:00:00.120+00:00``."""
    global _last_second
    if moment.tzinfo is not UTC:
        return moment.isoformat(timespec="milliseconds")
    delta = moment - _EPOCH
    key = (delta.days, delta.seconds)
    known, head = _last_second
    if key != known:
        head = moment.isoformat(timespec="seconds")[:-6]  # without "+00:00"
        _last_second = (key, head)
    return f"{head}.{moment.microsecond // 1000:03d}+00:00"


@dataclass(slots=True, kw_only=True)
class StepTrace:
    """One entry of the trace: a step that ran, was skipped or failed."""

    id: str
    kind: Literal["operation", "webhook"]
    outcome: Outcome
    duration_ms: float
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "outcome": self.outcome,
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.request is not None:
            out["request"] = self.request
        if self.response is not None:
            out["response"] = self.response
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True, kw_only=True)
class ExecutionRecord:
    """The result of one execution. ``keys`` keeps declaration, then assignment order."""

    execution_id: str
    flow: str
    status: Status
    started_at: datetime
    ended_at: datetime
    call: dict[str, Any]
    keys: dict[str, Any]
    steps: list[StepTrace] = field(default_factory=list)
    error: dict[str, Any] | None = None  # {"step", "reason", "message"} when FAILED
    on_complete: dict[str, Any] | None = None

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``run --json``."""
        return {
            "execution_id": self.execution_id,
            "flow": self.flow,
            "status": self.status,
            "error": self.error,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": round(self.duration_ms, 3),
            "steps": [s.as_dict() for s in self.steps],
            "keys": self.keys,
            "on_complete": self.on_complete,
        }
