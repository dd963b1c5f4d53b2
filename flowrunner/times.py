"""Times as the outputs show them: ISO 8601 with milliseconds and offset, from a datetime
or from unix seconds (the state store's unit), and back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

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


_LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second a datetime can show


def iso_unix(moment: float | None) -> str | None:
    """Unix seconds as :func:`iso` text in UTC; ``None`` stays ``None``.

    A time outside years 1970..9999 (a damaged row, a value an older version stored from
    a peer) is shown as the nearest of the two ends; this never raises."""
    if moment is None:
        return None
    try:
        bounded = min(max(float(moment), 0.0), _LATEST)
    except (TypeError, ValueError):
        bounded = 0.0
    if bounded != bounded:  # NaN
        bounded = 0.0
    return iso(datetime.fromtimestamp(bounded, UTC))


def unix(text: Any) -> float:
    """An ISO 8601 string as unix seconds (naive means UTC); anything else: now."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return time.time()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
