"""Recycled receive buffers: block memory goes from the cache's evictions to the next body.

A fresh ``bytearray`` is zeroed when made, and fresh heap pages fault in as they are
touched: on a cold sequential read that was a quarter of the event loop's time, all of
it under the GIL. Streaming evicts one block for every block it receives, so the
evicted buffers can take the new bytes instead: no allocation, no zeroing, no faults.

Only a buffer that nothing else refers to is ever offered (the cache checks its
reference count when it evicts), and a receive overwrites every byte of a buffer
before anyone sees it, so a recycled buffer cannot show old bytes. Everything here
runs on the event loop's thread.
"""

from __future__ import annotations


class BufferPool:
    """At most ``limit`` spare ``bytearray``s of exactly ``size`` bytes."""

    def __init__(self, size: int, limit: int = 64) -> None:
        self.size = size
        self.limit = limit
        self._free: list[bytearray] = []
        self.reused = 0

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes whose content is undefined (recycled when possible)."""
        if size == self.size and self._free:
            self.reused += 1
            return self._free.pop()
        return bytearray(size)

    def offer(self, buffer: object) -> None:
        """Keep ``buffer`` for a later ``take``; the caller must hold the only reference."""
        if type(buffer) is bytearray and len(buffer) == self.size and len(self._free) < self.limit:
            self._free.append(buffer)

    def __len__(self) -> int:
        return len(self._free)
