"""Block arithmetic for the read path: which fixed-size blocks cover a byte range.

A file of ``size`` bytes is cut into blocks of ``block_size`` bytes; block ``i`` covers
``[i * block_size, min((i + 1) * block_size, size))``, so only the last block may be
shorter.  Everything here is pure integer arithmetic on half-open ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def clamp(offset: int, length: int, size: int) -> tuple[int, int]:
    """The part ``[start, end)`` of ``[offset, offset + length)`` inside a file of ``size``.

    Empty (``start == end``) at or after EOF and for ``length == 0``.
    """
    if offset < 0 or length < 0 or size < 0:
        raise ValueError(f"negative offset/length/size: {offset}, {length}, {size}")
    start = min(offset, size)
    return start, min(offset + length, size)


def block_count(size: int, block_size: int) -> int:
    """Number of blocks of a file of ``size`` bytes (0 for an empty file)."""
    return -(-size // block_size)


def block_span(index: int, size: int, block_size: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of block ``index``."""
    if not 0 <= index < block_count(size, block_size):
        raise IndexError(f"block {index} outside a file of {size} bytes")
    start = index * block_size
    return start, min(start + block_size, size)


def run_span(blocks: range, size: int, block_size: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of a non-empty run of consecutive blocks."""
    if not blocks or blocks.step != 1:
        raise ValueError(f"not a non-empty run of blocks: {blocks!r}")
    start, _ = block_span(blocks.start, size, block_size)
    _, end = block_span(blocks.stop - 1, size, block_size)
    return start, end


def blocks_covering(start: int, end: int, block_size: int) -> range:
    """The blocks that hold bytes ``[start, end)``; empty when the range is empty."""
    first = start // block_size
    if start >= end:
        return range(first, first)
    return range(first, (end - 1) // block_size + 1)


def pieces(start: int, end: int, block_size: int) -> Iterator[tuple[int, int, int]]:
    """``(block index, lo, hi)`` for each block of ``[start, end)``.

    ``lo:hi`` is the slice of that block which belongs to the range, in order.
    """
    for index in blocks_covering(start, end, block_size):
        base = index * block_size
        yield index, max(start, base) - base, min(end, base + block_size) - base


def iter_runs(indices: Iterable[int], max_blocks: int) -> Iterator[range]:
    """Runs of consecutive blocks, each ``<= max_blocks``, from ascending block indices.

    Lazy: a caller that stops early never looks at the rest of ``indices``.
    """
    if max_blocks < 1:
        raise ValueError("max_blocks must be at least 1")
    first = last = -2
    for index in indices:
        if index < 0 or index <= last:
            raise ValueError(f"block indices must be ascending and >= 0, got {index} after {last}")
        if index == last + 1 and index - first < max_blocks:
            last = index
            continue
        if first >= 0:
            yield range(first, last + 1)
        first = last = index
    if first >= 0:
        yield range(first, last + 1)

