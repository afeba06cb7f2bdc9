"""The block cache's eviction order: read-through blocks first, then least recently used."""

from __future__ import annotations

import pytest

from flowfs import blockcache
from flowfs.blockcache import BlockCache


def filled(*keys: str) -> BlockCache:
    cache = BlockCache(maxsize=10 * len(keys))
    for key in keys:
        cache[key] = b"x" * 10
    return cache


def test_without_demotion_it_is_plain_lru() -> None:
    cache = filled("a", "b", "c")
    assert cache["a"]  # a is now the most recently used
    cache["d"] = b"x" * 10
    assert set(cache) == {"a", "c", "d"}


def test_demoted_blocks_go_first_oldest_demotion_first() -> None:
    cache = filled("a", "b", "c", "d")
    cache.demote("c")
    cache.demote("b")
    cache["e"] = b"x" * 10
    assert set(cache) == {"a", "b", "d", "e"}  # c, demoted first, went; not a, the LRU one
    cache["f"] = b"x" * 10
    assert set(cache) == {"a", "d", "e", "f"}
    cache["g"] = b"x" * 10  # no demoted block left: back to LRU
    assert set(cache) == {"d", "e", "f", "g"}


def test_a_hit_promotes_a_demoted_block() -> None:
    cache = filled("a", "b", "c")
    cache.demote("c")
    assert cache.get("c")  # another reader wants it after all
    cache["d"] = b"x" * 10
    assert set(cache) == {"b", "c", "d"}
    assert cache.demoted == 0


def test_a_peek_neither_refreshes_nor_promotes() -> None:
    """The disk cache's writes look blocks up: that must not change what goes next."""
    cache = filled("a", "b", "c")
    cache.demote("c")
    assert cache.peek("a") == b"x" * 10 and cache.peek("c") == b"x" * 10
    assert cache.peek("z") is None
    cache["d"] = b"x" * 10
    assert set(cache) == {"a", "b", "d"}  # c, demoted, went first
    cache["e"] = b"x" * 10
    assert set(cache) == {"b", "d", "e"}  # then a, least recently used: the peek not a use


def test_removed_and_unknown_keys_leave_no_trace() -> None:
    cache = filled("a", "b")
    cache.demote("zz")  # not cached: nothing to demote
    cache.demote("a")
    del cache["a"]
    cache.pop("b")
    assert cache.demoted == 0 and len(cache) == 0 and cache.currsize == 0
    cache["c"] = b"x" * 15
    cache["d"] = b"x" * 5
    assert set(cache) == {"c", "d"} and cache.currsize == 20


def test_an_evicted_block_nobody_holds_is_recycled_one_still_held_is_not() -> None:
    # The count of a lone block is measured, not assumed: CPython 3.14 lends locals to
    # calls uncounted, where a fixed 2 would take a block a reader holds for a free one.
    assert blockcache.EXACT_REFCOUNTS and blockcache.LONE_REFCOUNT in (1, 2)
    spare: list[object] = []
    cache = BlockCache(maxsize=20, recycle=spare.append)
    cache["a"] = bytearray(b"a" * 10)
    held = cache["b"] = bytearray(b"b" * 10)  # a reader still has this one
    cache["c"] = bytearray(10)  # evicts a: nobody holds it
    assert spare == [bytearray(b"a" * 10)]
    cache["d"] = bytearray(10)  # evicts b: still held, so it is only dropped
    assert len(spare) == 1 and held == bytearray(b"b" * 10)


def test_without_exact_reference_counts_no_block_is_recycled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # On an interpreter whose getrefcount is an estimate, a held block could look free.
    monkeypatch.setattr(blockcache, "EXACT_REFCOUNTS", False)
    spare: list[object] = []
    cache = BlockCache(maxsize=20, recycle=spare.append)
    cache["a"] = bytearray(b"a" * 10)
    cache["b"] = bytearray(b"b" * 10)
    cache["c"] = bytearray(10)  # evicts a, which nobody holds: dropped all the same
    assert spare == [] and "a" not in cache
