"""What ``run --events`` tells a person on stderr: a progress bar on a terminal, and a
summary line at the end whatever stderr is.

The bar shows records written, the rate and, when the input is a file of known size,
the share of the estimated lines written, the estimated number of lines (the lines read
per byte read so far, times the size of the file) and the time left (the lines still to
write at the rate so far). It shows 100 % only once every line of the file is read and
written: while an execution runs, at most 99 %.
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


def bar_text(done: int, seconds: float, lines: int, read: int, total: int | None) -> str:
    """One line of the progress bar (without the carriage return): ``done`` records
    written after ``seconds``, ``lines`` lines in the ``read`` bytes read of ``total``."""
    rate = done / seconds if seconds > 0 else 0.0
    if not total or read <= 0 or lines <= 0:
        return f"{done:,} done  {rate:,.0f}/s"
    expected = lines if read >= total else max(lines, round(lines * total / read))
    fraction = done / expected
    if done < expected or read < total:
        fraction = min(fraction, 0.99)  # never 100 % while a line may still be running
    filled = int(fraction * WIDTH)
    left = max(expected - done, 0) / rate if rate > 0 else None
    eta = _clock(left) if left is not None else "-:--"
    approx = "" if read >= total else "~"
    return (
        f"[{'#' * filled}{'.' * (WIDTH - filled)}] {int(fraction * 100):3d}%  "
        f"{done:,}/{approx}{expected:,}  {rate:,.0f}/s  ETA {eta}"
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

    def show(self, done: int, lines: int, read: int) -> None:
        """Redraw: ``done`` records written, ``lines`` lines in the ``read`` bytes read."""
        if not self.enabled:
            return
        text = bar_text(done, time.monotonic() - self.started, lines, read, self.total)
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
