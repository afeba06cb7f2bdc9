"""The block cache: LRU by bytes, where blocks a stream has read through go first.

Plain LRU handles read-ahead badly when several files stream at once. A block read
ahead is inserted long before its reader gets to it; meanwhile the other streams touch
their own blocks, so it sinks to the old end and is evicted just before it is needed,
then fetched again (measured: 18% of the bytes of 8 concurrent `cat`s fetched twice with
a 256 MiB cache). Blocks a sequential reader has consumed are the least likely to be
wanted again, and the kernel's page cache keeps them for re-reads anyway.

So a reader *demotes* what it has read through: demoted blocks are evicted first, oldest
first, and only then does eviction fall back to least recently used. A hit on a demoted
block (another reader on the same file) promotes it back to an ordinary entry.

An evicted block that nothing else refers to any more (no reader, no view) is handed
to ``recycle`` (see :mod:`flowfs.buffers`), so its memory takes the next body.
"Nothing else refers to it" is read from ``sys.getrefcount``, which only CPython
reports exactly; elsewhere nothing is recycled (evicted blocks are simply dropped).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import Cache, LRUCache


def _lone_refcount() -> int:
    """What ``sys.getrefcount`` says of a block that only a local name holds, measured
    in the shape :meth:`BlockCache.popitem` asks it: 2 (the name and the call's argument)
    up to CPython 3.13; CPython 3.14 lends locals to calls without counting them, and
    says 1. Comparing with a fixed 2 there would take a block a reader still holds
    (2 = the name + the reader) for a free one, and overwrite it under the reader."""
    def victim() -> tuple[int, bytearray]:
        return 0, bytearray(1)

    _, value = victim()
    return sys.getrefcount(value)


#: ``sys.getrefcount`` of a block nothing but the evicting code holds (see above).
LONE_REFCOUNT = _lone_refcount()
#: Whether ``sys.getrefcount`` counts every holder of a block (CPython's reference
#: counting). On other interpreters (PyPy's is an estimate), or where the count of a lone
#: block is not one we understand, a block still held by a reader could be reported free
#: and overwritten under it, so recycling is off.
EXACT_REFCOUNTS = sys.implementation.name == "cpython" and LONE_REFCOUNT in (1, 2)


class BlockCache(LRUCache):
    """``LRUCache`` sized by ``len`` of its values, with :meth:`demote`."""

    def __init__(self, maxsize: int, recycle: Callable[[Any], None] | None = None) -> None:
        super().__init__(maxsize, getsizeof=len)
        self._demoted: OrderedDict[Hashable, None] = OrderedDict()
        # Checked once: without exact reference counts, recycling is never safe.
        self._recycle = recycle if EXACT_REFCOUNTS else None

    def demote(self, key: Hashable) -> None:
        """Make ``key`` (if cached) the first to go when room is needed."""
        if key in self:
            self._demoted[key] = None
            self._demoted.move_to_end(key)

    def peek(self, key: Hashable) -> Any | None:
        """The block at ``key`` if cached (else None), its place in the eviction order
        untouched: looking is not using."""
        try:
            return Cache.__getitem__(self, key)
        except KeyError:
            return None

    def __getitem__(self, key: Hashable) -> Any:
        value = super().__getitem__(key)
        self._demoted.pop(key, None)
        return value

    def __delitem__(self, key: Hashable) -> None:
        super().__delitem__(key)
        self._demoted.pop(key, None)

    def popitem(self) -> tuple[Hashable, Any]:
        """Evict the oldest demoted block, else the least recently used one.

        Only for eviction (cachetools calls it when room is needed): the value returned
        is empty when the block's memory went to ``recycle``.
        """
        key, value = self._victim()
        # CPython only (EXACT_REFCOUNTS; otherwise _recycle is None): `value` alone, as
        # LONE_REFCOUNT measured it. More means a reader, a pending fetch or a view
        # still holds the block: then it is simply dropped.
        if self._recycle is not None and sys.getrefcount(value) == LONE_REFCOUNT:
            self._recycle(value)
            return key, b""
        return key, value

    def _victim(self) -> tuple[Hashable, Any]:
        while self._demoted:
            key, _ = self._demoted.popitem(last=False)
            if key in self:
                return key, self.pop(key)
        return super().popitem()

    @property
    def demoted(self) -> int:
        return len(self._demoted)
