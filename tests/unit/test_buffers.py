"""The pool of recycled receive buffers."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from flowfs.blockcache import LONE_REFCOUNT
from flowfs.buffers import BufferPool, new_buffer
from flowfs.config import MountConfig
from flowfs.link import LinkEstimate
from flowfs.mount import _open_reader, receive_buffers, sized_for_link
from flowfs.reader import ReaderConfig


def test_take_reuses_offered_buffers_of_its_size_only() -> None:
    pool = BufferPool(size=8, limit=2)
    first = bytearray(8)
    pool.offer(first)
    pool.offer(bytearray(7))  # another size: not kept
    pool.offer(b"12345678")  # immutable: not kept
    assert pool.spare == 1
    assert pool.take(8) is first and pool.reused == 1
    fresh = pool.take(8)  # empty pool: a new buffer
    assert fresh is not first and len(fresh) == 8
    assert len(pool.take(3)) == 3  # a last, shorter piece is always new


def test_the_pool_is_bounded() -> None:
    pool = BufferPool(size=4, limit=2)
    for _ in range(5):
        pool.offer(bytearray(4))
    assert pool.spare == 2


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_mount_keeps_spares_only_where_bodies_are_received_into_them(
        no_proxy: pytest.MonkeyPatch) -> None:
    config = ReaderConfig(cache_bytes=64 * 2**20)
    pool = receive_buffers(config, "http://127.0.0.1:8000")
    assert pool is not None and pool.limit == config.spare_buffers == 64
    # Plain HTTP through a proxy goes through httpx, which allocates every body: spares
    # would pile up unused (up to a quarter of the cache budget)...
    no_proxy.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert receive_buffers(config, "http://127.0.0.1:8000") is None
    # ...unless NO_PROXY exempts the server; and HTTPS goes through a CONNECT tunnel.
    no_proxy.setenv("NO_PROXY", "127.0.0.1")
    assert receive_buffers(config, "http://127.0.0.1:8000") is not None
    no_proxy.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert receive_buffers(config, "https://files.flow.bio") is not None
    no_proxy.setenv("HTTPS_PROXY", "https://proxy.invalid:3128")  # TLS inside TLS: httpx's
    assert receive_buffers(config, "https://files.flow.bio") is None


def test_spares_over_https_too_but_not_for_other_schemes(no_proxy: pytest.MonkeyPatch) -> None:
    config = ReaderConfig(cache_bytes=64 * 2**20)
    # TLS bodies land in our buffers too (flowfs.tls)
    assert receive_buffers(config, "https://files.flow.bio") is not None
    assert receive_buffers(config, "ftp://files.flow.bio") is None
    pool = receive_buffers(config, "http://127.0.0.1:8000")
    assert pool is not None
    assert pool and pool.spare == 0  # empty, yet not falsy: `if pool` means "a pool"


def test_take_spare_never_makes_a_buffer() -> None:
    pool = BufferPool(8, limit=2)
    assert pool.take_spare(8) is None and pool.allocated == 0
    pool.offer(bytearray(8))
    assert pool.take_spare(4) is None  # not a block of the pool's size
    assert pool.take_spare(8) is not None and pool.reused == 1 and pool.spare == 0


def test_a_new_buffer_is_a_plain_bytearray_of_its_size_held_only_by_its_taker() -> None:
    pool = BufferPool(size=256 * 1024, limit=2)
    for size in (256 * 1024, 4096, 1):  # a block, and the short last pieces of a body
        fresh = pool.take(size)
        assert type(fresh) is bytearray and len(fresh) == size
        # One reference, ours (as the block cache counts a lone block): the constructor's
        # own is not leaked, or every block received on a fresh mount would stay in memory.
        assert sys.getrefcount(fresh) == LONE_REFCOUNT
        fresh[:] = b"x" * size  # writable over its whole length
        assert fresh.count(b"x") == size
    assert pool.allocated == 3
    assert len(new_buffer(0)) == 0


def test_new_buffers_are_given_back_when_dropped() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):  # 50 MiB if each leaked
            BufferPool(size=256 * 1024).take(256 * 1024)
        assert tracemalloc.get_traced_memory()[0] - before < 2**20
    finally:
        tracemalloc.stop()


def test_far_away_half_the_budget_may_be_in_flight_and_the_cache_keeps_the_rest() -> None:
    # Eight files over 100 ms per request were bounded by the read-ahead in flight: a
    # mount whose API answered from afar gives it half of --cache-size, never more in all.
    config = ReaderConfig(cache_bytes=512 * 2**20, held_outside=64 * 2**20)
    near = sized_for_link(config, LinkEstimate.of(0.0004, 500 * 2**20))
    far = sized_for_link(config, LinkEstimate.of(0.05, 50 * 2**20))
    assert near.readahead_budget == 128 * 2**20 and near.cache_capacity == 320 * 2**20
    # Far: half, but no more than the cache keeps, where what is in flight lands and waits.
    assert far.readahead_budget == 224 * 2**20 and far.cache_capacity == 224 * 2**20
    for sized in (near, far):
        assert sized.readahead_budget + sized.cache_capacity + 64 * 2**20 == 512 * 2**20
    assert far.spare_buffers == far.readahead_budget // far.block_size  # what is in flight
    assert far.spare_buffers > near.spare_buffers
    with pytest.raises(ValueError):
        ReaderConfig(readahead_part=1)  # the cache would keep nothing


@given(cache_mib=st.integers(1, 64 * 1024), held_eighths=st.integers(0, 8),
       part=st.sampled_from([2, 3, 4, 8]))
def test_a_window_in_flight_can_land_in_the_cache_without_evicting_itself(
        cache_mib: int, held_eighths: int, part: int) -> None:
    # A stream's window is bytes in flight and bytes landed but not yet read, which wait in
    # the cache. Where the window or the bytes in flight outgrew what the cache keeps, a
    # far stream's own landed blocks evicted each other before its reader reached them,
    # and were fetched again (wan100, 1 GiB: 2-5% of the file twice).
    cache = cache_mib * 2**20
    held = cache * held_eighths // 64  # the disk's write queue: at most an eighth
    config = ReaderConfig(cache_bytes=cache, held_outside=held, readahead_part=part)
    assert config.readahead_budget <= config.cache_capacity
    assert config.readahead_share <= config.cache_capacity
    assert config.readahead_budget + config.cache_capacity + held <= cache
    assert config.readahead_budget >= min(cache // part, (cache - held) // 2)


def test_the_write_queue_may_take_at_most_half_the_budget() -> None:
    half = ReaderConfig(cache_bytes=64 * 2**20, held_outside=32 * 2**20)
    assert half.readahead_budget == half.cache_capacity == 16 * 2**20
    with pytest.raises(ValueError):
        ReaderConfig(cache_bytes=64 * 2**20, held_outside=33 * 2**20)


async def test_a_far_mount_keeps_spares_for_what_can_be_in_flight_the_write_queue_counted(
        tmp_path: Path) -> None:
    # Spares beyond what can be in flight are memory nobody will receive into: the pool's
    # limit is the reader's budget in flight once the disk's write queue is counted.
    config = MountConfig(mountpoint=tmp_path / "mnt", files_url="https://files.example",
                         cache_dir=tmp_path / "cache", cache_size=512 * 2**20)
    reader_config = ReaderConfig(cache_bytes=config.cache_size)
    pool = BufferPool(reader_config.block_size)
    api = SimpleNamespace(link=LinkEstimate.of(0.05, 50 * 2**20))
    async with trio.open_nursery() as nursery:
        _, disk = _open_reader(config, reader_config, api, pool,  # type: ignore[arg-type]
                                    nursery)
        assert disk is not None and disk.queue_bytes == 64 * 2**20
        assert pool.limit * reader_config.block_size == 224 * 2**20
        nursery.cancel_scope.cancel()
