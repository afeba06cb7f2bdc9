"""The bytes of the read path: block cache, single-flight fetches, read-ahead.

A :class:`Reader` serves ``read(stream, offset, size)`` from an LRU cache of fixed-size
blocks keyed by ``(cache_key, block index)``.  Missing blocks are fetched through an
injected ``fetch(target, start, end)`` as Range requests covering runs of contiguous
missing blocks; every fetch runs as a task in the injected nursery, never in the caller's
cancel scope, so a reader that gives up cannot corrupt shared state.  Per-stream access
patterns (:mod:`flowfs.readahead`) decide what to read ahead.  The records the reader
keeps (streams, requests, pending blocks) are in :mod:`flowfs.streams`; the rules below
say how the reader may change them.

Concurrency rules.  trio is cooperative: code between two awaits runs without
interleaving, and every rule below relies on it.

1. The cache (a ``BlockCache``: a cachetools ``LRUCache``, not task-safe) is only touched
   in synchronous code: no iterator over it and no half-done update is ever held across an await.
2. A block key is in at most one of ``_cache`` and ``_pending``.  A pending entry is
   registered in the same synchronous step that schedules the task resolving it; the
   task's ``_settle`` stores the block (or the error), removes the entry and sets its
   event in one synchronous step: no await between storing a block and unregistering
   its pending entry.
3. Every fetch runs under its own ``io_timeout`` deadline and ``_settle`` runs in a
   ``finally``, so no entry stays pending longer than ``io_timeout``, whatever the fetch
   does (fail, hang, get cancelled by ``close`` or by the nursery). A read-ahead request
   the disk answered in part (rule 8) fetches, one after another, what reads come to wait
   on, each fetch under an ``io_timeout`` of its own: its entries may stay pending that
   many times ``io_timeout`` (at most one more than its blocks), but no read waits on one
   longer than its own ``io_timeout`` (rule 4).
4. Waiters only wait on a pending entry's event, under their own deadline; a waiter
   leaving never affects the fetch.  Waiters take the block from the entry itself, so a
   block evicted right after it landed is still delivered.
5. A failed fetch stores nothing: each waiter gets a copy of the error, the next read
   fetches again (after a timeout, see rule 7).  Results of an entry that was detached
   (``close``) are delivered to its waiters but not cached.
6. Read-ahead requests count their bytes in ``_ra_bytes`` from start until settled or
   abandoned, exactly once (``Request.released``); a request is only started if it fits
   the global budget, so ``_ra_bytes <= readahead_budget`` always.  Demand fetches (the
   blocks a read needs) are never held back.
7. A read that ran out of ``io_timeout`` (its own deadline, or the fetch's it waited on)
   is remembered by its stream for ``RETRY_GRACE`` seconds, block by block; a read of
   the same stream needing such a block (not cached, not pending) fails at once with
   that error. The kernel retries a failed read-ahead request synchronously, through the
   same open file, right away: without this one ``read(2)`` waited two full timeouts.
   Another open (a user running the command again) fetches afresh at once.
8. Read-ahead goes through ``ahead`` where one is given (the disk cache's): it may bring
   only a run's first blocks (those the disk holds, where it holds the window's first):
   a speculative window should not reach past what was read before. The blocks of the
   rest that reads wait on are then fetched by ``fetch``, looking again after each fetch;
   in the step that settles the request, the others (nobody waits on them) are
   unregistered, an error no one sees on their entries, and every open stream of the
   file whose read-ahead went past them plans them again on its next read.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from flowfs.blockcache import BlockCache
from flowfs.blocks import block_count, clamp, iter_runs, pieces, run_span
from flowfs.errors import BadReply, FlowError, Transient
from flowfs.link import LinkEstimate, StreamLimits, stream_limits
from flowfs.readahead import Plan, Policy
from flowfs.streams import Pending, Request, Stream, Target

log = logging.getLogger(__name__)

_BlockKey = tuple[str, int]


Fetch = Callable[[Target, int, int], Awaitable[Any]]  # bytes, bytearray or block pieces
"""``fetch(target, start, end)``: exactly the bytes ``[start, end)`` or a domain error."""
Ahead = Callable[[Target, int, int, int], Awaitable[Any]]
"""``ahead(target, start, end, lead)``, for read-ahead of a window from block ``lead``: as
``fetch``, or a list of only the first whole blocks (maybe none; rule 8)."""


@dataclass(frozen=True)
class ReaderConfig:
    """Tuning of the read path (sizes in bytes)."""

    cache_bytes: int = 512 * 2**20
    # 256 KiB: a BAM/CRAM/VCF region query touches one BGZF block (<= 64 KiB compressed),
    # so a random read costs one small request; yet a 512 MiB cache is only 2048 entries
    # and sequential throughput does not depend on it (missing blocks are coalesced into
    # requests of up to max_request).  It is also >= a FUSE read (128 KiB, often).
    block_size: int = 256 * 2**10
    # Smallest demand request of a random read, rounded up to whole blocks.
    first_fetch: int = 256 * 2**10
    # Read-ahead window cap, request size and requests in flight per stream on a near
    # link; a distant one gets more of each, within the budget (flowfs.link).
    readahead_max: int = 64 * 2**20
    max_request: int = 8 * 2**20
    max_parallel: int = 8
    io_timeout: float = 60.0
    # How far (bytes) a read may start behind or beyond the previous end and still count
    # as sequential: the kernel issues several reads of one file at once, slightly out
    # of order, and readers re-read the last bytes.
    seq_slack: int = 2 * 2**20
    # A closing stream's read-ahead in flight, nearest first, up to this many bytes lands
    # and is kept (HTTP/1.1 stops a reply only by closing its connection, and the next
    # open, a region query after another, often wants those blocks); the rest, and all
    # beyond a quarter of the read-ahead budget over closed streams, is cancelled.
    finish_on_close: int = 8 * 2**20
    # Blocks held outside the cache within the budget (the disk cache's write queue: a
    # queued block the cache evicts stays until written): the cache keeps that much less.
    held_outside: int = 0
    # The read-ahead in flight may take 1/readahead_part of the budget: a quarter where
    # the files are near; half where they are far, and bytes in flight, not bytes kept,
    # decide how fast many files stream (flowfs.mount chooses from the link at start).
    readahead_part: int = 4

    def __post_init__(self) -> None:
        sizes = (self.block_size, self.first_fetch, self.readahead_max, self.max_request)
        if min(sizes) < 1 or self.max_parallel < 1 or self.io_timeout <= 0:
            raise ValueError(f"bad reader configuration: {self}")
        if self.cache_bytes < self.block_size:
            raise ValueError("cache_bytes must hold at least one block")
        if self.seq_slack < 0 or self.finish_on_close < 0 or self.held_outside < 0:
            raise ValueError("seq_slack, finish_on_close and held_outside must be >= 0")
        if self.held_outside > self.cache_bytes // 2:
            raise ValueError("held_outside may take at most half of cache_bytes")
        if self.readahead_part < 2:
            raise ValueError("readahead_part must be >= 2: the cache keeps the rest")

    @property
    def readahead_budget(self) -> int:
        """Bound on read-ahead bytes in flight across all streams (a quarter of the budget,
        or half: ``readahead_part``), and never more than the cache keeps.

        The cache itself holds the rest (``cache_capacity``), so cached and in-flight
        read-ahead bytes together stay within ``cache_bytes`` however many streams are open.
        Bytes in flight land in the cache and wait there to be read: a budget above what
        the cache keeps (half in flight, the disk's write queue held outside too) let a
        stream's landed blocks evict each other before its reader came to them (wan100,
        1 GiB cold: 2-5% of the file fetched twice; none with the two equal, as fast).
        """
        return min(self.cache_bytes // self.readahead_part,
                   (self.cache_bytes - self.held_outside) // 2)

    @property
    def cache_capacity(self) -> int:
        """Bytes of blocks the LRU cache keeps: the budget less read-ahead and held_outside."""
        return max(self.block_size, self.cache_bytes - self.readahead_budget - self.held_outside)

    @property
    def spare_buffers(self) -> int:
        """Evicted blocks to keep for new bodies (:mod:`flowfs.buffers`): what can be in flight."""
        return max(1, self.readahead_budget // self.block_size)

    @property
    def readahead_share(self) -> int:
        """Read-ahead window shared by all sequential streams: half the cache, and never
        more than the cache keeps (``cache_capacity``).

        Each stream's window is capped at its share, so blocks read ahead are not evicted
        by other streams' read-ahead, nor by its own, before they are read.
        """
        return min(self.cache_bytes // 2, self.cache_capacity)


class TimedOut(Transient):
    """A read or a fetch that ran out of ``io_timeout`` (rule 7)."""


class Reader:
    """Block cache + single-flight fetch + read-ahead engine (see the module docstring)."""

    def __init__(self, fetch: Fetch, nursery: trio.Nursery, config: ReaderConfig,
                 recycle: Callable[[Any], None] | None = None,
                 link: LinkEstimate | None = None, ahead: Ahead | None = None) -> None:
        self._fetch = fetch
        self._ahead = ahead  # read-ahead's fetch, which may bring a run in part (rule 8)
        # What the fetch path measured of the link (fed by the fetch function's owner).
        self._link = link or LinkEstimate()
        # The last limits computed, with the (link samples, latency, sharing) they are for.
        self._limits_memo: tuple[tuple[int, float, int], StreamLimits] | None = None
        self._nursery = nursery
        self._config = config
        self._bs = config.block_size
        self._max_run = max(1, config.max_request // self._bs)
        self._policy = Policy(
            block_size=self._bs,
            first_blocks=block_count(config.first_fetch, self._bs),
            max_blocks=max(1, config.readahead_max // self._bs),
            slack=config.seq_slack,
        )
        # Evicted blocks nobody holds go to ``recycle`` (flowfs.buffers) for the next body.
        self._cache = BlockCache(config.cache_capacity, recycle)
        self._pending: dict[_BlockKey, Pending] = {}
        self._ra_bytes = 0
        self._finishing = 0  # read-ahead bytes of closed streams left to land (close)
        self._ra_requests = 0
        self._open: dict[str, set[Stream]] = {}  # open streams by cache key (rule 8)
        self._sequential = 0  # streams with an open read-ahead window
        self._counts: Counter[str] = Counter()

    # -- public surface -------------------------------------------------------------

    def open(self, target: Target) -> Stream:
        """A new per-handle stream over ``target``."""
        stream = Stream(target, self._policy, self._limits(1))
        self._open.setdefault(target.cache_key, set()).add(stream)
        return stream

    async def read(self, stream: Stream, offset: int, size: int) -> bytes:
        """Exactly ``min(size, target.size - offset)`` bytes at ``offset`` (b"" at EOF).

        Raises a domain error from the fetch, or ``Transient`` after ``io_timeout``.
        """
        target = stream.target
        start, end = clamp(offset, size, target.size)
        if start >= end:
            return b""
        plan = self._plan(stream, start, end)
        key = target.cache_key
        if stream.timeouts:  # rule 7; empty on every read of a healthy link
            recent = stream.recent_timeout(self._missing(key, plan.need), trio.current_time())
            if recent is not None:
                self._counts["timeouts_repeated"] += 1
                raise _copy_error(recent) from recent
        self._start_demand(target, plan.demand)
        have, waits = self._lookup(key, plan.need)
        if not stream.closed:
            self._start_readahead(stream, plan.prefetch)
        if waits:
            try:
                await self._wait(waits, have)
            except TimedOut as exc:
                now = trio.current_time()
                for index, _ in waits:
                    stream.timeouts[index] = (now, exc)
                raise
        if stream.pattern.sequential:
            # Read through: first to go when room is needed (see flowfs.blockcache).
            for index in range(start // self._bs, end // self._bs):
                self._cache.demote((key, index))
        self._counts["bytes_read"] += end - start
        return _assemble(have, start, end, self._bs)

    def close(self, stream: Stream) -> None:
        """Forget a stream; cancel its read-ahead that nobody waits for beyond what may
        finish (``ReaderConfig.finish_on_close``), free its budget."""
        if stream.closed:
            return
        stream.closed = True
        key = stream.target.cache_key
        others = self._open.get(key)
        if others is not None:
            others.discard(stream)
            if not others:
                del self._open[key]
        if stream.pattern.sequential:
            self._sequential -= 1
        # Many short opens must not hand the open streams' budget to unread bytes.
        allowance = self._config.finish_on_close
        overall = self._config.readahead_budget // 4
        keeping = True
        for request in sorted(stream.readahead, key=lambda r: r.start):
            if request.has_waiters():
                continue  # another reader needs it: let it finish (it frees its budget)
            keeping = keeping and request.nbytes <= min(allowance, overall - self._finishing)
            if keeping:  # nearly here: let it land in the cache (it frees its budget)
                allowance -= request.nbytes
                self._finishing += request.nbytes
                request.finishing = True
                continue
            request.scope.cancel()
            self._detach(request)
            self._release(request)
            self._counts["readahead_cancelled"] += 1

    def stats(self) -> dict[str, int]:
        """Counters and gauges for logs, tests and benchmarks."""
        return {
            **dict.fromkeys(("hits", "bytes_read", "misses", "fetches", "bytes_fetched",
                             "fetch_errors", "timeouts", "timeouts_repeated",
                             "readahead_fetches", "readahead_deferred",
                             "readahead_cancelled", "readahead_parts"), 0),
            **self._counts,
            "cached_bytes": int(self._cache.currsize),
            "capacity_bytes": self._config.cache_capacity,
            "cached_blocks": len(self._cache),
            "demoted_blocks": self._cache.demoted,
            "inflight": len(self._pending),
            "readahead_bytes": self._ra_bytes,
            "readahead_finishing_bytes": self._finishing,
            "readahead_requests": self._ra_requests,
            "streams": sum(len(streams) for streams in self._open.values()),
        }

    def cached(self, key: str, index: int) -> Any | None:
        """Block ``index`` of the file cached under ``key``, if the memory cache holds it,
        without counting as a use (the disk cache's writes owed, :mod:`flowfs.diskfetch`)."""
        return self._cache.peek((key, index))

    @property
    def link(self) -> LinkEstimate:
        return self._link

    # -- planning and starting fetches (all synchronous) ------------------------------

    def _limits(self, sharing: int) -> StreamLimits:
        """A stream's limits; they change only with the link's estimate and the sharing."""
        key = (self._link.samples, self._link.latency, sharing)
        if self._limits_memo is None or self._limits_memo[0] != key:
            config = self._config
            self._limits_memo = key, stream_limits(
                self._link, block_size=self._bs, max_request=config.max_request,
                near_cap=config.readahead_max, share=config.readahead_share // max(1, sharing),
                near_parallel=config.max_parallel)
        return self._limits_memo[1]

    def _plan(self, stream: Stream, start: int, end: int) -> Plan:
        pattern = stream.pattern
        was_sequential = pattern.sequential
        limits = stream.limits = self._limits(self._sequential)
        nblocks = block_count(stream.target.size, self._bs)
        plan = pattern.on_read(start, end, nblocks, cap=limits.cap_blocks,
                               growth=limits.growth, step=limits.request_blocks,
                               initial=limits.initial_blocks, opening=limits.opening_blocks,
                               confident=limits.confident_blocks, margin=limits.margin,
                               confident_start=limits.confident_start_blocks)
        if not stream.closed:
            self._sequential += int(pattern.sequential) - int(was_sequential)
        return plan

    def _missing(self, key: str, blocks: range) -> Iterator[int]:
        """Blocks neither cached nor being fetched; lazy, so only use it synchronously."""
        for i in blocks:
            if (key, i) not in self._cache and (key, i) not in self._pending:
                yield i

    def _start_demand(self, target: Target, blocks: range) -> None:
        for run in iter_runs(self._missing(target.cache_key, blocks), self._max_run):
            self._launch(target, run, None)

    def _start_readahead(self, stream: Stream, blocks: range) -> None:
        """Start what fits of the planned read-ahead; hand the rest back to the pattern."""
        if not blocks:
            return
        target = stream.target
        budget = self._config.readahead_budget
        limits = stream.limits
        # Lazy runs: when the stream is at its parallel limit (common while streaming), the
        # rest of the window is not even looked at.
        for run in iter_runs(self._missing(target.cache_key, blocks), limits.request_blocks):
            fits = run
            while fits and self._ra_bytes + self._run_bytes(target, fits) > budget:
                fits = fits[: len(fits) // 2]  # shrink the request to what the budget allows
            if not fits or len(stream.readahead) >= limits.max_parallel:
                stream.pattern.retract(run.start)
                self._counts["readahead_deferred"] += 1
                return
            request = self._launch(target, fits, stream, blocks.start)
            stream.readahead.add(request)
            self._ra_bytes += request.nbytes
            self._ra_requests += 1
            self._counts["readahead_fetches"] += 1
            if fits != run:
                stream.pattern.retract(fits.stop)
                self._counts["readahead_deferred"] += 1
                return

    def _launch(self, target: Target, run: range, stream: Stream | None,
                lead: int = 0) -> Request:
        pendings = [Pending() for _ in run]
        request = Request(target, run, pendings, *run_span(run, target.size, self._bs), stream,
                          lead)
        # start_soon first: if the nursery is closed it raises and nothing is registered.
        self._nursery.start_soon(self._run, request, name=f"fetch {target.cache_key}")
        key = target.cache_key
        for index, pending in zip(run, pendings, strict=True):
            self._pending[(key, index)] = pending
        self._counts["fetches"] += 1
        return request

    def _run_bytes(self, target: Target, run: range) -> int:
        start, end = run_span(run, target.size, self._bs)
        return end - start

    def _lookup(self, key: str, need: range) -> tuple[dict[int, bytes], list[tuple[int, Pending]]]:
        have: dict[int, bytes] = {}
        waits: list[tuple[int, Pending]] = []
        for index in need:
            block = self._cache.get((key, index))
            if block is not None:
                have[index] = block
                continue
            self._counts["misses"] += 1
            waits.append((index, self._pending[(key, index)]))
        self._counts["hits"] += len(have)
        return have, waits

    # -- waiting ------------------------------------------------------------------------

    async def _wait(self, waits: list[tuple[int, Pending]], have: dict[int, bytes]) -> None:
        # Count as a waiter on all blocks up front, so close() of another stream does not
        # cancel a read-ahead request we are about to wait on.
        for _, pending in waits:
            pending.waiters += 1
        try:
            with trio.move_on_after(self._config.io_timeout) as deadline:
                for index, pending in waits:
                    await pending.event.wait()
                    if pending.error is not None:
                        raise _copy_error(pending.error) from pending.error
                    assert pending.data is not None
                    have[index] = pending.data
        finally:
            for _, pending in waits:
                pending.waiters -= 1
        if deadline.cancelled_caught:
            self._counts["timeouts"] += 1
            raise TimedOut(f"read timed out after {self._config.io_timeout:g} s")

    # -- the fetch task -----------------------------------------------------------------

    async def _run(self, request: Request) -> None:
        """Fetch one run of blocks; always settles its pending entries (rule 3)."""
        target, start, end = request.target, request.start, request.end
        data: Any = None
        error: FlowError | None = None
        try:
            with request.scope, trio.move_on_after(self._config.io_timeout) as deadline:
                if request.stream is None or self._ahead is None:
                    data = await self._fetch(target, start, end)
                else:
                    part = await self._ahead(target, start, end, request.lead)
                    data = await self._rest(request, part, deadline)
            if data is None:
                timed_out = deadline.cancelled_caught and not request.scope.cancel_called
                error = (TimedOut if timed_out else Transient)(
                    f"fetch of {target.cache_key} [{start}, {end}) "
                    f"{_why_empty(request.scope, deadline)}"
                )
            elif not isinstance(data, _Part) and _length(data) != end - start:
                error = BadReply(
                    f"{target.cache_key} [{start}, {end}): got {_length(data)} bytes, "
                    f"expected {end - start}"
                )
                data = None
        except FlowError as exc:
            error = exc
        except Exception as exc:
            # A bug below us: log it once here, give waiters an EIO-mapped error, and keep
            # the daemon's nursery alive.
            log.exception("fetch of %s [%d, %d) crashed", target.cache_key, start, end)
            error = Transient(f"fetch of {target.cache_key} failed: {exc!r}")
            error.__cause__ = exc
        finally:
            if data is None and error is None:
                error = Transient(f"fetch of {target.cache_key} [{start}, {end}) abandoned")
            self._settle(request, data, error)

    async def _rest(self, request: Request, data: Any, deadline: trio.CancelScope) -> Any:
        """What ``ahead`` brought, as a :class:`_Part` if it brought a run's first blocks
        only (rule 8). Then the blocks it brought are delivered at once, the blocks of the
        rest that reads wait on are fetched, and the others, nobody's, are dropped. A read
        may start waiting on one of those while others are fetched, so the waiters are
        looked at again after every fetch; from the last look to the settling there is no
        await. Each fetch's blocks are delivered as it ends, and each of those fetches has
        an ``io_timeout`` of its own (``deadline`` is moved), as a read's demand fetch
        has: a read that came to wait late must not inherit what the disk's part, or an
        earlier fetch, used of the request's."""
        count = len(request.blocks)
        if not (isinstance(data, list) and len(data) < count
                and all(len(block) == self._bs for block in data)):
            return data  # the whole run (or a wrong reply, which _run reports)
        blocks: list[Any] = [*data, *[None] * (count - len(data))]
        self._deliver(request, range(len(data)), blocks)  # need not wait for the network's
        while waited := [i for i in range(len(data), count)
                         if blocks[i] is None and request.pendings[i].waiters]:
            lo = hi = waited[0]
            while hi < count and blocks[hi] is None:  # the gap it is in, to its last waiter
                hi += 1
            hi = max(i for i in waited if i < hi) + 1
            start = request.start + lo * self._bs
            end = min(request.start + hi * self._bs, request.end)
            self._counts["fetches"] += 1
            deadline.deadline = trio.current_time() + self._config.io_timeout
            more = await self._fetch(request.target, start, end)
            if more is None:
                return None
            if _length(more) != end - start:
                raise BadReply(f"{request.target.cache_key} [{start}, {end}): got "
                               f"{_length(more)} bytes, expected {end - start}")
            blocks[lo:hi] = _split(more, hi - lo, self._bs)
            # Delivered (and cached) at once: its waiters do not wait for the fetches of
            # later waiters, and the disk cache's owed writes find these blocks cached.
            self._deliver(request, range(lo, hi), blocks)
        return blocks if None not in blocks else _Part(blocks)

    def _settle(self, request: Request, data: Any, error: FlowError | None) -> None:
        """Deliver a request's outcome to its pending entries, synchronously (rule 2)."""
        self._release(request)
        key = request.target.cache_key
        blocks: list[Any] | None = None
        if data is None:
            if not request.scope.cancel_called:  # a cancelled read-ahead is no error
                self._counts["fetch_errors"] += 1
            log.debug("fetch %s blocks %s failed: %s", key, request.blocks, error)
        elif isinstance(data, _Part):
            blocks = data.blocks
            self._counts["readahead_parts"] += 1
            self._replan(key, request.blocks.start + blocks.index(None))
            error = Transient(f"read-ahead of {key} stopped where the disk cache's blocks "
                              "end")  # on the dropped entries: nobody waits on them
        else:
            blocks = _split(data, len(request.blocks), self._bs)  # _run checked the length
        self._deliver(request, range(len(request.blocks)), blocks, error)

    def _deliver(self, request: Request, offsets: range, blocks: list[Any] | None,
                 error: FlowError | None = None) -> None:
        """Settle the entries of ``request`` at ``offsets`` not settled yet: each gets its
        block (cached, if still registered), or ``error`` where there is none."""
        key = request.target.cache_key
        for offset in offsets:
            index, pending = request.blocks[offset], request.pendings[offset]
            if pending.event.is_set():
                continue  # delivered before the rest of its request (_rest)
            registered = self._pending.get((key, index)) is pending
            block = None if blocks is None else blocks[offset]
            if block is not None:
                pending.data = block
                # Counted as delivered: once per block, also where a later fetch of the
                # same request fails after it (rule 8).
                self._counts["bytes_fetched"] += len(block)
                if registered:
                    self._cache[(key, index)] = block
            else:
                pending.error = error
            if registered:
                del self._pending[(key, index)]
            pending.event.set()

    def _replan(self, key: str, block: int) -> None:
        """Blocks from ``block`` on were dropped (rule 8): every open stream of ``key`` whose
        read-ahead went past them (the owner, or another that found them pending and
        planned beyond) plans them again on its next read."""
        for stream in self._open.get(key, ()):
            stream.pattern.replan(block)

    def _detach(self, request: Request) -> None:
        """Unregister a request's pending entries so that new readers fetch afresh."""
        key = request.target.cache_key
        for index, pending in zip(request.blocks, request.pendings, strict=True):
            if self._pending.get((key, index)) is pending:
                del self._pending[(key, index)]

    def _release(self, request: Request) -> None:
        if request.released:
            return
        request.released = True
        if request.stream is not None:
            request.stream.readahead.discard(request)
            self._ra_bytes -= request.nbytes
            self._ra_requests -= 1
        if request.finishing:
            self._finishing -= request.nbytes


@dataclass
class _Part:
    """A read-ahead's blocks where ``ahead`` brought only some (rule 8): None for each one
    dropped (at least one is)."""

    blocks: list[Any]


def _length(data: Any) -> int:
    return sum(len(p) for p in data) if isinstance(data, list) else len(data)


def _split(data: Any, count: int, block_size: int) -> list[Any]:
    """Cut a run's bytes into per-block buffers (one copy each; none for one block).

    Blocks are copied out of the reply rather than kept as views of it, so that an evicted
    block really frees its memory and the cache's byte accounting stays true. A reply that
    already comes as block-sized pieces (received in place) is used as it is.
    """
    if isinstance(data, list):
        if len(data) == count and all(len(p) == block_size for p in data[:-1]):
            return data
        data = b"".join(data)
    if count == 1 and type(data) in (bytes, bytearray):
        return [data]  # the whole reply is the block: no copy, and a bytearray can be recycled
    with memoryview(data) as view:
        return [bytes(view[i * block_size : (i + 1) * block_size]) for i in range(count)]


def _assemble(have: dict[int, bytes], start: int, end: int, block_size: int) -> bytes:
    """The bytes ``[start, end)`` out of their blocks, with a single copy."""
    parts = list(pieces(start, end, block_size))
    if len(parts) == 1:
        index, lo, hi = parts[0]
        block = have[index]
        return block[lo:hi] if type(block) is bytes else bytes(memoryview(block)[lo:hi])
    return b"".join(memoryview(have[index])[lo:hi] for index, lo, hi in parts)


def _why_empty(scope: trio.CancelScope, deadline: trio.CancelScope) -> str:
    if scope.cancelled_caught:
        return "cancelled"
    if deadline.cancelled_caught:
        return "timed out"
    return "returned nothing"


def _copy_error(error: FlowError) -> FlowError:
    """A private copy of a shared error, so each waiter's traceback is its own."""
    return copy.copy(error)
