"""The pool of recycled receive buffers."""

from __future__ import annotations

from flowfs.buffers import BufferPool


def test_take_reuses_offered_buffers_of_its_size_only() -> None:
    pool = BufferPool(size=8, limit=2)
    first = bytearray(8)
    pool.offer(first)
    pool.offer(bytearray(7))  # another size: not kept
    pool.offer(b"12345678")  # immutable: not kept
    assert len(pool) == 1
    assert pool.take(8) is first and pool.reused == 1
    fresh = pool.take(8)  # empty pool: a new buffer
    assert fresh is not first and len(fresh) == 8
    assert len(pool.take(3)) == 3  # a last, shorter piece is always new


def test_the_pool_is_bounded() -> None:
    pool = BufferPool(size=4, limit=2)
    for _ in range(5):
        pool.offer(bytearray(4))
    assert len(pool) == 2
