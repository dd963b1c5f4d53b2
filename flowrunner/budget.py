"""A budget of bytes shared by the executions of a batch, so that memory stays bounded
by the concurrency and the size caps, however large each record is.

An execution whose record is large holds a share of :class:`ByteBudget` while its copies
exist (the encoded record, the stored text, the push payload); others wait for room.
One execution larger than the whole budget still runs, alone.

The share is the size of the record's JSON text and of its push's payload, times the
copies of each: both are written once, synchronously, to learn their sizes (so at most
one such pair exists outside the budget, whatever the concurrency). A large record
whose share fits at once keeps them; one that must wait for room drops them first, and
writes them again once its share is held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

# copies alive at once while a record is stored: the record's text (encoded, decoded for
# the store, bound by SQLite) and its push's payload (itself, bound by SQLite)
TEXT_COPIES = 3
PAYLOAD_COPIES = 2
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
        if not self.take_now(size):
            changed = self._condition()
            async with changed:
                await changed.wait_for(lambda: self.free >= size)
                self.free -= size
        try:
            yield
        finally:
            await self.give(size)

    def take_now(self, size: int) -> bool:
        """Take ``size`` bytes (at most the whole budget) if there is room now, without
        waiting; give them back with :meth:`give`."""
        size = min(size, self.total)
        if self.free < size:
            return False
        self.free -= size
        return True

    async def give(self, size: int) -> None:
        """Give back bytes taken; those waiting for room look again."""
        changed = self._condition()
        async with changed:
            self.free += min(size, self.total)
            changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            import asyncio

            self._changed = asyncio.Condition()
        return self._changed


def record_cost(text_size: int, payload_size: int) -> int:
    """The bytes a record may take while it is finished, from the size of its JSON text
    and of its push's payload (0 without one): the copies alive at once, or 0 for a
    small record (not worth counting)."""
    cost = text_size * TEXT_COPIES + payload_size * PAYLOAD_COPIES
    return cost if cost >= LARGE else 0
