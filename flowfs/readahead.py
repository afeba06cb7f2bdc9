"""Per-handle access-pattern detection: what to fetch for a read, and what to read ahead.

Pure policy, no I/O and no trio: the reader asks :meth:`AccessPattern.on_read` for a
:class:`Plan` and does the fetching.  All positions are block indices except the byte
offsets given to ``on_read``.

The idea is the one of kernel and object-store read-ahead: a read with no history, or
one far from the previous read, is *random* — fetch only what it needs (at least
``first_blocks``), because index lookups (BAM/CRAM/VCF) must not pay for megabytes.
A read that continues the previous one is *sequential*; the first one opens a read-ahead
window of one block and, each time half of the window has been consumed, the window
grows by ``growth`` (2, or more where every step costs a long round trip) up to a cap
and is topped up.  So the bytes read ahead never exceed the cap, and while ramping up
they stay in proportion to what the reader has actually consumed.  Once at the cap the
window is kept full: it is topped up as soon as one request's worth (``step``) of it
has been consumed, so the requests in flight stay steady instead of swinging between
half the window and all of it.

Far away, where a round trip costs more than a few MiB, a handle's *first* read that
asks for half a block or more at offset 0 (``cp``, ``cat``, ``rsync``, Python's
``read()``: 128 KiB to 1 MiB) also reads ``opening`` blocks ahead, so a file of a few MiB
comes in one round trip instead of two; a small first read (``head``, ``zcat | head``:
32 KiB) does not. samtools' 128 KiB header read does: a BAM's first megabytes, once
per file while they stay cached.

``slack`` tolerates the small disorder of a kernel that issues several reads of one file
at once, and re-reads of the last bytes: a read starting within ``slack`` bytes behind
or ahead of the previous end (or inside the read-ahead already issued) keeps the window.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flowfs.blocks import blocks_covering

_EMPTY = range(0)


@dataclass(frozen=True)
class Policy:
    """Tuning of the access-pattern detection (sizes in bytes unless named ``*_blocks``)."""

    block_size: int
    first_blocks: int = 1
    max_blocks: int = 64
    slack: int = 2 * 2**20

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.first_blocks < 1 or self.max_blocks < 1:
            raise ValueError(f"bad read-ahead policy: {self}")
        if self.slack < 0:
            raise ValueError("slack must be >= 0")


@dataclass(frozen=True)
class Plan:
    """What one read needs.

    ``need``: blocks the read must wait for.  ``demand``: blocks to fetch now as part
    of the read (``need``, possibly extended for a first random read).  ``prefetch``:
    blocks to fetch in the background, not waited for.
    """

    need: range
    demand: range
    prefetch: range


class _Kind(enum.Enum):
    RANDOM = "random"
    REREAD = "reread"
    ADVANCE = "advance"


class AccessPattern:
    """Access-pattern state of one open file handle."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._pos_end: int | None = None  # byte end of the furthest read so far
        self._run_start = 0  # the block where the current sequential run began
        self._window = 0  # read-ahead distance in blocks; 0: not sequential
        self._ra_end = 0  # blocks below this were requested (demand or read-ahead)
        self._demand_end = 0  # the end of the last random read's demand (blocks)

    @property
    def sequential(self) -> bool:
        """True while a read-ahead window is open."""
        return self._window > 0

    @property
    def window(self) -> int:
        """Current read-ahead window in blocks (0 for random access)."""
        return self._window

    @property
    def readahead_end(self) -> int:
        """First block not yet requested by this handle's plans."""
        return self._ra_end

    def on_read(self, start: int, end: int, nblocks: int, cap: int | None = None,
                growth: int = 2, step: int = 1, initial: int = 1, confident: int = 0,
                opening: int = 0, margin: int = 0, confident_start: int = 0) -> Plan:
        """Plan a read of bytes ``[start, end)`` (already clamped to the file).

        ``nblocks`` is the file's block count; ``cap`` replaces ``policy.max_blocks`` as the
        window's cap (the reader sizes it to the link and shares a budget between streams);
        ``growth`` is the window's factor per ramp step; ``step`` the top-up granularity at
        the cap (one request, in blocks); ``initial`` the window a stream opens with;
        ``confident`` (if not 0) the blocks a run must have read for the window to jump to
        the cap at once: past any index lookup, a reader that streams is streaming
        (``confident_start``, if not 0, for a run from the file's first block: a whole-file
        reader, not a lookup);
        ``opening`` the blocks to read ahead of a handle's first read when it asks for half
        a block or more at offset 0 (0: none), where a round trip costs more than the bytes;
        ``margin`` the bytes past a random read's end its demand reaches too, and reads
        within that demand do not open a window: the kernel's read-ahead after a small
        read, which needs no second round trip and is no sign of streaming.
        """
        need = blocks_covering(start, end, self.policy.block_size)
        kind = self._classify(start, end)
        if kind is _Kind.REREAD:
            return Plan(need, need, _EMPTY)
        if kind is _Kind.RANDOM:
            return self._random(start, end, need, nblocks, opening, margin)
        self._pos_end = end
        self._ra_end = max(self._ra_end, need.stop)
        if not self._window and need.stop <= self._demand_end:
            return Plan(need, need, _EMPTY)  # still inside what the random read asked for
        mark = confident_start if confident_start and self._run_start == 0 else confident
        sure = bool(mark) and need.stop - self._run_start >= mark
        return Plan(need, need, self._top_up(need.stop, nblocks, cap, max(growth, 2),
                                             max(step, 1), max(initial, 1), sure))

    def _random(self, start: int, end: int, need: range, nblocks: int, opening: int,
                margin: int) -> Plan:
        first = self._pos_end is None
        self._window = 0
        self._pos_end = end
        self._run_start = need.start
        # need.stop <= nblocks: a read is clamped to the file first
        reach = blocks_covering(start, end + margin, self.policy.block_size).stop
        demand = range(need.start, min(max(reach, need.start + self.policy.first_blocks),
                                       nblocks))
        self._demand_end = demand.stop if margin else 0  # far only: near, a window is cheap
        prefetch = _EMPTY
        # Half a block (128 KiB) is what the kernel asks for by default when a program
        # reads in bulk; head and zcat | head ask for 32 KiB.
        bulk = 2 * (end - start) >= self.policy.block_size
        if first and bulk and need.start == 0 and opening > 0:
            prefetch = range(demand.stop, min(demand.stop + opening, nblocks))
        self._ra_end = prefetch.stop if prefetch else demand.stop
        return Plan(need, demand, prefetch)

    def retract(self, block: int) -> None:
        """Only the read-ahead below ``block`` was actually started (budget, parallelism).

        The rest will be planned again by a later read.
        """
        self._ra_end = min(self._ra_end, max(block, 0))

    def replan(self, block: int) -> None:
        """Blocks from ``block`` on that were pending were dropped, not fetched: plan them
        again on the next read if they lie ahead of this handle, between its furthest
        read and its read-ahead's end (behind it, or past that end, they are not its)."""
        if self._pos_end is not None and self._pos_end // self.policy.block_size <= block:
            self.retract(block)

    def _classify(self, start: int, end: int) -> _Kind:
        if self._pos_end is None:
            return _Kind.RANDOM
        low = self._pos_end - self.policy.slack
        high = max(self._pos_end + self.policy.slack, self._ra_end * self.policy.block_size)
        if not low <= start <= high:
            return _Kind.RANDOM
        if end <= self._pos_end:
            return _Kind.REREAD
        return _Kind.ADVANCE

    def _top_up(self, reached: int, nblocks: int, cap: int | None, growth: int,
                step: int, initial: int, sure: bool = False) -> range:
        """The read-ahead to start now that the reader has reached block ``reached``."""
        limit = max(self.policy.max_blocks if cap is None else cap, 1)
        ahead = self._ra_end - reached
        if sure and self._window:
            self._window = limit  # streaming beyond doubt: straight to the cap
        if self._window == 0:
            self._window = min(initial, limit)
        elif self._window >= limit:
            self._window = limit  # the cap may have shrunk (more streams share the budget)
            if ahead > limit - min(step, limit):
                return _EMPTY  # less than one request's worth consumed since the last top-up
        elif ahead > self._window // 2:
            return _EMPTY  # more than half the window is still ahead: nothing to do yet
        else:
            self._window = min(self._window * growth, limit)
        stop = min(reached + self._window, nblocks)
        if self._ra_end >= stop:
            return _EMPTY
        prefetch = range(self._ra_end, stop)
        self._ra_end = stop
        return prefetch
