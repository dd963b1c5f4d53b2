"""The execution record: what happened in one execution, in its documented JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from flowrunner.times import iso

Status = Literal["COMPLETED", "FAILED"]
Outcome = Literal["ok", "skipped", "failed"]


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
    webhook: str | None = None  # a webhook step: the webhook it called
    attempts: int | None = None  # a webhook step that sent: how many requests it made

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
        if self.webhook is not None:
            out["webhook"] = self.webhook
        if self.attempts is not None:
            out["attempts"] = self.attempts
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
