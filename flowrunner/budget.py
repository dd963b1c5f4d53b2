"""A budget of bytes shared by the executions of a batch, so that memory stays bounded
by the concurrency and the size caps, however large each record is.

An execution whose record is large holds a share of :class:`ByteBudget` while its copies
exist (the encoded record, the stored text, the push payload); others wait for room.
One execution larger than the whole budget still runs, alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowrunner.templating import limits

if TYPE_CHECKING:
    import asyncio

ESCAPED = 6  # bytes JSON may write for one character (``\\u0001``)
COPIES = 5  # copies of a record alive while it is encoded, stored and pushed
LARGE = 256 << 10  # estimated bytes from which an execution holds a share
FINISHING_BYTES = 128 << 20  # the budget of a batch (one process)


class ByteBudget:
    """``total`` bytes handed out in shares; :meth:`hold` waits for room."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed: asyncio.Condition | None = None  # made on first use: a dry run has no loop

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes (at most the whole budget) for the body of the block."""
        size = min(size, self.total)
        if self._changed is None:
            import asyncio

            self._changed = asyncio.Condition()
        changed = self._changed
        async with changed:
            await changed.wait_for(lambda: self.free >= size)
            self.free -= size
        try:
            yield
        finally:
            async with changed:
                self.free += size
                changed.notify_all()


SMALL_CHARS = LARGE // (ESCAPED * COPIES)  # fewer characters: a record not worth counting


def record_cost(mappings: tuple[Mapping[str, Any], ...]) -> int:
    """The bytes a record holding ``mappings`` (its flow keys and call) may take while
    it is finished: its text, written out with the worst JSON escaping, times the copies
    made of it; 0 for a small record (not worth counting).

    Most records are small and flat: a first pass over their top level, with an upper
    bound for each scalar, settles those without walking anything; only a record that
    may be large is measured whole."""
    if _upper_bound(mappings) < SMALL_CHARS:
        return 0
    cost = limits.measure(mappings, FINISHING_BYTES) * ESCAPED * COPIES
    return cost if cost >= LARGE else 0


def _upper_bound(mappings: tuple[Mapping[str, Any], ...]) -> int:
    """At least what :func:`flowrunner.templating.limits.measure` counts; stops early."""
    chars = 1 + len(mappings)
    for mapping in mappings:
        chars += len(mapping)
        for key, value in mapping.items():
            chars += len(key)
            kind = type(value)
            if kind is str:
                chars += len(value)
            elif kind is int:
                chars += value.bit_length() // 3 + 1
            elif kind is float or kind is bool or value is None:
                chars += 1
            else:
                chars += limits.measure(value, SMALL_CHARS)
            if chars >= SMALL_CHARS:
                return chars
    return chars
