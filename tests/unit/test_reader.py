"""The read path's engine against a fake fetch: right bytes, one fetch per block, bounded
memory, no hangs, no poisoned cache."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
import trio
import trio.testing

from flowfs.buffers import BufferPool
from flowfs.errors import BadReply, FlowError, NotFound, Transient
from flowfs.link import LinkEstimate
from flowfs.reader import Reader, ReaderConfig
from flowfs.streams import RETRY_GRACE, Target

pytestmark = pytest.mark.timeout(60)

BS = 1000  # deliberately not a power of two
BASE: dict[str, Any] = {
    "cache_bytes": 1_000_000,
    "block_size": BS,
    "first_fetch": BS,
    "readahead_max": 8 * BS,
    "max_request": 4 * BS,
    "max_parallel": 4,
    "io_timeout": 5.0,
    "seq_slack": 2 * BS,
    "finish_on_close": 0,  # every read-ahead nobody waits for is cancelled at close
}


@dataclass(frozen=True)
class File:
    cache_key: str
    size: int


def content(target: Target) -> bytes:
    """The deterministic bytes of a fake file (distinct per key)."""
    return random.Random(target.cache_key).randbytes(target.size)


@dataclass
class FakeServer:
    """A fetch that serves ``content()``, counts calls and can fail, hang or cut bodies."""

    latency: float = 0.0
    failures: list[BaseException] = field(default_factory=list)
    hang: Callable[[int, int], bool] = lambda start, end: False
    short: bool = False
    observe: Callable[[int, int], None] = lambda start, end: None
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    cancelled: int = 0
    inflight: int = 0
    peak: int = 0
    inflight_bytes: int = 0
    peak_bytes: int = 0
    _cache: dict[str, bytes] = field(default_factory=dict)

    async def fetch(self, target: Target, start: int, end: int) -> bytes:
        assert 0 <= start < end <= target.size
        self.calls.append((target.cache_key, start, end))
        self.inflight += 1
        self.inflight_bytes += end - start
        self.peak = max(self.peak, self.inflight)
        self.peak_bytes = max(self.peak_bytes, self.inflight_bytes)
        try:
            self.observe(start, end)
            await trio.sleep(self.latency)
            if self.failures:
                raise self.failures.pop(0)
            if self.hang(start, end):
                await trio.sleep_forever()
            if target.cache_key not in self._cache:
                self._cache[target.cache_key] = content(target)
            data = self._cache[target.cache_key][start:end]
            return data[:-1] if self.short else data
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1
            self.inflight_bytes -= end - start

    def bytes_served(self) -> int:
        return sum(end - start for _, start, end in self.calls)


@asynccontextmanager
async def running(server: FakeServer, *, link: LinkEstimate | None = None,
                  **overrides: Any) -> AsyncIterator[Reader]:
    async with trio.open_nursery() as nursery:
        yield Reader(server.fetch, nursery, ReaderConfig(**{**BASE, **overrides}), link=link)
        nursery.cancel_scope.cancel()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true, failing after ``timeout`` (trio time)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


# -- bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize("cache_bytes", [1_000_000, 3 * BS])
async def test_random_reads_return_exactly_the_right_bytes(cache_bytes: int) -> None:
    server = FakeServer()
    target = File("data-1", 10 * BS + 500)
    expected = content(target)
    rng = random.Random(11)
    async with running(server, cache_bytes=cache_bytes) as reader:
        streams = [reader.open(target) for _ in range(3)]
        for _ in range(400):
            offset = rng.randrange(0, target.size + 2 * BS)
            size = rng.choice([0, 1, 7, BS - 1, BS, BS + 1, 3 * BS + 17, rng.randrange(5000)])
            got = await reader.read(rng.choice(streams), offset, size)
            assert got == expected[offset : offset + size]
        assert reader.stats()["cached_bytes"] <= cache_bytes


async def test_eof_partial_block_and_empty_file() -> None:
    server = FakeServer()
    target = File("data-2", 2 * BS + 10)
    expected = content(target)
    async with running(server) as reader:
        stream = reader.open(target)
        assert await reader.read(stream, 2 * BS, 100) == expected[2 * BS :]
        assert len(await reader.read(stream, 2 * BS, 100)) == 10
        assert await reader.read(stream, BS - 5, 10) == expected[BS - 5 : BS + 5]
        assert await reader.read(stream, target.size, 10) == b""
        assert await reader.read(stream, target.size + 5000, 10) == b""
        assert await reader.read(stream, 0, 0) == b""
        assert await reader.read(stream, 0, 10**9) == expected

        calls = len(server.calls)
        empty = reader.open(File("empty", 0))
        assert await reader.read(empty, 0, 4096) == b""
        assert len(server.calls) == calls

        tiny = File("tiny", 1)
        assert await reader.read(reader.open(tiny), 0, 4096) == content(tiny)


# -- cache ----------------------------------------------------------------------------


async def test_cached_blocks_are_not_fetched_again() -> None:
    server = FakeServer()
    target = File("data-3", 20 * BS)
    async with running(server) as reader:
        first = await reader.read(reader.open(target), 3 * BS + 10, 500)
        again = await reader.read(reader.open(target), 3 * BS + 100, 500)
        assert first[90:] == again[:410]
        assert len(server.calls) == 1
        assert reader.stats()["hits"] == 1
        assert reader.stats()["misses"] == 1


async def test_lru_eviction_respects_the_byte_budget() -> None:
    server = FakeServer()
    target = File("data-4", 100 * BS)
    # A budget of 4 blocks: 3 for the cache, 1 for read-ahead in flight.
    async with running(server, cache_bytes=4 * BS) as reader:
        for block in (0, 10, 20, 30, 40):
            await reader.read(reader.open(target), block * BS, 10)
            assert reader.stats()["cached_bytes"] <= 3 * BS
        assert reader.stats()["cached_blocks"] == 3
        calls = len(server.calls)
        await reader.read(reader.open(target), 40 * BS, 10)  # most recent: cached
        assert len(server.calls) == calls
        await reader.read(reader.open(target), 0, 10)  # least recent: evicted
        assert len(server.calls) == calls + 1


# -- single flight and failures ---------------------------------------------------------


async def test_concurrent_readers_of_a_block_share_one_fetch(autojump_clock: Any) -> None:
    server = FakeServer(latency=1.0)
    target = File("data-6", 10 * BS)
    results: list[bytes] = []
    async with running(server) as reader:

        async def one() -> None:
            results.append(await reader.read(reader.open(target), 1500, 200))

        async with trio.open_nursery() as readers:
            for _ in range(20):
                readers.start_soon(one)
    assert len(server.calls) == 1
    assert results == [content(target)[1500:1700]] * 20


async def test_failed_fetch_reaches_every_waiter_and_is_not_cached(
    autojump_clock: Any,
) -> None:
    server = FakeServer(latency=1.0, failures=[NotFound("gone")])
    target = File("data-7", 10 * BS)
    errors: list[BaseException] = []
    async with running(server) as reader:

        async def one() -> None:
            try:
                await reader.read(reader.open(target), 2 * BS, 10)
            except NotFound as exc:
                errors.append(exc)

        async with trio.open_nursery() as readers:
            for _ in range(5):
                readers.start_soon(one)
        assert len(errors) == 5
        assert len(server.calls) == 1
        assert reader.stats()["cached_blocks"] == 0
        assert reader.stats()["inflight"] == 0
        # The next read fetches again and succeeds.
        got = await reader.read(reader.open(target), 2 * BS, 10)
        assert got == content(target)[2 * BS : 2 * BS + 10]
        assert len(server.calls) == 2


async def test_short_body_is_rejected_and_not_cached() -> None:
    server = FakeServer(short=True)
    target = File("data-8", 10 * BS)
    async with running(server) as reader:
        with pytest.raises(BadReply):
            await reader.read(reader.open(target), 0, 10)
        assert reader.stats()["cached_blocks"] == 0
        server.short = False
        assert await reader.read(reader.open(target), 0, 10) == content(target)[:10]


async def test_a_crashing_fetch_is_an_io_error_not_a_dead_nursery() -> None:
    server = FakeServer(failures=[RuntimeError("bug in fetch")])
    target = File("data-9", 10 * BS)
    async with running(server) as reader:
        with pytest.raises(Transient):
            await reader.read(reader.open(target), 0, 10)
        assert await reader.read(reader.open(target), 0, 10) == content(target)[:10]


async def test_hanging_fetch_gives_transient_at_the_deadline(autojump_clock: Any) -> None:
    hanging = True
    server = FakeServer(hang=lambda start, end: hanging)
    target = File("data-10", 10 * BS)
    async with running(server, io_timeout=5.0) as reader:
        began = trio.current_time()
        with pytest.raises(Transient):
            await reader.read(reader.open(target), 0, 10)
        assert trio.current_time() - began == pytest.approx(5.0)
        # The hung fetch itself is abandoned at its own deadline: nothing stays pending.
        await eventually(lambda: reader.stats()["inflight"] == 0)
        hanging = False
        await trio.sleep(RETRY_GRACE)  # a retry at once would fail at once (rule 7)
        assert await reader.read(reader.open(target), 0, 10) == content(target)[:10]
        assert len(server.calls) == 2


async def test_a_waiter_giving_up_leaves_no_stuck_block(autojump_clock: Any) -> None:
    gate = trio.Event()
    server = FakeServer(observe=lambda start, end: None)
    target = File("data-11", 10 * BS)

    async def gated(t: Target, start: int, end: int) -> bytes:
        await gate.wait()
        return await server.fetch(t, start, end)

    async with trio.open_nursery() as nursery:
        reader = Reader(gated, nursery, ReaderConfig(**BASE))
        with trio.move_on_after(1.0):  # the caller is interrupted (e.g. a signal)
            await reader.read(reader.open(target), 0, 10)
        assert reader.stats()["inflight"] == 1  # the fetch carries on for others
        results: list[bytes] = []

        async def second() -> None:
            results.append(await reader.read(reader.open(target), 0, 10))

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()  # the second reader waits on the fetch
        gate.set()
        await eventually(lambda: bool(results))
        assert results == [content(target)[:10]]
        assert len(server.calls) == 1
        assert reader.stats()["inflight"] == 0
        assert reader.stats()["cached_blocks"] == 1
        nursery.cancel_scope.cancel()


# -- read-ahead -----------------------------------------------------------------------------


async def test_sequential_read_reads_ahead_in_coalesced_parallel_requests(
    autojump_clock: Any,
) -> None:
    target = File("data-12", 300 * BS + 123)
    ra_peak = 0

    def observe(start: int, end: int) -> None:
        nonlocal ra_peak
        ra_peak = max(ra_peak, reader.stats()["readahead_requests"])

    server = FakeServer(latency=0.01, observe=observe)
    config: dict[str, Any] = {"readahead_max": 32 * BS, "max_request": 4 * BS, "max_parallel": 3}
    async with running(server, **config) as reader:
        stream = reader.open(target)
        chunks = []
        position = 0
        while chunk := await reader.read(stream, position, 512):
            chunks.append(chunk)
            position += len(chunk)
        stats = reader.stats()
    assert b"".join(chunks) == content(target)
    sizes = [end - start for _, start, end in server.calls]
    assert max(sizes) == 4 * BS  # contiguous missing blocks are coalesced...
    assert all(size <= 4 * BS for size in sizes)  # ...up to max_request
    assert len(sizes) < 301 / 3
    assert server.bytes_served() == target.size  # every byte fetched exactly once
    assert stats["readahead_fetches"] > 0
    assert 2 <= ra_peak <= 3  # parallel read-ahead, at most max_parallel per stream
    assert server.peak <= 3 + 1  # plus at most one demand fetch
    assert stats["hits"] > 10 * stats["misses"]  # the reader rarely waits


async def test_random_reads_do_not_read_ahead() -> None:
    server = FakeServer()
    target = File("data-13", 1000 * BS)
    rng = random.Random(5)
    async with running(server) as reader:
        stream = reader.open(target)
        for _ in range(50):
            await reader.read(stream, rng.randrange(target.size), 100)
        assert reader.stats()["readahead_fetches"] <= 2
        assert server.bytes_served() <= 55 * 2 * BS


async def test_many_streams_keep_readahead_within_the_global_budget(
    autojump_clock: Any,
) -> None:
    cache_bytes = 80 * BS
    budget = ReaderConfig(**{**BASE, "cache_bytes": cache_bytes}).readahead_budget
    ra_seen = 0

    def observe(start: int, end: int) -> None:
        nonlocal ra_seen
        ra_seen = max(ra_seen, reader.stats()["readahead_bytes"])

    server = FakeServer(latency=0.005, observe=observe)
    targets = [File(f"many-{i}", 40 * BS + i) for i in range(200)]
    overrides: dict[str, Any] = {"cache_bytes": cache_bytes, "readahead_max": 16 * BS}
    async with running(server, **overrides) as reader:

        async def stream_one(target: File) -> None:
            stream = reader.open(target)
            expected = content(target)
            position = 0
            while chunk := await reader.read(stream, position, BS):
                assert chunk == expected[position : position + len(chunk)]
                position += len(chunk)
            assert position == target.size
            reader.close(stream)

        async with trio.open_nursery() as readers:
            for target in targets:
                readers.start_soon(stream_one, target)
        stats = reader.stats()
    assert ra_seen > 0
    assert ra_seen <= budget
    # Each of the 200 streams has at most one demand read (<= 2 blocks) in flight.
    assert server.peak_bytes <= budget + 200 * 2 * BS
    assert stats["readahead_bytes"] == 0
    assert stats["streams"] == 0


async def test_close_cancels_a_streams_pending_readahead(autojump_clock: Any) -> None:
    server = FakeServer(hang=lambda start, end: start >= 3 * BS)
    target = File("data-14", 100 * BS)
    async with running(server) as reader:
        stream = reader.open(target)
        for block in range(3):
            await reader.read(stream, block * BS, BS)
        await eventually(lambda: any(start >= 3 * BS for _, start, _ in server.calls))
        assert reader.stats()["readahead_bytes"] > 0
        readahead_calls = sum(1 for _, start, _ in server.calls if start >= 3 * BS)
        reader.close(stream)
        stats = reader.stats()
        assert stats["readahead_bytes"] == 0
        assert stats["readahead_requests"] == 0
        assert stats["inflight"] == 0
        assert stats["streams"] == 0
        await eventually(lambda: server.cancelled == readahead_calls)


async def test_close_lets_small_readahead_finish_and_the_next_open_reads_it(
        autojump_clock: Any) -> None:
    """An index lookup reads a few blocks, closes, and the next lookup of the same
    neighbourhood needs no request: the small read-ahead in flight at close landed."""
    server = FakeServer(latency=0.05)
    target = File("data-16", 100 * BS)
    async with running(server, finish_on_close=4 * BS) as reader:
        stream = reader.open(target)
        for block in range(3):
            await reader.read(stream, block * BS, BS)
        await eventually(lambda: any(start >= 3 * BS for _, start, _ in server.calls))
        ahead = [(start, end) for _, start, end in server.calls if start >= 3 * BS]
        assert ahead and all(end - start <= 4 * BS for start, end in ahead)
        reader.close(stream)
        await eventually(lambda: reader.stats()["readahead_bytes"] == 0)
        assert server.cancelled == 0
        assert reader.stats()["readahead_cancelled"] == 0
        calls = len(server.calls)
        again = reader.open(target)
        furthest = max(end for _, end in ahead)
        assert await reader.read(again, 3 * BS, furthest - 3 * BS) == content(target)[
            3 * BS : furthest]
        assert len(server.calls) == calls  # all from the cache
        reader.close(again)


async def test_close_lets_finish_only_the_nearest_readahead_up_to_the_finish_size(
        autojump_clock: Any) -> None:
    """``head`` of a big file over a distant link must not leave its whole read-ahead
    window downloading: beyond ``finish_on_close`` bytes, the farthest is cancelled."""
    server = FakeServer(hang=lambda start, end: start >= 3 * BS)
    target = File("data-17", 100 * BS)
    async with running(server, finish_on_close=2 * BS) as reader:
        stream = reader.open(target)
        for block in range(6):  # the window grows: several requests in flight
            with trio.move_on_after(1):
                await reader.read(stream, block * BS, BS)
        ahead = sorted((start, end) for _, start, end in server.calls if start >= 3 * BS)
        assert sum(end - start for start, end in ahead) > 2 * BS
        reader.close(stream)
        kept, total = 0, 0
        for start, end in ahead:  # the nearest requests that fit in 2 blocks stay
            if total + end - start > 2 * BS:
                break
            total += end - start
            kept += 1
        await eventually(lambda: server.cancelled == len(ahead) - kept)
        assert reader.stats()["readahead_bytes"] == total


async def test_many_closes_leave_at_most_a_quarter_of_the_budget_finishing(
        autojump_clock: Any) -> None:
    """A loop of short opens (headers of many BAMs) must not hand the open streams'
    read-ahead budget to bytes nobody asked for."""
    server = FakeServer(hang=lambda start, end: start >= 3 * BS)
    overrides: dict[str, Any] = {"cache_bytes": 64 * BS, "finish_on_close": 4 * BS}
    budget = ReaderConfig(**{**BASE, **overrides}).readahead_budget
    async with running(server, **overrides) as reader:
        for n in range(12):
            stream = reader.open(File(f"short-{n}", 100 * BS))
            for block in range(3):
                await reader.read(stream, block * BS, BS)
            reader.close(stream)
            assert reader.stats()["readahead_finishing_bytes"] <= budget // 4
        assert reader.stats()["readahead_finishing_bytes"] > 0
        assert reader.stats()["readahead_cancelled"] > 0


async def test_close_keeps_readahead_that_another_reader_waits_for(
    autojump_clock: Any,
) -> None:
    gate = trio.Event()
    server = FakeServer()
    target = File("data-15", 100 * BS)

    started: list[tuple[int, int]] = []  # requests begun, even those cancelled at the gate

    async def gated(t: Target, start: int, end: int) -> bytes:
        started.append((start, end))
        if start >= 3 * BS:
            await gate.wait()
        return await server.fetch(t, start, end)

    async with trio.open_nursery() as nursery:
        reader = Reader(gated, nursery, ReaderConfig(**BASE))
        seq = reader.open(target)
        for block in range(3):
            await reader.read(seq, block * BS, BS)
        assert reader.stats()["readahead_requests"] > 0
        results: list[bytes] = []

        async def other() -> None:
            results.append(await reader.read(reader.open(target), 3 * BS, 10))

        nursery.start_soon(other)
        await trio.testing.wait_all_tasks_blocked()  # the other reader waits on read-ahead
        reader.close(seq)
        gate.set()
        await eventually(lambda: bool(results))
        assert results == [content(target)[3 * BS : 3 * BS + 10]]
        assert sum(1 for _, start, end in server.calls if start <= 3 * BS < end) == 1
        assert sum(1 for start, end in started if start <= 3 * BS < end) == 1  # not refetched
        await eventually(lambda: reader.stats()["readahead_bytes"] == 0)
        nursery.cancel_scope.cancel()



async def test_concurrent_streams_never_fetch_a_block_twice(autojump_clock: Any) -> None:
    # Streams at different speeds, a cache that holds every window but not whole files.
    # With plain LRU, blocks read ahead for a slow stream aged out while the fast ones were
    # read, and were fetched again (17% more bytes here); read-through blocks go first now.
    server = FakeServer(latency=0.002)
    targets = [File(f"par-{i}", 100 * BS) for i in range(8)]
    overrides: dict[str, Any] = {"cache_bytes": 128 * BS, "readahead_max": 32 * BS,
                                 "max_request": 4 * BS, "max_parallel": 8}
    async with running(server, **overrides) as reader:

        async def stream_one(target: File, pause: float) -> None:
            stream = reader.open(target)
            expected = content(target)
            position = 0
            while chunk := await reader.read(stream, position, 2 * BS):
                assert chunk == expected[position : position + len(chunk)]
                position += len(chunk)
                await trio.sleep(pause)
            reader.close(stream)

        async with trio.open_nursery() as readers:
            for i, target in enumerate(targets):
                readers.start_soon(stream_one, target, 0.001 * (i + 1))
    assert server.bytes_served() == sum(t.size for t in targets)


async def test_recycled_buffers_never_show_old_bytes(autojump_clock: Any) -> None:
    # Bodies land in buffers taken from the pool the cache's evictions fill, as in a
    # mount. A small cache churns all along while sequential and random readers (and a
    # reader slow to take its bytes) run at once: every byte must still be right.
    pool = BufferPool(BS, limit=8)
    server = FakeServer(latency=0.001)

    async def fetch(target: Target, start: int, end: int) -> list[bytearray]:
        data = await server.fetch(target, start, end)
        pieces = []
        for at in range(0, len(data), BS):
            piece = pool.take(min(BS, len(data) - at))
            piece[:] = data[at : at + BS]
            pieces.append(piece)
        return pieces

    targets = [File(f"rc-{i}", 50 * BS + 7 * i) for i in range(6)]
    async with trio.open_nursery() as nursery:
        reader = Reader(fetch, nursery, ReaderConfig(**{**BASE, "cache_bytes": 24 * BS}),
                        recycle=pool.offer)

        async def sequential(target: File) -> None:
            stream, expected, position = reader.open(target), content(target), 0
            while chunk := await reader.read(stream, position, 3 * BS // 2):
                assert chunk == expected[position : position + len(chunk)]
                position += len(chunk)
            reader.close(stream)

        async def scattered(target: File, seed: int) -> None:
            rng, stream, expected = random.Random(seed), reader.open(target), content(target)
            for _ in range(60):
                at = rng.randrange(target.size)
                chunk = await reader.read(stream, at, rng.randrange(1, 3 * BS))
                await trio.sleep(0.001)  # let the other readers churn the cache in between
                assert chunk == expected[at : at + len(chunk)]
            reader.close(stream)

        async with trio.open_nursery() as readers:
            for i, target in enumerate(targets):
                readers.start_soon(sequential, target)
                readers.start_soon(scattered, target, i)
        nursery.cancel_scope.cancel()
    assert pool.reused > 50  # the test did exercise recycling


@pytest.mark.parametrize("limit", ["spare_buffers", 2])
async def test_streaming_makes_new_buffers_only_for_what_is_held_at_once(
        limit: Any, autojump_clock: Any) -> None:
    # The pool sized as a mount sizes it keeps every evicted buffer a burst of replies
    # will take again; a small pool drops them and a long stream keeps allocating.
    config = ReaderConfig(**{**BASE, "cache_bytes": 40 * BS, "max_parallel": 4})
    pool = BufferPool(BS, limit=config.spare_buffers if limit == "spare_buffers" else limit)
    server = FakeServer(latency=0.001)

    async def fetch(target: Target, start: int, end: int) -> list[bytearray]:
        data = await server.fetch(target, start, end)
        pieces = [pool.take(min(BS, len(data) - at)) for at in range(0, len(data), BS)]
        await trio.sleep(0.001)  # every piece is taken before the body arrives
        for at, piece in zip(range(0, len(data), BS), pieces, strict=True):
            piece[:] = data[at : at + BS]
        return pieces

    target = File("long", 400 * BS)
    expected = content(target)
    async with trio.open_nursery() as nursery:
        reader = Reader(fetch, nursery, config, recycle=pool.offer)
        stream, position = reader.open(target), 0
        while chunk := await reader.read(stream, position, 4 * BS):
            assert chunk == expected[position : position + len(chunk)]
            position += len(chunk)
        reader.close(stream)
        nursery.cancel_scope.cancel()
    held_at_once = (config.cache_capacity + config.readahead_budget) // BS
    if limit == "spare_buffers":
        assert pool.allocated <= held_at_once + 4 * 4  # + demand fetches of max_request
    else:
        assert pool.allocated > 2 * held_at_once  # what the bound above guards against


# -- the link decides how much is in flight ------------------------------------------------


@pytest.mark.parametrize(("latency", "far"), [(0.0002, False), (0.05, True)])
async def test_a_distant_link_gets_more_requests_in_flight_within_the_budget(
        autojump_clock: trio.testing.MockClock, latency: float, far: bool) -> None:
    # Every fetch takes the link's latency (virtual time). A sequential reader on a
    # distant link must keep more than the near limit of 8 requests in flight, yet the
    # read-ahead budget (a quarter of the cache) bounds the bytes, and bytes stay exact.
    mib = 2**20
    server = FakeServer(latency=latency)
    target = File("far", 96 * mib)
    config = {"block_size": 256 * 1024, "cache_bytes": 256 * mib, "first_fetch": 256 * 1024,
              "readahead_max": 16 * mib, "max_request": 8 * mib, "max_parallel": 8,
              "seq_slack": 2 * mib}
    link = LinkEstimate.of(latency, 50 * mib, samples=5)
    async with running(server, link=link, **config) as reader:
        stream = reader.open(target)
        got = bytearray()
        for offset in range(0, target.size, mib):
            got += await reader.read(stream, offset, mib)
    assert bytes(got) == content(target)
    assert (server.peak > 8) is far, server.peak
    assert server.peak_bytes <= 256 * mib // 4 + 2 * mib  # the budget, plus a demand fetch


# A far link's reader: the mount's block and request sizes, a small cache.
FAR = {"block_size": 256 * 1024, "first_fetch": 256 * 1024, "cache_bytes": 256 * 2**20,
       "readahead_max": 16 * 2**20, "max_request": 8 * 2**20, "seq_slack": 2 * 2**20}


@pytest.mark.parametrize("hinted", [False, True], ids=["measured", "hinted-later"])
@pytest.mark.parametrize("size", [256 * 1024, 128 * 1024], ids=["root-mount", "user-mount"])
async def test_far_away_a_small_file_read_in_bulk_costs_one_round_trip(
        autojump_clock: trio.testing.MockClock, size: int, hinted: bool) -> None:
    # 50 ms per request: `cp` of a 2 MiB file used to wait for its first block, then for
    # the rest: two round trips. Its first read now brings what one reply carries in a
    # latency beside it, whether the kernel asks in 256 KiB reads (a mount tuned as root)
    # or 128 KiB (a user's). On a fresh mount the link may be known only from the API's
    # replies, and only after a read was planned: the next read's limits follow it.
    mib = 2**20
    server = FakeServer(latency=0.05)
    target = File("small", 2 * mib)
    link = LinkEstimate() if hinted else LinkEstimate.of(0.05, 50 * mib, samples=5)
    async with running(server, link=link, **FAR) as reader:
        stream, got = reader.open(target), bytearray()
        if hinted:  # a read planned before the API answered, then its answer
            await reader.read(reader.open(File("other", mib)), 0, 4096)
            link.hint(0.05)
        began = trio.current_time()
        for offset in range(0, target.size, size):
            got += await reader.read(stream, offset, size)
        assert trio.current_time() - began == pytest.approx(0.05, abs=0.005)
        assert bytes(got) == content(target)


async def test_far_away_a_region_query_costs_one_round_trip_and_no_read_ahead(
        autojump_clock: trio.testing.MockClock) -> None:
    # samtools over 50 ms per request: half of the region queries took two round trips,
    # and each left megabytes of read-ahead behind it.
    mib = 2**20
    server = FakeServer(latency=0.05)
    link = LinkEstimate.of(0.05, 50 * mib, samples=5)
    async with running(server, link=link, **FAR) as reader:
        # A region query (samtools' 128 KiB header read, then a lookup elsewhere): the
        # header read brings the opening once per file, the lookup one block, no more.
        bam = File("bam", 64 * mib)
        query = reader.open(bam)
        await reader.read(query, 0, 128 * 1024)
        before = server.bytes_served()
        await reader.read(query, 40 * mib, 4096)
        reader.close(query)
        assert server.bytes_served() - before == 256 * 1024
        # samtools' 36 KiB at a region near a block's end, then the kernel's 128 KiB after
        # it: one round trip, and no read-ahead for a lookup that is over
        before, began = server.bytes_served(), trio.current_time()
        query = reader.open(bam)
        at = 20 * mib - 64 * 1024
        await reader.read(query, at, 36 * 1024)
        await reader.read(query, at + 36 * 1024, 128 * 1024)
        reader.close(query)
        assert trio.current_time() - began == pytest.approx(0.05, abs=0.005)
        assert server.bytes_served() - before == 2 * 256 * 1024


async def test_a_large_region_read_far_away_does_not_pull_the_whole_window(
        autojump_clock: trio.testing.MockClock) -> None:
    # A 6 MiB region (a CRAM container, a wide BAM region) read in the middle of a file:
    # a run that did not start at the file's start must earn the full window (4 requests'
    # worth), or every such lookup would ask for the whole read-ahead window (~60 MiB
    # here) and cancel it at close, over a link that bills every byte in time.
    mib = 2**20
    server = FakeServer(latency=0.05)
    target = File("cram", 200 * mib)
    link = LinkEstimate.of(0.05, 50 * mib, samples=5)
    async with running(server, link=link, **FAR) as reader:
        stream = reader.open(target)
        for offset in range(100 * mib, 106 * mib, mib):
            await reader.read(stream, offset, mib)
        reader.close(stream)
    assert server.bytes_served() <= 24 * mib, server.bytes_served() / mib


async def test_a_read_right_after_a_timeout_fails_at_once_and_later_fetches_again(
        autojump_clock: trio.testing.MockClock) -> None:
    # The kernel retries a failed read-ahead synchronously at once, through the same open
    # file: that retry must not wait a second io_timeout (one read(2) took 2x --io-timeout).
    # Another open fetches afresh at once, and so does the same file a second later.
    stalled = [True]
    server = FakeServer(hang=lambda start, end: stalled[0])
    target = File("slow", 4 * BS)
    async with running(server, io_timeout=5.0) as reader:
        stream = reader.open(target)
        began = trio.current_time()
        with pytest.raises(Transient):
            await reader.read(stream, 0, 100)
        assert trio.current_time() - began == pytest.approx(5.0, abs=0.1)
        await eventually(lambda: reader.stats()["inflight"] == 0)  # the fetch timed out too
        calls = len(server.calls)
        began = trio.current_time()
        with pytest.raises(Transient):
            await reader.read(stream, 0, 100)  # the kernel's retry
        assert trio.current_time() - began < 0.01 and len(server.calls) == calls
        assert reader.stats()["timeouts_repeated"] == 1
        stalled[0] = False
        # a user's new `cat`: a new stream, fetched again at once
        assert await reader.read(reader.open(target), 0, 100) == content(target)[:100]
        assert len(server.calls) == calls + 1
        await trio.sleep(RETRY_GRACE)
        assert await reader.read(stream, BS, 100) == content(target)[BS:BS + 100]


# -- rule 8: read-ahead the disk cache answers in part ---------------------------------


@dataclass
class PartDisk:
    """An ``ahead`` in front of ``server``: blocks ``held`` are "on disk". Where it holds a
    window's first block it brings only the run's held blocks up to the first gap (rule 8),
    after ``gate`` is set; otherwise the run comes from the server."""

    server: FakeServer
    held: set[int]
    gated: bool = False  # parts wait until the test sets ``gate``
    gate: trio.Event = field(default_factory=trio.Event)
    calls: list[tuple[int, int, int]] = field(default_factory=list)
    called_at: dict[int, float] = field(default_factory=dict)  # by lead: the first call

    def __post_init__(self) -> None:
        if not self.gated:
            self.gate.set()

    async def ahead(self, target: Target, start: int, end: int, lead: int) -> Any:
        self.calls.append((start, end, lead))
        self.called_at.setdefault(lead, trio.current_time())
        first, stop = start // BS, -(-end // BS)
        if lead not in self.held:
            return await self.server.fetch(target, start, end)
        await self.gate.wait()
        body = content(target)
        part = []
        for index in range(first, stop):
            if index not in self.held:
                break
            part.append(body[index * BS : (index + 1) * BS])
        return part


class OverDisk(NamedTuple):
    reader: Reader
    server: FakeServer
    disk: PartDisk
    target: File
    expected: bytes


@asynccontextmanager
async def over_disk(name: str, held: set[int], *, gated: bool = False, blocks: int = 100,
                    **server: Any) -> AsyncIterator[OverDisk]:
    """A reader whose read-ahead goes through a :class:`PartDisk` holding ``held``, over a
    server 50 ms away, and a file ``name`` of ``blocks`` blocks with its bytes."""
    fake = FakeServer(latency=0.05, **server)
    disk = PartDisk(fake, held, gated)
    target = File(name, blocks * BS)
    async with trio.open_nursery() as nursery:
        reader = Reader(fake.fetch, nursery, ReaderConfig(**BASE), ahead=disk.ahead)
        yield OverDisk(reader, fake, disk, target, content(target))
        nursery.cancel_scope.cancel()


async def held_window(reader: Reader, stream: Any, disk: PartDisk, reads: int
                      ) -> tuple[int, int]:
    """Read blocks 0 to ``reads - 1`` in order; the span of the first read-ahead run that
    ``disk`` holds the window's first block of (it waits at the gate)."""
    for block in range(reads):
        await reader.read(stream, block * BS, BS)
    await eventually(lambda: any(lead in disk.held for _, _, lead in disk.calls))
    start, end, _ = next(c for c in disk.calls if c[2] in disk.held)
    return start, end


async def test_read_ahead_stops_where_the_disk_blocks_end_and_comes_back_when_read_on(
        autojump_clock: Any) -> None:
    """A stream read before as far as block 3 reads ahead no further from the network
    until it reads on; then it gets the rest, exactly, and what it skipped is asked for
    then (a rerun of a region query asks nothing beyond what was read before)."""
    async with over_disk("data-disk-1", set(range(4))) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        for block in range(3):  # sequential: a window opens from block 2 on
            assert await reader.read(stream, block * BS, BS) == expected[
                block * BS : (block + 1) * BS]
        await eventually(lambda: reader.stats()["readahead_requests"] == 0)
        assert any(start < 4 * BS < end for start, end, _ in disk.calls)  # drawn past 4
        assert reader.stats()["readahead_parts"] >= 1
        assert all(end <= 4 * BS for _, _, end in server.calls)  # none past the disk's
        got = await reader.read(stream, 3 * BS, 9 * BS)  # reads on: the rest comes
        assert got == expected[3 * BS : 12 * BS]
        assert any(start == 4 * BS for _, start, _ in server.calls)
        reader.close(stream)


async def test_a_read_waiting_past_the_disk_blocks_gets_them_without_a_second_plan(
        autojump_clock: Any) -> None:
    """If a read already waits on a block after the disk's part, the rest is fetched in
    the same request's task: the reader never waits for a replan that will not come."""
    async with over_disk("data-disk-2", {3}, gated=True) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        start, end = await held_window(reader, stream, disk, 3)
        past = 4 * BS
        assert start < past < end  # the window reaches past the disk's blocks
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def read_past() -> None:
                got.append(await reader.read(stream, past, BS))

            nursery.start_soon(read_past)
            await trio.testing.wait_all_tasks_blocked()
            disk.gate.set()
        assert got == [expected[past : past + BS]]
        assert any(s == 4 * BS for _, s, _ in server.calls)
        reader.close(stream)


async def test_a_read_arriving_while_the_rest_is_fetched_is_not_dropped(
        autojump_clock: Any) -> None:
    """While the blocks one read waits on are being fetched, another read starts to wait
    on a later block of the same request: it gets its bytes, never the dropping's error."""
    async with over_disk("data-disk-3", {5}, gated=True) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        start, end = await held_window(reader, stream, disk, 5)
        assert start == 5 * BS and end >= 8 * BS  # blocks 6 and 7 would be dropped
        got: dict[int, bytes] = {}

        async def read(block: int) -> None:
            got[block] = await reader.read(stream, block * BS, BS)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, 6)
            await trio.testing.wait_all_tasks_blocked()
            disk.gate.set()  # the part comes; block 6 is fetched, which takes a while
            await eventually(lambda: any(s == 6 * BS for _, s, _ in server.calls))
            nursery.start_soon(read, 7)  # meanwhile, a read of block 7
        assert got == {b: expected[b * BS : (b + 1) * BS] for b in (6, 7)}
        reader.close(stream)


async def test_a_read_that_comes_to_wait_late_gets_a_whole_io_timeout(
        autojump_clock: Any) -> None:
    """The blocks a read waits on past the disk's part are fetched with an io_timeout of
    their own, as a demand fetch is: a read-ahead whose disk part took most of its time
    (a slow disk) must not time out a read of a healthy link that came to wait late."""
    async with over_disk("data-disk-late", {5}, gated=True) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        await held_window(reader, stream, disk, 5)
        # The disk holds the part back until 30 ms before the request's io_timeout; the
        # read comes to wait then, and its block takes 50 ms to fetch.
        await trio.sleep_until(disk.called_at[5] + BASE["io_timeout"] - 0.03)
        got: list[bytes] = []

        async def read_late() -> None:
            got.append(await reader.read(stream, 6 * BS, BS))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_late)
            await trio.testing.wait_all_tasks_blocked()
            disk.gate.set()  # the part comes; block 6 is fetched, 50 ms away
        assert got == [expected[6 * BS : 7 * BS]]
        assert reader.stats()["timeouts"] == 0
        reader.close(stream)


async def test_a_read_gets_its_block_when_it_lands_not_when_a_later_reads_does(
        autojump_clock: Any) -> None:
    """Past the disk's part, each fetch's blocks are delivered as it ends: a read waiting
    on the first is not held back by the fetch for a read that came to wait later (and
    times out while its block sits in hand). Server 4 s away, io_timeout 5 s."""
    async with over_disk("data-disk-chain", {5}, gated=True) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        _, end = await held_window(reader, stream, disk, 5)
        assert end >= 8 * BS  # the held request covers blocks 5, 6 and 7
        server.latency = 4.0
        took: dict[int, float] = {}

        async def read(block: int) -> None:
            began = trio.current_time()
            other = reader.open(target)
            got = await reader.read(other, block * BS, BS)
            assert got == expected[block * BS : (block + 1) * BS]
            took[block] = trio.current_time() - began
            reader.close(other)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, 6)
            await trio.testing.wait_all_tasks_blocked()
            disk.gate.set()  # the part comes: block 6 is fetched, 0 to 4 s
            await trio.sleep(3.5)
            nursery.start_soon(read, 7)  # block 7 is fetched after it, 4 to 8 s
        assert took == {6: 4.0, 7: 4.5}
        reader.close(stream)


async def test_blocks_delivered_before_a_later_fetch_fails_are_counted(
        autojump_clock: Any) -> None:
    """``bytes_fetched`` counts every block a request delivered: the disk's part and the
    fetches for waiting reads are delivered as they come, so a later fetch of the same
    request failing must not leave them uncounted (they are cached and read)."""
    async with over_disk("data-disk-counted", {5}, gated=True) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        await held_window(reader, stream, disk, 5)
        server.latency = 4.0
        before = reader.stats()["bytes_fetched"]
        got: dict[int, Any] = {}

        async def read(block: int) -> None:
            other = reader.open(target)
            try:
                got[block] = await reader.read(other, block * BS, BS)
            except FlowError as exc:
                got[block] = exc
            reader.close(other)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, 6)
            await trio.testing.wait_all_tasks_blocked()
            disk.gate.set()  # the part (block 5); block 6 is fetched, 0 to 4 s
            await trio.sleep(3.5)
            nursery.start_soon(read, 7)  # block 7 is fetched after it, 4 to 8 s...
            await trio.sleep(1.0)
            server.failures.append(Transient("the link broke"))  # ...and fails
        assert got[6] == expected[6 * BS : 7 * BS] and isinstance(got[7], FlowError)
        assert reader.stats()["bytes_fetched"] - before == 2 * BS  # blocks 5 and 6
        reader.close(stream)


async def test_blocks_dropped_are_read_ahead_again_by_the_stream_that_reads_on(
        autojump_clock: Any) -> None:
    """After a part drops block 4 on, the stream's next read plans it as read-ahead
    again: reading on needs no demand fetch for it."""
    async with over_disk("data-disk-4", set(range(4))) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        for block in range(3):
            await reader.read(stream, block * BS, BS)
        await eventually(lambda: reader.stats()["readahead_requests"] == 0)
        assert reader.stats()["readahead_parts"] == 1
        assert await reader.read(stream, 3 * BS, BS) == expected[3 * BS : 4 * BS]
        await trio.testing.wait_all_tasks_blocked()
        assert any(start == 4 * BS for start, _, _ in disk.calls[2:])  # planned again
        reader.close(stream)


async def test_another_stream_past_the_dropped_blocks_reads_them_ahead_too(
        autojump_clock: Any) -> None:
    """Stream B plans its read-ahead past blocks pending in A's request; A's part drops
    them and A reads no more. B then reads through them without waiting on a demand
    fetch per read: its read-ahead plans them again, and one that is elsewhere in the
    file fetches nothing behind itself."""
    async with over_disk("data-disk-5", {5}, gated=True, blocks=200) as rig:
        reader, server, disk, target, expected = rig
        a, b, far = reader.open(target), reader.open(target), reader.open(target)
        for block in range(120, 124):  # ``far`` streams elsewhere
            await reader.read(far, block * BS, BS)
        for block in range(5):  # A's window: a run led by block 5, held, waits at the gate
            await reader.read(a, block * BS, BS)
        for block in range(5):  # B plans past A's pending blocks
            await reader.read(b, block * BS, BS)
        await trio.testing.wait_all_tasks_blocked()
        far_planned = far.pattern.readahead_end
        disk.gate.set()
        await eventually(lambda: reader.stats()["readahead_requests"] == 0
                         and reader.stats()["inflight"] == 0)
        assert reader.stats()["readahead_parts"] >= 1
        assert far.pattern.readahead_end == far_planned  # the drop was not its to replan
        for block in range(5, 20):
            assert await reader.read(b, block * BS, BS) == expected[block * BS : (block + 1) * BS]
        await reader.read(far, 124 * BS, BS)
        await trio.testing.wait_all_tasks_blocked()
        ahead = {(start, end) for start, end, _ in disk.calls}
        demand = [(s, e) for _, s, e in server.calls if 5 * BS <= s < 20 * BS
                  and (s, e) not in ahead]
        assert demand == []  # B's reads found every block read ahead
        # nothing fetched behind the stream that reads elsewhere
        assert not [c for c in server.calls if 30 * BS <= c[1] < 120 * BS]


async def test_the_disks_blocks_are_not_held_back_by_the_rests_fetch(
        autojump_clock: Any) -> None:
    """A read of a block the disk brought gets it while a block after the gap, which
    another read waits on, is still being fetched."""
    async with over_disk("data-disk-6", {5}, gated=True,
                         hang=lambda start, end: start == 6 * BS) as rig:
        reader, server, disk, target, expected = rig
        stream = reader.open(target)
        start, end = await held_window(reader, stream, disk, 5)
        assert start == 5 * BS and end > 6 * BS
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: reader.read(stream, 6 * BS, BS))  # hangs
            await trio.testing.wait_all_tasks_blocked()
            disk.gate.set()
            with trio.fail_after(1):
                got.append(await reader.read(stream, 5 * BS, BS))
            nursery.cancel_scope.cancel()
        assert got == [expected[5 * BS : 6 * BS]]
