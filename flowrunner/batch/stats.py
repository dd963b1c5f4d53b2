"""The figures of a batch in flat memory: counts by status and by error reason, latency
percentiles of executions and of each webhook, and throughput over time.

:class:`Histogram` is a log-bucketed streaming histogram: a value falls in the bucket
``floor(log(value) / log(GROWTH))``, so a percentile read from it is within 1 % of the
true value, whatever the range, and its size depends on the spread of the values (at
most about 1,200 buckets from 1 µs to an hour), never on how many there are. Count,
minimum, maximum and mean are exact. :class:`Timeline` counts ends per time bin and
halves its resolution when it would hold more than :data:`MAX_BINS` bins.
:class:`BatchStats` holds one of each per batch; ``run --events``, ``runs stats`` and
the HTML report read it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GROWTH = 1.02  # bucket width: a value is reported within half of it (1 %)
_LOG_GROWTH = math.log(GROWTH)
FLOOR_MS = 0.001  # smaller values (and 0, and NaN) share the lowest bucket
CEILING_MS = 1e12  # larger values (and infinity) share the highest: about 30 years
MAX_BINS = 600  # time bins of a timeline before two become one
PERCENTILES = (50.0, 95.0, 99.0)


class Histogram:
    """Milliseconds recorded into logarithmic buckets; percentiles within 1 %."""

    __slots__ = ("buckets", "count", "total", "low", "high")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf

    def record(self, ms: float) -> None:
        """Count one value (negative values, from a clock step, count as 0)."""
        ms = ms if ms > FLOOR_MS else FLOOR_MS
        if ms > CEILING_MS:
            ms = CEILING_MS
        index = int(math.log(ms / FLOOR_MS) / _LOG_GROWTH)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += ms
        if ms < self.low:
            self.low = ms
        if ms > self.high:
            self.high = ms

    def merge(self, other: Histogram) -> None:
        """Add every value of ``other``."""
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, pct: float) -> float:
        """The value below which ``pct`` % of the values lie (nearest rank), to within
        1 %, clamped to the exact minimum and maximum; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(pct / 100.0 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                middle = FLOOR_MS * float(GROWTH ** (index + 0.5))
                return min(max(middle, self.low), self.high)
        return self.high

    def bins(self, count: int = 30) -> list[tuple[float, float, int]]:
        """About ``count`` ``(from_ms, to_ms, values)`` bins of equal width on a log
        scale between the minimum and the maximum, for drawing."""
        if not self.count:
            return []
        first, last = min(self.buckets), max(self.buckets) + 1
        step = max(1, math.ceil((last - first) / count))
        out: list[tuple[float, float, int]] = []
        for start in range(first, last, step):
            n = sum(self.buckets.get(i, 0) for i in range(start, start + step))
            out.append(
                (FLOOR_MS * float(GROWTH**start), FLOOR_MS * float(GROWTH ** (start + step)), n)
            )
        return out

    def summary(self) -> dict[str, float | int]:
        """``count``, ``p50``, ``p95``, ``p99``, ``max`` and ``mean`` (ms, 3 decimals)."""
        out: dict[str, float | int] = {"count": self.count}
        for pct in PERCENTILES:
            out[f"p{pct:g}"] = round(self.percentile(pct), 3)
        out["max"] = round(self.high, 3) if self.count else 0.0
        out["mean"] = round(self.mean, 3)
        return out


class Timeline:
    """How many executions ended in each time bin since ``start`` (unix seconds)."""

    __slots__ = ("start", "width", "counts")

    def __init__(self, start: float | None = None, width: float = 0.1) -> None:
        self.start = start
        self.width = width
        self.counts: list[int] = []

    def record(self, at: float) -> None:
        """Count one end at unix time ``at`` (one that is not a finite number is left out)."""
        if not math.isfinite(at):
            return
        if self.start is None:
            self.start = at
        index = max(0, int((at - self.start) / self.width))
        while index >= MAX_BINS:
            self._coarsen()
            index = max(0, int((at - self.start) / self.width))
        counts = self.counts
        if index >= len(counts):
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1

    def _coarsen(self) -> None:
        old = self.counts
        self.counts = [sum(old[i : i + 2]) for i in range(0, len(old), 2)]
        self.width *= 2

    def rates(self) -> list[tuple[float, float]]:
        """``(seconds since the start, executions per second)`` of each bin."""
        return [(i * self.width, n / self.width) for i, n in enumerate(self.counts)]


@dataclass(slots=True)
class BatchStats:
    """Counts, latencies and throughput of many executions, in flat memory."""

    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    executions: Histogram = field(default_factory=Histogram)
    webhooks: dict[str, Histogram] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    seconds: float = 0.0  # how long the batch took, when known

    def add(
        self,
        status: str,
        reason: str | None,
        duration_ms: float | None,
        ended_at: float | None,
        calls: Iterable[tuple[str, float]] = (),
    ) -> None:
        """Count one record: its status, error reason, duration, end (unix seconds)
        and the ``(webhook, milliseconds)`` of each webhook step that sent a request."""
        self.statuses[status] += 1
        if reason is not None:
            self.reasons[reason] += 1
        if duration_ms is not None:
            self.executions.record(duration_ms)
        if ended_at is not None:
            self.timeline.record(ended_at)
        webhooks = self.webhooks
        for name, ms in calls:
            histogram = webhooks.get(name)
            if histogram is None:
                histogram = webhooks[name] = Histogram()
            histogram.record(ms)

    def add_record(self, record: Mapping[str, Any]) -> None:
        """Count one record in its JSON shape (an execution, INVALID or INTERRUPTED)."""
        error = record.get("error")
        reason = error.get("reason") if isinstance(error, Mapping) else None
        duration = record.get("duration_ms")
        ended = record.get("ended_at")
        self.add(
            str(record.get("status")),
            str(reason) if reason is not None else None,
            float(duration) if isinstance(duration, int | float) else None,
            _unix(ended) if isinstance(ended, str) else None,
            _calls(record.get("steps")),
        )

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data (``runs stats --json``)."""
        return {
            "executions": self.total,
            "seconds": round(self.seconds, 3),
            "statuses": dict(self.statuses.most_common()),
            "error_reasons": dict(self.reasons.most_common()),
            "latency_ms": {
                "executions": self.executions.summary(),
                "webhooks": {n: h.summary() for n, h in sorted(self.webhooks.items())},
            },
        }


def _calls(steps: Any) -> Iterator[tuple[str, float]]:
    if not isinstance(steps, list):
        return
    for step in steps:
        if isinstance(step, Mapping) and step.get("kind") == "webhook" and "response" in step:
            ms = step.get("duration_ms")
            if isinstance(ms, int | float):
                yield str(step.get("webhook") or step.get("id")), float(ms)


def _unix(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def summary_lines(stats: BatchStats) -> list[str]:
    """The lines ``run --events`` and ``runs stats`` print after the counts."""
    lines = []
    if stats.statuses:
        lines.append("by status: " + _counts(stats.statuses))
    if stats.reasons:
        lines.append("by error reason: " + _counts(stats.reasons))
    rows = [("executions", stats.executions)]
    rows += [(f"webhook {name}", h) for name, h in sorted(stats.webhooks.items())]
    rows = [(label, h) for label, h in rows if h.count]
    if rows:
        width = max(len(label) for label, _ in rows)
        lines.append(f"{'latency ms':<{width}}  {'count':>7}  {'p50':>9}  {'p95':>9}  "
                     f"{'p99':>9}  {'max':>9}")  # fmt: skip
        for label, h in rows:
            p50, p95, p99 = (h.percentile(p) for p in PERCENTILES)
            lines.append(
                f"{label:<{width}}  {h.count:>7}  {p50:>9.1f}  {p95:>9.1f}  {p99:>9.1f}  "
                f"{h.high:>9.1f}"
            )
    return lines


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counter.most_common())
