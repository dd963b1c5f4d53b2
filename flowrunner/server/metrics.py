"""Prometheus metrics of ``serve``, written in the text exposition format by hand.

Why not ``prometheus-client``: the handful of series here need counters and histograms
with fixed label sets, which take a few dozen lines; the library would be a new
dependency (with its own global registry and collector threads) for that. Correctness
of the output is checked in the tests with ``prometheus_client``'s own parser.

Labels are bounded: ``flow`` (the project's flows), ``status`` (COMPLETED, FAILED),
``webhook`` (the project's webhooks) and ``outcome`` (ok, failed).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

Labels = tuple[str, ...]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


class Counter:
    """A counter per label set."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}_total{_labels(self.label_names, labels)} {_number(value)}")
        return lines


class Histogram:
    """A histogram per label set, with fixed buckets."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.buckets = tuple(buckets)
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self.values.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total) in sorted(self.values.items()):
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {total[0]!r}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {running}")
        return lines


class Gauge:
    """A gauge read when the metrics are scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(self.read())}",
        ]


class Metrics:
    """The series of ``serve``; gauges are read from ``gauges`` at scrape time."""

    def __init__(self) -> None:
        self.executions = Counter(
            "flowrunner_executions", "Executions ended, by flow and status.", ["flow", "status"]
        )
        self.execution_duration = Histogram(
            "flowrunner_execution_duration_seconds", "Duration of executions.", ["flow"]
        )
        self.webhook_duration = Histogram(
            "flowrunner_webhook_request_duration_seconds",
            "Duration of webhook calls made by steps, by webhook and outcome.",
            ["webhook", "outcome"],
        )
        self.accepted = Counter(
            "flowrunner_accepted_executions", "Executions accepted (queued), by flow.", ["flow"]
        )
        self.gauges: list[Gauge] = []

    def render(self) -> bytes:
        """The text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for series in (self.executions, self.accepted):
            lines += series.render()
        for histogram in (self.execution_duration, self.webhook_duration):
            lines += histogram.render()
        for gauge in self.gauges:
            lines += gauge.render()
        return ("\n".join(lines) + "\n").encode()
