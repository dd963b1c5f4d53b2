"""When a failed webhook call is tried again, and how long to wait first (pure).

A :class:`~flowrunner.source.model.RetryPolicy` retries the failures named in its ``on``:
``timeout``, ``connection``, ``5xx``, ``4xx`` or one status code. A refused destination,
a disabled HTTP, an answer too large and a redirection are never retried: another
attempt would end the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from flowrunner.net.retry_after import retry_after
from flowrunner.source.model import RetryPolicy

MAX_WAIT = 60.0  # the longest wait any policy may ask for (the schema's bound)


def retryable(policy: RetryPolicy, status: int | None, failure: str | None) -> bool:
    """Whether an attempt that ended with ``status`` / ``failure`` may be tried again
    under ``policy`` (a success never is)."""
    on = policy.on
    if failure is not None:
        return failure in ("timeout", "connection") and failure in on
    if status is None or status < 400 or status > 599:
        return False
    return str(status) in on or f"{status // 100}xx" in on


def backoff(policy: RetryPolicy, retry: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``retry`` (1 before the second attempt): the
    policy's delay, doubled per retry when exponential, spread by the jitter, at most
    ``max_delay``."""
    base = policy.delay
    if policy.backoff == "exponential":
        base *= 2.0 ** min(retry - 1, 30)  # bounded: 10 attempts never get near it
    spread = base * policy.jitter * (2.0 * rand() - 1.0)
    return min(max(0.0, base + spread), policy.max_delay)


def wait(
    policy: RetryPolicy,
    retry: int,
    headers: Mapping[str, str],
    now: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``retry``: the backoff, or longer when the
    answer's ``Retry-After`` asks for it, but never past ``max_delay``."""
    longest = policy.max_delay if 0.0 <= policy.max_delay <= MAX_WAIT else MAX_WAIT
    seconds = backoff(policy, retry, rand)
    if not 0.0 <= seconds <= longest:  # NaN included: the compiler refuses it, but still
        seconds = longest if seconds > longest else 0.0
    asked = retry_after(headers, now)
    if asked is not None and asked > seconds:
        seconds = min(asked, longest)
    return seconds
