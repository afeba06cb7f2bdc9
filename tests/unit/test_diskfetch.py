"""The fetch with the disk cache in front: served from disk across "mounts", damage and a
full or read-only disk turn into network reads, never into a wrong byte or an error."""

from __future__ import annotations

import errno
import hashlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from flowfs import diskfetch
from flowfs.buffers import BufferPool
from flowfs.config import MountConfig
from flowfs.diskcache import Store
from flowfs.diskfetch import DiskFetch
from flowfs.extentfile import HEADER_SIZE, entry
from flowfs.link import LinkEstimate
from flowfs.reader import Reader, ReaderConfig

pytestmark = pytest.mark.timeout(60)

BS = 1000


@dataclass(frozen=True)
class Data:
    id: str
    md5: str | None


@dataclass(frozen=True)
class File:
    data: Data
    size: int
    kind: str = "data"

    @property
    def cache_key(self) -> str:  # what the reader keys its blocks by, as a FileNode's
        return f"{self.kind}:{self.data.id}:{self.size}"

    @property
    def disk_id(self) -> str:  # as a FileNode's
        return self.data.id if self.kind == "data" else f"{self.kind}:{self.data.id}"


def make_file(data_id: str, size: int, md5: str | None = "") -> tuple[File, bytes]:
    body = random.Random(data_id).randbytes(size)
    digest = hashlib.md5(body).hexdigest() if md5 == "" else md5
    return File(Data(data_id, digest), size), body


@dataclass
class Network:
    bodies: dict[str, bytes] = field(default_factory=dict)
    calls: list[tuple[str, int, int]] = field(default_factory=list)

    async def __call__(self, target: File, start: int, end: int) -> bytes:
        self.calls.append((target.data.id, start, end))
        await trio.sleep(0)
        return self.bodies[target.data.id][start:end]

    def bytes(self) -> int:
        return sum(end - start for _, start, end in self.calls)


async def until(predicate: Callable[[], Any], what: str) -> None:
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.005)


@asynccontextmanager
async def disk_fetch(root: Path, network: Network, max_bytes: int = 10**9,
                     store: Store | None = None,
                     buffers: BufferPool | None = None) -> AsyncIterator[DiskFetch]:
    """One "mount" of the cache: its background tasks run until the block ends."""
    store = store or Store(root)
    store.open()
    disk = DiskFetch(store, network, block_size=BS, max_bytes=max_bytes, buffers=buffers)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(disk.run)
        yield disk
        nursery.cancel_scope.cancel()


async def read_all(disk: DiskFetch, target: File, step: int = 4 * BS) -> bytes:
    parts = []
    for start in range(0, target.size, step):
        blocks = await disk(target, start, min(start + step, target.size))
        parts.append(b"".join(bytes(b) for b in blocks))
    return b"".join(parts)


async def test_a_second_mount_reads_everything_from_disk(tmp_path: Path) -> None:
    target, body = make_file("1", 10 * BS + 7)
    network = Network({"1": body})
    async with disk_fetch(tmp_path, network) as first:
        assert await read_all(first, target) == body
        await until(lambda: first.counts["blocks_written"] == 11, "the writes")
        await until(lambda: first.counts["md5_verified"] == 1, "the md5 check")
    fetched = len(network.calls)
    async with disk_fetch(tmp_path, network) as second:
        assert await read_all(second, target) == body
        assert len(network.calls) == fetched  # not one more request
        assert second.counts["hits"] == 11 and second.counts["bytes_read"] == len(body)


async def test_blocks_from_disk_land_in_recycled_buffers(
        tmp_path: Path) -> None:
    target, body = make_file("1", 8 * BS)
    other, other_body = make_file("2", 8 * BS)
    network = Network({"1": body, "2": other_body})
    async with disk_fetch(tmp_path, network) as first:
        await read_all(first, target)
        await until(lambda: first.counts["blocks_written"] == 8, "the writes")
    pool = BufferPool(BS, limit=16)
    for _ in range(16):
        pool.offer(bytearray(b"\xee" * BS))  # old bytes that must never show
    async with disk_fetch(tmp_path, network, buffers=pool) as second:
        assert await read_all(second, target) == body
        # the first lookup of a file finds out that it is on disk; the next take spares
        assert pool.reused == 4 and pool.spare == 12
        assert await read_all(second, other) == other_body  # not on disk: spares untouched
        assert pool.reused == 4 and pool.spare == 12


async def test_blocks_come_back_one_per_block_of_the_run(tmp_path: Path) -> None:
    target, body = make_file("1", 5 * BS + 1)
    async with disk_fetch(tmp_path, Network({"1": body})) as disk:
        blocks = await disk(target, 0, target.size)
        assert [len(b) for b in blocks] == [BS] * 5 + [1]


async def test_only_the_missing_blocks_of_a_run_go_to_the_network(tmp_path: Path) -> None:
    target, body = make_file("1", 8 * BS)
    network = Network({"1": body})
    async with disk_fetch(tmp_path, network) as disk:
        await disk(target, 2 * BS, 4 * BS)
        await until(lambda: disk.counts["blocks_written"] == 2, "the writes")
        network.calls.clear()
        blocks = await disk(target, 0, 8 * BS)
        assert b"".join(bytes(b) for b in blocks) == body
        assert network.calls == [("1", 0, 2 * BS), ("1", 4 * BS, 8 * BS)]


async def test_read_ahead_of_a_window_read_before_stops_where_the_disk_blocks_end(
        tmp_path: Path) -> None:
    """Where the disk holds a window's first block, a run of it brings only the blocks the
    disk holds up to its first gap (maybe none), and asks the network for nothing; a
    window starting on new ground is fetched whole."""
    target, body = make_file("1", 12 * BS)
    network = Network({"1": body})
    async with disk_fetch(tmp_path, network) as disk:
        await disk(target, 0, 4 * BS)
        await until(lambda: disk.counts["blocks_written"] == 4, "the writes")
        network.calls.clear()
        part = await disk.ahead(target, 2 * BS, 8 * BS, 2)  # the run leads its window
        assert b"".join(part) == body[2 * BS : 4 * BS]
        assert await disk.ahead(target, 6 * BS, 8 * BS, 3) == []  # a later run of it
        assert network.calls == []
        # Blocks not brought are no misses: they were not fetched (and are counted when
        # they are), so the misses still count what crossed the network.
        assert disk.counts["misses"] == 4 and disk.counts["hits"] == 2
        whole = await disk.ahead(target, 0, 4 * BS, 0)  # all on disk: all of it
        assert b"".join(whole) == body[: 4 * BS] and network.calls == []
        fresh = await disk.ahead(target, 5 * BS, 8 * BS, 5)  # new ground
        assert b"".join(bytes(b) for b in fresh) == body[5 * BS : 8 * BS]
        assert network.calls == [("1", 5 * BS, 8 * BS)]


async def test_read_ahead_neither_reads_past_the_gap_nor_keeps_fresh_memory_as_spares(
        tmp_path: Path) -> None:
    """The blocks after a window's first gap are not read from the disk (a replan reads
    them), and no memory is put in the pool that no eviction gave back."""
    target, body = make_file("1", 12 * BS)
    network = Network({"1": body})
    async with disk_fetch(tmp_path, network) as first:
        await first(target, 0, 2 * BS)
        await first(target, 4 * BS, 12 * BS)  # on disk: 0, 1 and 4 to 11
        await until(lambda: first.counts["blocks_written"] == 10, "the writes")
    pool = BufferPool(BS, limit=64)
    async with disk_fetch(tmp_path, network, buffers=pool) as again:
        part = await again.ahead(target, 0, 12 * BS, 0)
        assert b"".join(part) == body[: 2 * BS]
        assert again.counts["hits"] == 2 and again.counts["misses"] == 0
        assert pool.spare == 0  # blocks 4 to 11 were not read into fresh memory either


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
async def test_a_damaged_block_is_fetched_again(tmp_path: Path, how: str) -> None:
    target, body = make_file("1", 4 * BS)
    network = Network({"1": body})
    async with disk_fetch(tmp_path, network) as disk:
        await read_all(disk, target)
        # The md5 check of the complete file reads every block too: damage found by it
        # is removed before the read below could find it (and count it).
        await until(lambda: disk.counts["md5_verified"] == 1, "the writes and the check")
        item = entry("1", target.size, target.data.md5, BS)
        place = disk.store.place(item, 2)
        raw = bytearray(place.path.read_bytes())
        if how == "flip":
            raw[place.data_at + 500] ^= 0x40
        elif how == "truncate":
            raw = raw[: place.data_at + 10]
        else:  # the block's header cleared: as a writer killed before writing it leaves it
            raw[place.header_at : place.header_at + HEADER_SIZE] = bytes(HEADER_SIZE)
        place.path.write_bytes(bytes(raw))
        network.calls.clear()
        assert await read_all(disk, target) == body
        # a file cut in block 2 loses block 3 too
        lost = 2 if how == "truncate" else 1
        assert network.calls == [("1", 2 * BS, (2 + lost) * BS)]
        assert disk.counts["damaged"] == (0 if how == "delete" else lost)


async def test_a_full_disk_warns_once_and_reads_go_on(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    class Full(Store):
        def write_run(self, item: Any, first: int, blocks: Any) -> tuple[int, OSError]:
            return 0, OSError(errno.ENOSPC, "No space left on device", str(self.root))

    files = [make_file(str(i), 3 * BS) for i in range(4)]
    network = Network({f.data.id: body for f, body in files})
    with caplog.at_level(logging.WARNING, logger="flowfs.diskfetch"):
        async with disk_fetch(tmp_path, network, store=Full(tmp_path)) as disk:
            for target, body in files:
                assert await read_all(disk, target) == body
            await until(lambda: disk.counts["errors"] >= 1, "the failed write")
    warnings = [r for r in caplog.records if "full" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_read_only_cache_serves_what_it_has_and_stops_writing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target, body = make_file("1", 4 * BS)
    other, other_body = make_file("2", 4 * BS)
    network = Network({"1": body, "2": other_body})
    async with disk_fetch(tmp_path, network) as disk:
        await read_all(disk, target)
        await until(lambda: disk.counts["blocks_written"] == 4, "the writes")

    class ReadOnly(Store):
        def write_run(self, item: Any, first: int, blocks: Any) -> tuple[int, OSError]:
            return 0, OSError(errno.EROFS, "Read-only file system", str(self.root))

    network.calls.clear()
    with caplog.at_level(logging.WARNING, logger="flowfs.diskfetch"):
        async with disk_fetch(tmp_path, network, store=ReadOnly(tmp_path)) as disk:
            assert await read_all(disk, target) == body
            assert network.calls == []
            assert await read_all(disk, other) == other_body
            await until(lambda: not disk.stats()["writable"], "the failed write")
            assert await read_all(disk, other) == other_body
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1


async def test_a_file_whose_bytes_do_not_match_flows_md5_is_not_kept(tmp_path: Path) -> None:
    target, body = make_file("1", 3 * BS, md5="0" * 32)
    network = Network({"1": body})
    async with disk_fetch(tmp_path, network) as disk:
        assert await read_all(disk, target) == body
        await until(lambda: disk.counts["md5_mismatches"] == 1, "the md5 check")
        assert disk.store.usage().blocks == 0


async def test_the_size_bound_is_kept(tmp_path: Path) -> None:
    files = [make_file(str(i), 10 * BS) for i in range(10)]
    network = Network({f.data.id: body for f, body in files})
    bound = 30 * (BS + HEADER_SIZE)
    async with disk_fetch(tmp_path, network, max_bytes=bound) as disk:
        for target, body in files:
            assert await read_all(disk, target) == body
        await until(lambda: disk.counts["blocks_written"] + disk.counts["write_skipped"]
                    == 100, "the writes")
        await until(lambda: disk.counts["pruned_bytes"] > 0
                    and disk.store.usage().bytes <= bound, "pruning to the bound")


def cache_config(tmp_path: Path, **fields: Any) -> MountConfig:
    return MountConfig(mountpoint=tmp_path / "flow", api_url="http://127.0.0.1:1/api",
                       **fields)


@pytest.mark.parametrize("given, on", [(False, False), (True, True)])
async def test_on_a_network_filesystem_only_a_cache_dir_given_on_purpose_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        given: bool, on: bool) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.setattr(diskfetch, "filesystem_type", lambda path: "nfs4")
    config = cache_config(tmp_path, cache_dir=tmp_path / "given" if given else None)
    with caplog.at_level(logging.WARNING, logger="flowfs.diskfetch"):
        disk = diskfetch.open_cache(config, Network(), BS)
    assert (disk is not None) is on
    assert "network filesystem (nfs4)" in caplog.text


async def test_no_disk_cache_means_none_and_nothing_on_disk(tmp_path: Path) -> None:
    config = cache_config(tmp_path, disk_cache=False, cache_dir=tmp_path / "c")
    assert diskfetch.open_cache(config, Network(), BS) is None
    assert not (tmp_path / "c").exists()


async def test_a_new_cache_directory_is_private(tmp_path: Path) -> None:
    config = cache_config(tmp_path, cache_dir=tmp_path / "c")
    disk = diskfetch.open_cache(config, Network(), BS)
    assert disk is not None
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o700


async def test_what_it_remembers_per_file_is_bounded(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A long mount reads many files partly: its per-file memory must not grow with them."""
    monkeypatch.setattr(diskfetch, "ENTRIES_REMEMBERED", 3)
    files = [make_file(str(i), 4 * BS) for i in range(20)]
    network = Network({f.data.id: body for f, body in files})
    async with disk_fetch(tmp_path, network) as disk:
        for target, body in files:
            assert bytes((await disk(target, 0, BS))[0]) == body[:BS]
        await until(lambda: disk.counts["blocks_written"] == 20, "the writes")
        assert len(disk._seen) <= 3
        for target, _ in files:  # now each is found on disk
            await disk(target, 0, BS)
        assert len(disk._on_disk) <= 3 and len(disk._seen) <= 3


async def test_a_run_larger_than_the_write_queue_is_written_when_the_queue_is_empty(
        tmp_path: Path) -> None:
    """A small memory cache makes a small queue: read-ahead runs larger than it must
    still reach the disk, or a sequential read would leave nothing there."""
    target, body = make_file("1", 8 * BS)
    store = Store(tmp_path)
    store.open()
    network = Network({"1": body})
    disk = DiskFetch(store, network, block_size=BS, max_bytes=10**9, queue_bytes=2 * BS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(disk.run)
        await disk(target, 0, 8 * BS)  # one run of 8 blocks, four times the queue
        await until(lambda: disk.counts["blocks_written"] == 8, "the writes")
        assert disk.counts["write_skipped"] == 0
        nursery.cancel_scope.cancel()


async def test_blocks_are_written_by_threads_of_the_lowest_cpu_priority(tmp_path: Path) -> None:
    """Writing uses idle CPU only: on a machine the reads keep busy it must not slow them."""
    import os
    import threading

    seen: list[int] = []

    class Watched(Store):
        def write_run(self, item: Any, first: int, blocks: Any) -> tuple[int, OSError | None]:
            seen.extend([os.getpriority(os.PRIO_PROCESS, threading.get_native_id())]
                        * len(blocks))
            return super().write_run(item, first, blocks)

    target, body = make_file("1", 3 * BS)
    async with disk_fetch(tmp_path, Network({"1": body}), store=Watched(tmp_path)) as disk:
        await read_all(disk, target)
        await until(lambda: disk.counts["blocks_written"] == 3, "the writes")
    assert seen == [19, 19, 19]


class Gated(Store):
    """A store whose writes wait until ``gate`` is set, noting the bytes queued meanwhile."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.disk: DiskFetch | None = None
        self.queued_seen: list[int] = []

    def write_run(self, item: Any, first: int, blocks: Any) -> tuple[int, OSError | None]:
        assert self.gate.wait(10)
        assert self.disk is not None
        self.queued_seen.append(self.disk.stats()["queued_bytes"])
        return super().write_run(item, first, blocks)


@asynccontextmanager
async def gated_fetch(root: Path, network: Network, cached: dict[tuple[str, int], bytes],
                      worth_owing: bool = True) -> AsyncIterator[tuple[DiskFetch, Gated]]:
    """A cache with a two-block queue whose writes wait for the gate; ``cached`` plays the
    reader's memory cache (as ``Reader.cached``)."""
    store = Gated(root)
    store.open()
    disk = store.disk = DiskFetch(store, network, block_size=BS, max_bytes=10**9,
                                  queue_bytes=2 * BS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(disk.run, lambda key, i: cached.get((key, i)),
                           lambda: worth_owing)
        yield disk, store
        nursery.cancel_scope.cancel()


def settled(disk: DiskFetch) -> bool:
    s = disk.stats()
    return not s["queued_bytes"] and not s["owed_bytes"]


async def test_runs_that_find_the_queue_full_are_written_from_the_memory_cache(
        tmp_path: Path) -> None:
    """Far away, read-ahead lands in bursts larger than the write queue while the disk
    keeps up on average: what the queue could not take is written once it has room, from
    the memory cache, so a remount finds the whole file on disk, not half of it."""
    target, body = make_file("1", 12 * BS)
    network = Network({"1": body})
    cached = {(target.cache_key, i): body[i * BS : (i + 1) * BS] for i in range(12)}
    del cached[(target.cache_key, 9)]  # evicted from memory before its turn
    async with gated_fetch(tmp_path, network, cached) as (disk, store):
        for start in range(0, 12 * BS, 4 * BS):  # a burst: three runs, the disk stuck
            await disk(target, start, start + 4 * BS)
        assert disk.stats()["write_deferred"] == 8 and disk.stats()["owed_bytes"] == 8 * BS
        store.gate.set()
        await until(lambda: settled(disk), "the owed writes")
        assert disk.counts["blocks_written"] == 11 and disk.counts["write_skipped"] == 1
        # Memory: what is queued never exceeds the queue (two blocks), but for one run
        # alone in it (four): the owed runs were not all queued at once.
        assert max(store.queued_seen) <= 4 * BS
    calls = len(network.calls)
    async with disk_fetch(tmp_path, network) as again:
        assert await read_all(again, target) == body
        assert network.calls[calls:] == [("1", 9 * BS, 10 * BS)]  # the block evicted


async def test_near_files_owe_nothing_the_queue_cannot_take(tmp_path: Path) -> None:
    """Where the files are near a fetch again is cheap, and owed writes would compete with
    a fast read for the CPU: runs beyond the queue are not written, as before."""
    target, body = make_file("1", 12 * BS)
    cached = {(target.cache_key, i): body[i * BS : (i + 1) * BS] for i in range(12)}
    async with gated_fetch(tmp_path, Network({"1": body}), cached,
                           worth_owing=False) as (disk, store):
        for start in range(0, 12 * BS, 4 * BS):
            await disk(target, start, start + 4 * BS)
        assert disk.stats()["owed_bytes"] == 0 and disk.counts["write_skipped"] == 8
        store.gate.set()
        await until(lambda: settled(disk), "the writes")
        assert disk.counts["blocks_written"] == 4


async def test_the_line_of_owed_writes_is_bounded(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that never catches up must not make the line grow without end: the oldest
    owed runs are let go (not written) once it holds more than OWED_QUEUES queues."""
    monkeypatch.setattr(diskfetch, "OWED_QUEUES", 3)
    files = [make_file(str(i), 2 * BS) for i in range(8)]
    cached = {(t.cache_key, i): body[i * BS : (i + 1) * BS]
              for t, body in files for i in range(2)}
    network = Network({t.data.id: body for t, body in files})
    async with gated_fetch(tmp_path, network, cached) as (disk, store):
        for target, _ in files:
            await disk(target, 0, 2 * BS)
        assert disk.stats()["owed_bytes"] == 6 * BS  # three queues of two blocks
        assert disk.counts["write_skipped"] == 2 * BS // BS * 4  # files 1-4 let go
        store.gate.set()
        await until(lambda: settled(disk), "the writes")
        assert disk.counts["blocks_written"] == 8  # file 0 (queued), files 5-7 (owed)
    async with disk_fetch(tmp_path, network) as again:
        calls = len(network.calls)
        for target, body in files:
            assert await read_all(again, target) == body
        assert {c[0] for c in network.calls[calls:]} == {"1", "2", "3", "4"}


async def test_an_archive_and_a_data_file_of_one_number_and_size_never_share_bytes(
        tmp_path: Path) -> None:
    """Job and data ids are separate sequences: a bulk ZIP of job 7 and data file 7 may
    have the same size and no md5. Each must read its own bytes from the disk."""
    data, data_body = make_file("7", 3 * BS, md5=None)
    archive = File(Data("7", None), 3 * BS, kind="bulk-zip")
    archive_body = random.Random("zip 7").randbytes(3 * BS)
    network = Network({"7": data_body})
    async with disk_fetch(tmp_path, network) as first:
        assert await read_all(first, data) == data_body
        await until(lambda: first.counts["blocks_written"] == 3, "the writes")
    network.bodies["7"] = archive_body  # the archive's URL serves the archive
    async with disk_fetch(tmp_path, network) as second:
        assert await read_all(second, archive) == archive_body
        assert second.counts["hits"] == 0


async def test_a_run_owed_while_its_fetch_goes_on_is_written(tmp_path: Path) -> None:
    """A read whose blocks the disk holds in part is fetched in several runs; one owed
    before the next run's fetch ends is in the memory cache only once the fetch returns,
    so it is queued then, not while a write could end and look for it in vain."""
    target, body = make_file("1", 6 * BS)
    other, other_body = make_file("2", 2 * BS)
    second_run, release = trio.Event(), trio.Event()

    async def network(t: File, start: int, end: int) -> bytes:
        if t is target and start == 3 * BS:  # the run after the block the disk holds
            second_run.set()
            await release.wait()
        await trio.sleep(0)
        return {"1": body, "2": other_body}[t.data.id][start:end]

    store = Gated(tmp_path)
    store.open()
    item = entry("1", 6 * BS, target.data.md5, BS)
    Store.write_run(store, item, 2, [body[2 * BS : 3 * BS]])  # block 2 on disk
    disk = store.disk = DiskFetch(store, network, block_size=BS, max_bytes=10**9,
                                  queue_bytes=2 * BS)
    link = LinkEstimate.of(0.05, 10 * 2**20)  # far: runs are owed
    async with trio.open_nursery() as nursery:
        config = ReaderConfig(block_size=BS, first_fetch=BS, max_request=8 * BS)
        reader = Reader(disk, nursery, config, link=link,  # type: ignore[arg-type]
                        ahead=disk.ahead)  # type: ignore[arg-type]
        nursery.start_soon(disk.run, reader.cached, lambda: link.far)
        await disk(other, 0, 2 * BS)  # fills the queue; its write waits at the gate
        stream = reader.open(target)
        nursery.start_soon(reader.read, stream, 0, 6 * BS)
        await second_run.wait()  # blocks 0-1 came; 3-5 are on their way
        store.gate.set()  # the queued write ends: room, and whatever is owed is repaid
        await until(lambda: settled(disk), "the queued write")
        release.set()
        await until(lambda: settled(disk) and not reader.stats()["inflight"], "the writes")
        assert disk.counts["write_skipped"] == 0
        assert all(store.holds(item, i) for i in range(6))
        nursery.cancel_scope.cancel()


async def test_many_small_owed_runs_make_a_bounded_line(tmp_path: Path) -> None:
    """Bounded in bytes alone, tiny files would let the line of owed runs grow to many
    entries (each costs memory, and a walk over them the event loop's time): it is also
    bounded to as many entries as blocks would fill it."""
    files = [make_file(str(i), 100) for i in range(200)]  # a tenth of a block each
    network = Network({t.data.id: body for t, body in files})
    async with gated_fetch(tmp_path, network, {}) as (disk, store):
        for target, _ in files:
            await disk(target, 0, 100)
        bound = diskfetch.OWED_QUEUES * (disk.queue_bytes // BS)  # 16 * 2 entries
        assert disk.stats()["queued_bytes"] == 2 * BS  # 20 files queued
        assert len(disk._owed) == bound and disk.stats()["owed_bytes"] == 100 * bound
        assert disk.counts["write_skipped"] == 200 - 20 - bound
        store.gate.set()
        await until(lambda: settled(disk), "the line")


async def test_a_cached_block_of_another_length_is_not_written(tmp_path: Path) -> None:
    """The memory cache's block under an owed run's key must have the entry's length:
    one that has not is another file's, and is not written (nor does it stop the writers)."""
    target, body = make_file("1", 6 * BS)
    cached = {(target.cache_key, i): body[i * BS : (i + 1) * BS] for i in range(6)}
    cached[(target.cache_key, 5)] = b"x" * (BS // 2)
    async with gated_fetch(tmp_path, Network({"1": body}), cached) as (disk, store):
        await disk(target, 0, 2 * BS)
        await disk(target, 2 * BS, 6 * BS)  # owed
        store.gate.set()
        await until(lambda: settled(disk), "the writes")
        assert disk.counts["blocks_written"] == 5 and disk.counts["write_skipped"] == 1
        assert not store.holds(entry("1", 6 * BS, target.data.md5, BS), 5)


def on_disk(disk: DiskFetch, blocks: int) -> Callable[[], bool]:
    """Whether ``blocks`` blocks were written by ``disk`` or found on disk by it."""
    return lambda: disk.counts["blocks_written"] + disk.counts["hits"] == blocks


async def test_two_servers_data_of_one_number_and_size_never_share_bytes(
        tmp_path: Path) -> None:
    """Each Flow server numbers its data itself, and one cache directory may serve mounts
    of several: data 7 of one and of another, same size, no md5, must each read their own
    bytes. The default server's ids stay unprefixed: caches made before keep their entries."""
    assert diskfetch.disk_namespace("https://files.flow.bio") == ""
    target, ours = make_file("7", 3 * BS, md5=None)
    theirs = random.Random("the other server").randbytes(3 * BS)
    for files_url, body, hits in (("https://files.flow.bio", ours, 0),
                                  ("https://flow.lab.example", theirs, 0),
                                  ("https://files.flow.bio", ours, 3)):
        store = Store(tmp_path)
        store.open()
        disk = DiskFetch(store, Network({"7": body}), block_size=BS, max_bytes=10**9,
                         namespace=diskfetch.disk_namespace(files_url))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(disk.run)
            assert await read_all(disk, target) == body
            assert disk.counts["hits"] == hits
            await until(on_disk(disk, 3), "the writes")
            nursery.cancel_scope.cancel()
