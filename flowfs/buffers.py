"""Recycled receive buffers: block memory goes from the cache's evictions to the next body.

A fresh ``bytearray`` is zeroed when made, and fresh heap pages fault in as they are
touched: on a cold sequential read that was a quarter of the event loop's time, all of
it under the GIL. Streaming evicts one block for every block it receives, so the
evicted buffers can take the new bytes instead: no allocation, no zeroing, no faults.

The pool must absorb bursts: a request's buffers are all taken when its reply starts,
and the blocks it evicts come back only when it lands, so while a stream runs up to the
whole read-ahead budget is taken before any of it returns. A pool of 64 spares dropped
most of what came back and made fresh buffers for more than half of a cold 1 GiB read.
Spares never raise the peak memory: one is only kept when a received block took its
place in the cache, so cache + bodies in flight + spares never exceeds what cache +
bodies in flight were when the pool was last empty.

A new buffer, when the pool has none (a fresh mount fills its cache before anything is
evicted), is not zeroed either: ``bytearray(size)`` writes every byte on the event loop,
faulting in fresh pages under the GIL, which took a third of the loop's time on a cold
read over HTTPS. Made without its bytes written, its pages fault in where the receive
first writes them: in a worker thread, outside the GIL (loopback HTTPS, 256 MiB cold:
about 10% faster).

Only a buffer that nothing else refers to is ever offered (the cache checks its
reference count when it evicts), and a receive overwrites every byte of a buffer
before anyone sees it (a reply cut short is an error, and none of its blocks is kept), so
neither a recycled nor a new buffer can show old bytes. Everything here runs on the
event loop's thread.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _unwritten() -> Callable[[int], bytearray]:
    """``bytearray(size)`` without its bytes written: CPython's own constructor, which
    copies nothing when given no source; plain ``bytearray`` where there is no such API."""
    if sys.implementation.name != "cpython":
        return bytearray
    try:
        import ctypes

        # A prototype of our own, not the shared ``ctypes.pythonapi`` attribute whose
        # types any other module may set. It returns a new reference, which ctypes takes.
        make = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p, ctypes.c_ssize_t)(
            ("PyByteArray_FromStringAndSize", ctypes.pythonapi))
    except (ImportError, AttributeError):
        return bytearray
    return lambda size: make(None, size)


new_buffer = _unwritten()


class BufferPool:
    """At most ``limit`` spare ``bytearray``s of exactly ``size`` bytes."""

    def __init__(self, size: int, limit: int = 64) -> None:
        self.size = size
        self.limit = limit
        self._free: list[bytearray] = []
        self.reused = 0
        self.allocated = 0

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes whose content is undefined: recycled when possible,
        else new and not zeroed. The caller must write every byte before anyone reads it."""
        spare = self.take_spare(size)
        if spare is not None:
            return spare
        self.allocated += 1
        return new_buffer(size)

    def take_spare(self, size: int) -> bytearray | None:
        """A spare buffer of ``size`` bytes if there is one; never a new one."""
        if size == self.size and self._free:
            self.reused += 1
            return self._free.pop()
        return None

    def offer(self, buffer: object) -> None:
        """Keep ``buffer`` for a later ``take``; the caller must hold the only reference."""
        if type(buffer) is bytearray and len(buffer) == self.size and len(self._free) < self.limit:
            self._free.append(buffer)

    @property
    def spare(self) -> int:
        """Buffers waiting to be taken. (No ``__len__``: an empty pool must not be falsy.)"""
        return len(self._free)
