"""The reader's fetch with the disk cache (:mod:`flowfs.diskcache`) in front of the network.

The reader asks its ``fetch(target, start, end)`` for runs of whole blocks it has neither
in memory nor in flight (its single-flight rules stay as they are: this sits *below*
them). :class:`DiskFetch` answers from the disk where it can, fetches the rest over the
network, and hands what came from the network to background writers, so a read never
waits for the disk to take bytes. All file I/O runs in worker threads.

Why the cache never grants access: the only way in is this fetch, and the reader only
calls it with the ``FileNode`` of a data id that the tree got from Flow *for this user*
(a listing or a lookup made with the user's credentials). Bytes of an id Flow has not
shown this user are never asked for, so never served, whatever the directory holds.

Degrading: a write that fails because the disk is full (ENOSPC, EDQUOT) pauses writing
and prunes the cache to what the free-space floor allows; a cache that cannot be written
at all (read-only, no permission) stops writing for the mount's life. Either logs one
warning; reads never fail because of the cache, since a block the disk does not give
back intact is simply fetched over the network.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import trio
from cachetools import LRUCache

from flowfs.blocks import blocks_covering, iter_runs, run_span
from flowfs.buffers import BufferPool
from flowfs.config import DEFAULT_API_URL, MountConfig, cache_dir, derive_files_url
from flowfs.diskcache import Store, filesystem_type, is_memory_fs, is_network_fs
from flowfs.errors import BadReply
from flowfs.extentfile import Entry, entry

log = logging.getLogger(__name__)
T = TypeVar("T")

MiB = 2**20
# Bytes waiting to be written, beyond which writes are owed: at most this, and an
# eighth of the memory cache (the queued blocks may outlive their place in it, so they
# are memory beyond its budget: 64 MiB over a 256 MiB cache broke the budget + 100 MiB).
QUEUE_BYTES = 64 * MiB
# Runs that found the queue full are owed, as positions only (no bytes are kept for
# them), up to this many queues' worth: written once the queue has room, from the memory
# cache if it still holds them. Far away read-ahead lands in bursts of tens of MiB that
# overflow the queue while the writers keep up on average (wan100: half of a first read
# was skipped, none once owed); a burst's blocks stay cached long enough to be written.
OWED_QUEUES = 16
WRITERS = 2
RECHECK_BYTES = 64 * MiB  # written between two looks at the free space
LOW_WATER = 0.9  # prune to this share of the bound, so pruning is not run for every write
PAUSE_WHEN_FULL = 30.0  # seconds without writes after ENOSPC
ENTRIES_REMEMBERED = 4096  # files tracked per kind (see DiskFetch.__init__)


class _Data(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def md5(self) -> str | None: ...


class Target(Protocol):
    """A ``FileNode``: its Flow data (id, md5), its size, the id its bytes are kept on disk
    under and the key the reader caches its blocks under."""

    @property
    def data(self) -> _Data: ...

    @property
    def disk_id(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def cache_key(self) -> str: ...


Network = Callable[[Any, int, int], Awaitable[Any]]
# The memory cache's block (cache key, index), if it still holds it (Reader.cached).
Recall = Callable[[str, int], Any]


class DiskFetch:
    """``fetch(target, start, end)`` through a :class:`~flowfs.diskcache.Store`.

    ``run()`` must run in the mount's nursery: it writes, prunes and verifies.
    """

    def __init__(self, store: Store, network: Network, *, block_size: int,
                 max_bytes: int, queue_bytes: int = QUEUE_BYTES, writable: bool = True,
                 buffers: BufferPool | None = None, namespace: str = "") -> None:
        self.store = store
        # Which server's ids these are (disk_namespace): prefixed to every entry's id.
        self._namespace = namespace
        # Blocks are read into the pool's recycled buffers where there is one: fresh
        # memory costs a page fault per 4 KiB (flowfs.buffers). Event loop only.
        self._buffers = buffers
        self._network = network
        self._bs = block_size
        self.max_bytes = max_bytes
        self.queue_bytes = queue_bytes
        self._send, self._receive = trio.open_memory_channel[tuple[Entry, int, list[Any]]](
            math.inf)
        self._verify_send, self._verify_receive = trio.open_memory_channel[Entry](math.inf)
        self._queued = 0
        # Runs owed a write (cache key, entry, first block, count): see OWED_QUEUES.
        self._owed: deque[tuple[str, Entry, int, int]] = deque()
        self._owed_bytes = 0
        self._room = trio.Event()  # set when the queue shrinks
        self._recall: Recall | None = None  # both given to run()
        self._worth_owing: Callable[[], bool] = lambda: True
        self._used = 0  # bytes in the directory, as far as we know
        self._limit = max_bytes  # what it may hold: the bound, less the free-space floor
        self._since_check = 0
        self._prune_wanted = trio.Event()
        self._writable = writable
        self._paused_until = -math.inf
        self._warned: set[str] = set()
        # Per file, bounded (a long mount reads many): blocks known on disk until the md5
        # check, files checked, files the disk gave blocks of. Forgetting one only means
        # a file checked again (its mark makes that cheap) or not read into spares.
        self._seen: LRUCache[bytes, set[int]] = LRUCache(ENTRIES_REMEMBERED)
        self._checked: LRUCache[bytes, bool] = LRUCache(ENTRIES_REMEMBERED)
        self._on_disk: LRUCache[bytes, bool] = LRUCache(ENTRIES_REMEMBERED)
        self.counts: Counter[str] = Counter()

    # -- the fetch ------------------------------------------------------------------------

    async def __call__(self, target: Target, start: int, end: int) -> Any:
        return await self._get(target, start, end, None)

    async def ahead(self, target: Target, start: int, end: int, lead: int) -> Any:
        """For read-ahead of a window that starts at block ``lead``: where the disk holds
        that block, only the run's first blocks the disk holds (maybe none).

        A window the disk holds the start of was read before; where its blocks end, the
        reads (or read-ahead) of that time ended, so nothing says the bytes after them will
        be read now: a region query run again after a remount would otherwise ask the
        network for the wider window a different link estimate drew. The reader plans the
        rest again when its stream reads on, or fetches it at once if a read waits on it
        (:mod:`flowfs.reader`, rule 8). A window starting with a block the disk lacks is new
        ground: fetched as ``__call__`` does.
        """
        return await self._get(target, start, end, lead)

    async def _get(self, target: Target, start: int, end: int, lead: int | None) -> Any:
        item = entry(self._namespace + target.disk_id, target.size, target.data.md5,
                     self._bs)
        indices = blocks_covering(start, end, self._bs)
        into = self._take(item, indices)
        blocks, damaged, errors, read_before = await trio.to_thread.run_sync(
            self._read, item, indices, into, lead)
        # A window read before: its blocks up to the first the disk lacks, none after.
        keep = blocks.index(None) if read_before and None in blocks else len(blocks)
        self._count_reads(item, indices[:keep], blocks[:keep], damaged, errors)
        if self._buffers is not None:  # the pool's buffers not handed on: nothing else
            for buffer, block in zip(into, blocks, strict=True):  # has seen them
                if block is None and buffer is not None:
                    self._buffers.offer(buffer)
        if keep < len(blocks):
            return blocks[:keep]
        first = indices.start
        missing = (i for i, block in zip(indices, blocks, strict=True) if block is None)
        got: list[tuple[int, list[Any]]] = []
        try:
            for run in iter_runs(missing, len(indices)):
                lo, hi = run_span(run, item.size, self._bs)
                fetched = _split(await self._network(target, lo, hi), lo, hi, self._bs)
                blocks[run.start - first : run.stop - first] = fetched
                got.append((run.start, fetched))
        finally:
            # Queued (or owed) only now, with no await before the return: an owed run
            # is in the reader's memory cache before a write can end and repay it.
            for index, fetched in got:
                self._queue(target.cache_key, item, index, fetched)
        return blocks

    def _take(self, item: Entry, indices: range) -> list[bytearray | None]:
        """Spare buffers for the blocks of a file the disk has given blocks of before.

        Never for the others: a first read's lookups all miss, and spares held meanwhile
        are missed by the bodies being received, which then take fresh memory.
        """
        if self._buffers is None or item.digest not in self._on_disk:
            return [None] * len(indices)
        return [self._buffers.take_spare(item.block_length(i)) for i in indices]

    def _read(self, item: Entry, indices: range, into: list[bytearray | None],
              lead: int | None) -> tuple[list[Any], int, list[OSError], bool]:
        """In a worker thread: the blocks the disk gives back intact (None for the rest),
        and whether it holds block ``lead`` (False without one)."""
        held = lead is not None and self.store.holds(item, lead)
        found = self.store.read(item, indices, into, until_gap=held)
        for problem in found.damaged:
            log.warning("disk cache: %s; fetching the block again", problem)
        return found.blocks, len(found.damaged), found.errors, held

    def _count_reads(self, item: Entry, indices: range, blocks: list[Any], damaged: int,
                     errors: list[OSError]) -> None:
        hits = [i for i, block in zip(indices, blocks, strict=True) if block is not None]
        self.counts["hits"] += len(hits)
        self.counts["misses"] += len(indices) - len(hits)
        self.counts["bytes_read"] += sum(len(block) for block in blocks if block is not None)
        self.counts["damaged"] += damaged
        if hits:
            self._on_disk[item.digest] = True
        for exc in errors:
            self.counts["errors"] += 1
            self._warn_once("read", "disk cache: cannot read %s (%s); reading over the "
                            "network", exc.filename, exc.strerror)
        self._seen_blocks(item, hits)

    # -- writing --------------------------------------------------------------------------

    def _queue(self, key: str, item: Entry, index: int, blocks: list[Any]) -> None:
        size = sum(len(block) for block in blocks)
        if not self._writable or trio.current_time() < self._paused_until:
            self.counts["write_skipped"] += len(blocks)
            return
        if not self._fits(size):
            # The disk is slower than the network, or the network brought a burst.
            if self._recall is None or not self._worth_owing():
                self.counts["write_skipped"] += len(blocks)
            else:
                self._owe(key, item, index, len(blocks), size)
            return
        self._enqueue(item, index, blocks, size)

    def _fits(self, size: int) -> bool:
        # An empty queue takes any run, so a run larger than a small cache's queue is
        # still written: at most one run over.
        return not self._queued or self._queued + size <= self.queue_bytes

    def _enqueue(self, item: Entry, index: int, blocks: list[Any], size: int) -> None:
        self._queued += size
        self._send.send_nowait((item, index, blocks))

    def _owe(self, key: str, item: Entry, index: int, count: int, size: int) -> None:
        self.counts["write_deferred"] += count
        self._owed.append((key, item, index, count))
        self._owed_bytes += size
        # The oldest are let go past OWED_QUEUES queues' worth of bytes, or of entries
        # (as many as blocks would fill them: small files must not make the line long).
        while (self._owed_bytes > OWED_QUEUES * self.queue_bytes
               or len(self._owed) > OWED_QUEUES * max(1, self.queue_bytes // self._bs)):
            _, old, first, length = self._owed.popleft()
            self._forget(old, first, length)
            self.counts["write_skipped"] += length
        # No wake-up: the queue is not empty (or the run would have fitted), and a write
        # that ends makes room. A run owed now is in the memory cache by then (_get
        # queues only just before it returns to the reader, which caches it at once).

    def _forget(self, item: Entry, index: int, count: int) -> None:
        """Owed blocks leave the line (queued, or not to be written)."""
        if count:
            lo, hi = run_span(range(index, index + count), item.size, self._bs)
            self._owed_bytes -= hi - lo

    def _repay(self, recall: Recall) -> None:
        """Queue the owed runs, oldest first, as far as the queue has room: the blocks the
        memory cache still holds (what it has evicted is not written, as a run that found
        the queue full was before). Synchronous, so no block leaves the cache between the
        look and the queueing."""
        while self._owed:
            key, item, index, count = self._owed[0]
            blocks = [_as_long(recall(key, i), item.block_length(i))
                      for i in range(index, index + count)]
            for run in iter_runs((index + offset for offset, block in enumerate(blocks)
                                  if block is not None), count):
                part = blocks[run.start - index : run.stop - index]
                size = sum(len(block) for block in part)
                if not self._fits(size):  # wait for room; the line starts at this run
                    self._owed[0] = key, item, run.start, index + count - run.start
                    self._forget(item, index, run.start - index)
                    self._count_forgotten(blocks[: run.start - index])
                    return
                self._enqueue(item, run.start, part, size)
            self._owed.popleft()
            self._forget(item, index, count)
            self._count_forgotten(blocks)

    def _count_forgotten(self, blocks: list[Any]) -> None:
        self.counts["write_skipped"] += sum(1 for block in blocks if block is None)

    async def _repayer(self, recall: Recall) -> None:
        while True:  # woken when a write ends
            await self._room.wait()
            self._room = trio.Event()
            self._repay(recall)  # a cache that stopped writing skips them as they come

    async def _writer(self, pool: ThreadPoolExecutor) -> None:
        async for item, index, blocks in self._receive:
            size = sum(len(block) for block in blocks)
            try:
                await self._write_run(pool, item, index, blocks, size)
            finally:
                del blocks  # no longer counted as queued: not held either (recyclable)
                self._queued -= size
                self._room.set()

    async def _write_run(self, pool: ThreadPoolExecutor, item: Entry, index: int,
                         blocks: list[Any], size: int) -> None:
        if not self._writable or trio.current_time() < self._paused_until:
            self.counts["write_skipped"] += len(blocks)
            return
        if self._used + size > self._limit:
            self._prune_wanted.set()  # the pruner makes room, or lowers the limit
            if self._limit < size:  # no room at all (the free-space floor is reached)
                self.counts["write_skipped"] += len(blocks)
                return
        written, error = await _in_pool(pool, self._write, item, index, blocks)
        self.counts["blocks_written"] += len(written)
        nbytes = sum(len(blocks[i - index]) for i in written)
        self.counts["bytes_written"] += nbytes
        self._used += nbytes
        self._since_check += nbytes
        if self._since_check >= RECHECK_BYTES or self._used > self._limit:
            self._prune_wanted.set()
        self._seen_blocks(item, written)
        if error is not None:
            self.counts["write_skipped"] += len(blocks) - len(written)
            self._write_failed(error)

    def _write(self, item: Entry, index: int, blocks: list[Any]) -> tuple[list[int],
                                                                            OSError | None]:
        """In a worker thread: store a run's blocks; stops at the first error."""
        done, error = self.store.write_run(item, index, blocks)
        return list(range(index, index + done)), error

    def _write_failed(self, exc: OSError) -> None:
        self.counts["errors"] += 1
        where = exc.filename or self.store.root
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._paused_until = trio.current_time() + PAUSE_WHEN_FULL
            self._limit = min(self._limit, self._used)
            self._prune_wanted.set()
            self._warn_once("full", "disk cache: %s is full (%s); reads go to the network "
                            "until pruning makes room", self.store.root, exc.strerror)
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            self._writable = False
            self._warn_once("readonly", "disk cache: cannot write to %s (%s); reads go to "
                            "the network, and cached blocks are still served", where,
                            exc.strerror)
        else:
            self._warn_once("write", "disk cache: writing %s failed (%s); carrying on",
                            where, exc.strerror)

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    # -- whole files: checked against Flow's md5 once complete ----------------------------------

    def _seen_blocks(self, item: Entry, indices: list[int]) -> None:
        if item.md5 is None or item.digest in self._checked or not indices:
            return
        seen = self._seen.get(item.digest)
        if seen is None:
            seen = self._seen[item.digest] = set()
        seen.update(indices)
        if len(seen) == item.blocks:
            del self._seen[item.digest]
            self._checked[item.digest] = True
            self._verify_send.send_nowait(item)

    async def _verifier(self) -> None:
        # md5 runs at ~400 MB/s: a 512 MiB file costs a core for over a second. Its one
        # thread runs at the lowest priority, so the check never slows a read that
        # wants the CPU; it only uses what is idle.
        # Unmounting does not wait for it: the check stops at its next block.
        pool = ThreadPoolExecutor(1, "flowfs-md5", initializer=_background_priority)
        stop = threading.Event()
        try:
            async for item in self._verify_receive:
                await self._verify(pool, stop, item)
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    async def _verify(self, pool: ThreadPoolExecutor, stop: threading.Event,
                      item: Entry) -> None:
        future = pool.submit(self.store.verify, item, stop)
        try:
            ok = await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        except OSError as exc:
            self.counts["errors"] += 1
            self._warn_once("verify", "disk cache: checking %s failed: %s", item.name,
                            exc.strerror)
            return
        if ok is False:
            self.counts["md5_mismatches"] += 1
            log.warning("disk cache: entry %s did not match Flow's md5 %s; removed",
                        item.name, item.md5)
        elif ok:
            self.counts["md5_verified"] += 1
        else:
            self._checked.pop(item.digest, None)  # blocks went missing: check next time

    # -- the bound ---------------------------------------------------------------------------

    async def _pruner(self) -> None:
        # Bytes only: counting blocks would read every extent's header table at each mount.
        self._used = await trio.to_thread.run_sync(self.store.used_bytes)
        self._prune_wanted.set()
        while self._writable:  # a cache we cannot write to is not ours to prune
            await self._prune_wanted.wait()
            self._prune_wanted = trio.Event()
            self._since_check = 0
            try:
                await self._prune_once()
            except OSError as exc:
                self.counts["errors"] += 1
                self._warn_once("prune", "disk cache: pruning %s failed: %s", self.store.root,
                                exc.strerror)
            await trio.sleep(1.0)  # at most one pass a second, however fast writes come

    async def _prune_once(self) -> None:
        limit = await trio.to_thread.run_sync(self.store.budget, self._used, self.max_bytes)
        if self._used > limit:
            left = await trio.to_thread.run_sync(self.store.prune, int(limit * LOW_WATER))
            if left is not None:
                self.counts["pruned_bytes"] += max(0, self._used - left.bytes)
                self._used = left.bytes
        self._limit = limit

    async def run(self, recall: Recall | None = None,
                  worth_owing: Callable[[], bool] = lambda: True) -> None:
        """Write, prune and verify until cancelled (with the mount's nursery).

        Blocks are written by threads of the lowest CPU priority: writing a block costs CPU
        (a copy into the page cache, or past it into a bounce buffer: see
        :mod:`flowfs.directio`), and on a machine whose cores the reads keep busy (a fast
        link) that would slow the read the cache is meant to speed up. So the writes use
        only idle CPU: where there is none, the queue fills, and runs beyond it are owed
        (``write_deferred``): once the queue has room they are written from the memory cache
        (``recall``: ``Reader.cached``), as far as it still holds them; what it no longer
        holds is not written (``write_skipped``; a later read fills it in). Without
        ``recall``, or while ``worth_owing()`` is false, nothing is owed: runs beyond the
        queue are not written. The mount owes only while the files are far: near, a block
        not written costs a fast fetch later, while owed writes would take the CPU a fast
        read keeps busy (loopback: 6% of a first read). Over a slow link the CPU is mostly
        idle and every block is written as it arrives. Unmounting does not wait for queued
        or owed writes.
        """
        self._recall, self._worth_owing = recall, worth_owing
        pool = ThreadPoolExecutor(WRITERS, "flowfs-disk-write",
                                  initializer=_background_priority)
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(WRITERS):
                    nursery.start_soon(self._writer, pool)
                if recall is not None:
                    nursery.start_soon(self._repayer, recall)
                nursery.start_soon(self._verifier)
                nursery.start_soon(self._pruner)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "dir": str(self.store.root),
            "writable": self._writable,
            "direct_writes": self.store.direct,
            "max_bytes": self.max_bytes,
            "limit_bytes": self._limit,
            "used_bytes": self._used,
            "queued_bytes": self._queued,
            "owed_bytes": self._owed_bytes,
            **{key: self.counts[key] for key in (
                "hits", "misses", "bytes_read", "bytes_written", "blocks_written",
                "write_deferred", "write_skipped", "damaged", "errors", "md5_verified",
                "md5_mismatches", "pruned_bytes")},
        }


async def _in_pool(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in one of ``pool``'s threads; its result, once done.

    Cancelled, the call goes on in its thread (a write is not cut in half) and its
    result is dropped.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def finished(_: Future[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the mount ended meanwhile
            token.run_sync_soon(done.set)

    future = pool.submit(fn, *args)
    future.add_done_callback(finished)
    await done.wait()
    return future.result()


def _as_long(block: Any, length: int) -> Any:
    """``block`` if it has ``length`` bytes, else None: a block the memory cache holds
    under the key, but not of this entry's length, is not this entry's."""
    return block if block is not None and len(block) == length else None


def _background_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: nice is per thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _split(data: Any, start: int, end: int, block_size: int) -> list[Any]:
    """A network reply as one buffer per block (pieces received in place stay as they are)."""
    length = sum(len(p) for p in data) if isinstance(data, list) else len(data)
    if length != end - start:
        raise BadReply(f"range [{start}, {end}): got {length} bytes")
    count = -(-(end - start) // block_size)
    if isinstance(data, list):
        if len(data) == count and all(len(p) == block_size for p in data[:-1]):
            return data
        data = b"".join(data)
    if count == 1:
        return [data]
    with memoryview(data) as view:
        return [bytes(view[i * block_size : (i + 1) * block_size]) for i in range(count)]


def disk_namespace(files_url: str) -> str:
    """What a mount of ``files_url`` prefixes to the ids of its disk cache's entries.

    Ids are numbers each Flow server hands out on its own, and one cache directory (the
    default, or a group's) may serve mounts of several servers: a data file of one and of
    another with the same number and size, and no md5, must never share an entry. The
    default server's ids go unprefixed, so caches made before this keep their entries.
    """
    return "" if files_url == derive_files_url(DEFAULT_API_URL) else f"{files_url} "


def open_cache(config: MountConfig, network: Network, block_size: int,
               buffers: BufferPool | None = None) -> DiskFetch | None:
    """The mount's disk cache as configured, or None (off, or unusable: one warning says why)."""
    if not config.disk_cache:
        return None
    root = config.cache_dir or cache_dir()
    fstype = filesystem_type(root)
    if is_network_fs(fstype):
        if config.cache_dir is None:
            log.warning("disk cache off: %s is on a network filesystem (%s); give "
                        "--cache-dir a local disk to use one", root, fstype)
            return None
        log.warning("disk cache: %s is on a network filesystem (%s): cached reads cross "
                    "the network too", root, fstype)
    # Past the page cache where it is taken; not on a network filesystem, where every
    # direct write would wait for the server and its client's caching is the point, nor
    # in memory (tmpfs takes O_DIRECT and keeps the bytes in the page cache all the same).
    store = Store(root, shared=config.disk_cache_mode == "group",
                  direct=not (is_network_fs(fstype) or is_memory_fs(fstype)))
    try:
        writable = store.open()
    except OSError as exc:
        log.warning("disk cache off: cannot use %s: %s", root, exc.strerror)
        return None
    if not writable:
        log.warning("disk cache: cannot write to %s; cached blocks are still served, the "
                    "rest comes over the network", root)
    return DiskFetch(store, network, block_size=block_size, max_bytes=config.disk_cache_size,
                     queue_bytes=min(QUEUE_BYTES, config.cache_size // 8), writable=writable,
                     buffers=buffers, namespace=disk_namespace(config.files_url))

