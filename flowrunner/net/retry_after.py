"""``Retry-After`` read defensively: a peer's header may be huge, junk or far away."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC

MAX_CHARS = 64  # longer than any HTTP date (29 characters) is not read as one
MAX_DIGITS = 10  # more digits of seconds (over 300 years) mean "as late as allowed"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (lower case), whatever the case of the stored names."""
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header (seconds or an HTTP date) asks
    to wait, never negative; infinity for more than :data:`MAX_DIGITS` digits of seconds
    (the caller bounds every wait); None when there is none or it cannot be read
    (ignored, as browsers do). Never raises, whatever the value."""
    value = header(headers, "retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: it takes "²"
        return float(int(value)) if len(value) <= MAX_DIGITS else math.inf
    if len(value) > MAX_CHARS:
        return None
    from email.utils import parsedate_to_datetime  # here: only an HTTP date needs it

    try:
        moment = parsedate_to_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
