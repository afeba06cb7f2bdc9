"""One extent file of the disk cache: up to 32 blocks of one Flow file, each checked.

A Flow file's blocks are kept in extent files of ``EXTENT_BLOCKS`` consecutive blocks
(:mod:`flowfs.diskcache` names and places them). An extent file is sparse::

    [0, 4096)                       the header table: header j at j * 36 (zeros: absent)
    [4096 + j * bs, +bs)            the bytes of the extent's block j (a hole until written)

A header is ``FFC2``, the length of the bytes, the block's index in the file, the entry's
16-byte digest, and the CRC-32 of those fields and the bytes (little-endian). Writers
write a run's bytes, then its headers; readers read the headers, then one ``preadv`` per
stretch of blocks that are there, and check every block before it is returned.

This module is the format only: plain functions on an open file descriptor, blocking.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"FFC2"
# magic, length of the bytes, block index, entry digest (16 bytes), crc32 of all before + bytes
_HEADER = struct.Struct("<4sIQ16sI")
HEADER_SIZE = _HEADER.size
_EMPTY_HEADER = bytes(HEADER_SIZE)
TABLE_BYTES = 4096  # the header table; the bytes start on a page boundary after it
EXTENT_BLOCKS = 32  # blocks per extent file (its table holds 32 * 36 bytes)

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Entry:
    """One file's blocks: the key of everything stored for (id, size, md5, block size)."""

    digest: bytes  # 16 bytes
    size: int
    block_size: int
    md5: str | None

    @property
    def name(self) -> str:
        return self.digest.hex()

    @property
    def blocks(self) -> int:
        return -(-self.size // self.block_size)

    def block_length(self, index: int) -> int:
        if not 0 <= index < self.blocks:
            raise IndexError(f"block {index} outside a file of {self.size} bytes")
        return min(self.block_size, self.size - index * self.block_size)


def entry(data_id: str, size: int, md5: str | None, block_size: int) -> Entry:
    """The entry of a data id as the server describes it now."""
    key = f"flowfs-block\0{data_id}\0{size}\0{md5 or ''}\0{block_size}".encode()
    return Entry(hashlib.blake2b(key, digest_size=16).digest(), size, block_size, md5)


def extents(indices: range) -> Iterator[range]:
    """``indices`` cut where one extent file ends and the next begins."""
    start = indices.start
    while start < indices.stop:
        stop = min(indices.stop, (start // EXTENT_BLOCKS + 1) * EXTENT_BLOCKS)
        yield range(start, stop)
        start = stop


def header_at(index: int) -> int:
    return (index % EXTENT_BLOCKS) * HEADER_SIZE


def data_at(item: Entry, index: int) -> int:
    return TABLE_BYTES + (index % EXTENT_BLOCKS) * item.block_size


def write_run(fd: int, item: Entry, run: range, blocks: Sequence[Buffer],
              write_bytes: Callable[[int, Sequence[Buffer], int], None] | None = None) -> None:
    """Write a run of one extent's blocks: the bytes, and only then their headers.

    The headers' checksums are taken before the bytes are written: a buffer changed in
    between would then read back as damage, never as a block that passes its check.
    ``write_bytes(fd, blocks, offset)`` writes the bytes (a direct write, say: it may pad
    them with zeros up to the slot's end); the headers always go through the page cache.
    """
    heads = b"".join(_header(item, index, block)
                     for index, block in zip(run, blocks, strict=True))
    (write_bytes or _pwrite_all)(fd, blocks, data_at(item, run.start))
    _pwrite_all(fd, [heads], header_at(run.start))


def read_run(fd: int, item: Entry, run: range, into: Sequence[bytearray | None],
             damaged: dict[int, str], until_gap: bool = False) -> list[bytearray | None]:
    """The blocks of ``run`` (one extent's) that pass their checks; None for the others.

    Only the blocks whose headers are there are read, with one ``preadv`` per stretch
    of them, into ``into``'s buffers where given; with ``until_gap``, only those before
    the first whose header is not. ``damaged`` gets each refused block's index and why.
    """
    table = os.pread(fd, HEADER_SIZE * len(run), header_at(run.start))
    heads = [table[i * HEADER_SIZE : (i + 1) * HEADER_SIZE] for i in range(len(run))]
    present = [_present(h) for h in heads]
    stop = present.index(False) if until_gap and not all(present) else len(run)
    out: list[bytearray | None] = [None] * len(run)
    i = 0
    while i < stop:
        if not present[i]:
            if heads[i].strip(b"\0"):  # something, but not a whole header
                damaged[run[i]] = "a partial header"
            i += 1
            continue
        j = i
        while j < len(run) and present[j]:
            j += 1
        buffers = [_buffer(into[k], item.block_length(run[k])) for k in range(i, j)]
        got = os.preadv(fd, buffers, data_at(item, run[i]))
        for k, buffer in zip(range(i, j), buffers, strict=True):
            problem = _check(heads[k], buffer, got, item, run[k])
            got = max(0, got - len(buffer))
            if problem is None:
                out[k] = buffer
            else:
                damaged[run[k]] = problem
        i = j
    return out


def holds(fd: int, index: int) -> bool:
    """Whether the extent's table has a header for block ``index`` (its bytes unchecked)."""
    return _present(os.pread(fd, HEADER_SIZE, header_at(index)))


def _present(head: bytes) -> bool:
    """Whether a header read from the table is there (its block's bytes unchecked)."""
    return len(head) == HEADER_SIZE and head != _EMPTY_HEADER


def _buffer(given: bytearray | None, length: int) -> bytearray:
    return bytearray(length) if given is None else given


def clear_headers(path: Path, indices: Sequence[int]) -> None:
    """Mark damaged blocks absent, so the next read fetches them (a read-only cache: not)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for index in indices:
                os.pwrite(fd, _EMPTY_HEADER, header_at(index))
        finally:
            os.close(fd)


def count_blocks(path: str) -> int:
    """How many headers an extent's table holds (not checked: a count for humans)."""
    try:
        with open(path, "rb") as f:
            table = f.read(EXTENT_BLOCKS * HEADER_SIZE)
    except OSError:
        return 0
    return sum(table[i : i + 4] == MAGIC for i in range(0, len(table), HEADER_SIZE))


def _header(item: Entry, index: int, data: Buffer) -> bytes:
    prefix = _HEADER.pack(MAGIC, len(data), index, item.digest, 0)[:-4]
    return prefix + struct.pack("<I", zlib.crc32(data, zlib.crc32(prefix)))


def _check(head: bytes, data: bytearray, got: int, item: Entry, index: int) -> str | None:
    """Why a block read back is not the block wanted (None: it is). ``got``: how many of
    the bytes read from this block on were there (a truncated file gives fewer)."""
    magic, length, stored_index, digest, crc = _HEADER.unpack(head)
    if magic != MAGIC or length != len(data):
        return "not a block of this format"
    if stored_index != index or digest != item.digest:
        return "a block of another file or position"
    if got < len(data):
        return f"{got} of its {len(data)} bytes (a truncated file)"
    if zlib.crc32(data, zlib.crc32(head[:-4])) != crc:
        return "checksum mismatch"
    return None


def _pwrite_all(fd: int, parts: Sequence[Buffer], offset: int) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.pwritev(fd, views, offset)
        if written == 0:  # a filesystem that takes nothing would loop here forever
            raise OSError(errno.EIO, "the cache's filesystem took no bytes")
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
