"""What ``run --events`` tells a person on stderr: a progress bar on a terminal, and a
summary line at the end whatever stderr is.

The bar shows records written, the rate and, when the input is a file of known size,
how far through it the batch has read, the estimated number of lines and the time
left (both estimated from the bytes read so far).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

WIDTH = 20


@dataclass(slots=True)
class Counts:
    """What a batch produced, by record status."""

    completed: int = 0
    failed: int = 0
    invalid: int = 0
    interrupted: int = 0
    pending: int = 0  # executions whose on-complete push is still in the outbox
    dead: int = 0  # executions whose on-complete push was given up (410, other 4xx)

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.invalid + self.interrupted


def summary_line(counts: Counts, seconds: float) -> str:
    """``N executions: C completed, F failed, I invalid, P pushes pending; R/s``."""
    rate = counts.total / seconds if seconds > 0 else 0.0
    interrupted = f", {counts.interrupted} interrupted" if counts.interrupted else ""
    dead = f", {counts.dead} pushes dead" if counts.dead else ""
    return (
        f"{counts.total} executions: {counts.completed} completed, {counts.failed} failed, "
        f"{counts.invalid} invalid{interrupted}, {counts.pending} pushes pending{dead}; "
        f"{rate:,.0f}/s"
    )


def bar_text(done: int, seconds: float, read: int, total: int | None) -> str:
    """One line of the progress bar (without the carriage return)."""
    rate = done / seconds if seconds > 0 else 0.0
    if not total or read <= 0:
        return f"{done:,} done  {rate:,.0f}/s"
    fraction = min(read / total, 1.0)
    filled = int(fraction * WIDTH)
    expected = int(done / fraction) if fraction > 0 else 0
    left = seconds * (1 - fraction) / fraction if fraction > 0 else 0.0
    return (
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%}  "
        f"{done:,}/~{expected:,}  {rate:,.0f}/s  ETA {_clock(left)}"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Redraws one line of ``stream`` in place; does nothing unless ``enabled``."""

    def __init__(self, stream: TextIO, *, enabled: bool, total: int | None) -> None:
        self.stream = stream
        self.enabled = enabled
        self.total = total
        self.started = time.monotonic()
        self._shown = False

    def show(self, done: int, read: int) -> None:
        if not self.enabled:
            return
        text = bar_text(done, time.monotonic() - self.started, read, self.total)
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
