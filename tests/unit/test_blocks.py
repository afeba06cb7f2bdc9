"""Block arithmetic: which blocks hold which bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowfs.blocks import (
    block_count,
    block_span,
    blocks_covering,
    clamp,
    iter_runs,
    pieces,
    run_span,
)

pytestmark = pytest.mark.timeout(60)


def test_block_count_rounds_up_and_handles_tiny_files() -> None:
    assert block_count(0, 4) == 0
    assert block_count(1, 4) == 1
    assert block_count(4, 4) == 1
    assert block_count(5, 4) == 2


def test_last_block_is_partial() -> None:
    assert block_span(0, 10, 4) == (0, 4)
    assert block_span(2, 10, 4) == (8, 10)
    assert block_span(0, 1, 4) == (0, 1)
    with pytest.raises(IndexError):
        block_span(3, 10, 4)
    with pytest.raises(IndexError):
        block_span(0, 0, 4)


def test_run_span_ends_at_eof() -> None:
    assert run_span(range(1, 3), 10, 4) == (4, 10)
    assert run_span(range(0, 1), 10, 4) == (0, 4)
    with pytest.raises(ValueError):
        run_span(range(2, 2), 10, 4)


def test_clamp_at_and_after_eof() -> None:
    assert clamp(0, 5, 10) == (0, 5)
    assert clamp(8, 5, 10) == (8, 10)
    assert clamp(10, 5, 10) == (10, 10)
    assert clamp(50, 5, 10) == (10, 10)
    assert clamp(0, 5, 0) == (0, 0)
    with pytest.raises(ValueError):
        clamp(-1, 5, 10)


def test_blocks_covering_across_boundaries() -> None:
    assert blocks_covering(0, 4, 4) == range(0, 1)
    assert blocks_covering(3, 5, 4) == range(0, 2)
    assert blocks_covering(4, 5, 4) == range(1, 2)
    assert blocks_covering(3, 13, 4) == range(0, 4)
    assert not blocks_covering(5, 5, 4)


def test_pieces_slice_each_block() -> None:
    assert list(pieces(3, 13, 4)) == [(0, 3, 4), (1, 0, 4), (2, 0, 4), (3, 0, 1)]
    assert list(pieces(5, 6, 4)) == [(1, 1, 2)]


def test_iter_runs_groups_contiguous_runs_up_to_a_limit() -> None:
    assert list(iter_runs([], 3)) == []
    assert list(iter_runs([1, 2, 3, 5, 6, 9], 8)) == [range(1, 4), range(5, 7), range(9, 10)]
    assert list(iter_runs(range(0, 7), 3)) == [range(0, 3), range(3, 6), range(6, 7)]
    with pytest.raises(ValueError):
        list(iter_runs([3, 2], 3))


@given(
    size=st.integers(0, 5000),
    block_size=st.integers(1, 700),
    offset=st.integers(0, 6000),
    length=st.integers(0, 6000),
)
def test_pieces_cover_exactly_the_clamped_range(
    size: int, block_size: int, offset: int, length: int
) -> None:
    start, end = clamp(offset, length, size)
    assert end - start == max(0, min(length, size - offset))
    covered = []
    for index, lo, hi in pieces(start, end, block_size):
        block_start, block_end = block_span(index, size, block_size)
        assert 0 <= lo < hi <= block_end - block_start
        covered.append((block_start + lo, block_start + hi))
    # Consecutive, gap-free, exactly [start, end).
    position = start
    for lo, hi in covered:
        assert lo == position
        position = hi
    assert position == end
    assert [i for i, _, _ in pieces(start, end, block_size)] == list(
        blocks_covering(start, end, block_size)
    )


@given(
    indices=st.sets(st.integers(0, 200)),
    max_blocks=st.integers(1, 20),
)
def test_iter_runs_preserves_every_index_once(indices: set[int], max_blocks: int) -> None:
    runs = list(iter_runs(sorted(indices), max_blocks))
    flat = [i for run in runs for i in run]
    assert flat == sorted(indices)
    assert all(1 <= len(run) <= max_blocks for run in runs)


@given(size=st.integers(1, 5000), block_size=st.integers(1, 700))
def test_blocks_tile_the_file(size: int, block_size: int) -> None:
    spans = [block_span(i, size, block_size) for i in range(block_count(size, block_size))]
    assert spans[0][0] == 0
    assert spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(end - start == block_size for start, end in spans[:-1])
