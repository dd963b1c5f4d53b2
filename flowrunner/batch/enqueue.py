"""``flowrunner enqueue``: queue one execution per JSON line, in lots of
:data:`LOT` lines per transaction, for the workers of a shared store to run.

Each line is checked like a line of ``run --events``; a line that cannot be run is
reported as ``{"line": n, "status": "INVALID", "error": {...}}`` and queues nothing.
Each queued line is reported as ``{"line": n, "execution_id": "..."}`` once the
transaction holding it has committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from flowrunner.batch.lines import MAX_LINE, Invalid, Line, Oversize, parse_line
from flowrunner.jsoncodec import compact
from flowrunner.state.queue_values import NewRequest, QueuedCall

LOT = 500  # lines queued in one transaction


@dataclass(frozen=True, slots=True)
class EnqueueCounts:
    queued: int
    invalid: int


def lines_of(stream: Iterable[bytes]) -> Iterator[Line]:
    """The lines of a binary stream, without line ends; blank lines are skipped (as
    ``run --events`` does) and a line over MAX_LINE bytes is only sized."""
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            yield b""
            continue
        yield Oversize(len(line)) if len(line) > MAX_LINE else line


def enqueue_lines(
    store: Any, flow: str, lines: Iterable[Line], emit: Callable[[dict[str, Any]], None]
) -> EnqueueCounts:
    """Queue an execution of ``flow`` for each valid line of ``lines`` in ``store``;
    ``emit`` gets one report per line, in input order. Returns the counts."""
    import time

    queued = invalid = 0
    lot: list[tuple[int, QueuedCall]] = []
    reports: list[dict[str, Any]] = []

    def commit() -> None:
        nonlocal queued
        if lot:
            calls = tuple(call for _, call in lot)
            request = NewRequest(request_id=f"enq_{uuid.uuid4().hex}", flow=flow, calls=calls,
                                 answer=compact({"flow": flow, "queued": len(calls)}))  # fmt: skip
            store.enqueue_many([request], now=time.time())
            queued += len(lot)
        for report in reports:
            emit(report)
        lot.clear()
        reports.clear()

    for number, raw in enumerate(lines, 1):
        if raw == b"":
            continue
        parsed = parse_line(raw)
        if isinstance(parsed, Invalid):
            invalid += 1
            error = {"reason": parsed.reason, "message": parsed.message}
            reports.append({"line": number, "status": "INVALID", "error": error})
            continue
        call, keys, user_keys = parsed
        execution_id = str(uuid.uuid4())
        inputs = {"call": call, "keys": keys, "user_keys": user_keys}
        lot.append((number, QueuedCall(execution_id=execution_id, inputs=inputs)))
        reports.append({"line": number, "execution_id": execution_id})
        if len(lot) >= LOT:
            commit()
    commit()
    return EnqueueCounts(queued=queued, invalid=invalid)
