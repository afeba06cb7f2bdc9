"""Direct writes of the disk cache's bytes: exact bytes, zero padding, the page cache left
alone, and a filesystem that refuses them still gets every block."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from flowfs import directio
from flowfs.diskcache import Store, filesystem_type, is_memory_fs
from flowfs.extentfile import entry

BS = 256 * 1024


@pytest.fixture
def direct_dir(tmp_path: Path) -> Path:
    if not directio.supported(tmp_path):
        pytest.skip(f"{tmp_path} takes no direct writes")
    return tmp_path


@pytest.fixture
def in_page_cache_test_dir(direct_dir: Path) -> Path:
    """A directory on a disk: tmpfs takes O_DIRECT but keeps the bytes in memory anyway."""
    if is_memory_fs(filesystem_type(direct_dir)):
        pytest.skip(f"{direct_dir} is on a memory filesystem")
    return direct_dir


def pattern(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


def test_parts_land_back_to_back_and_the_tail_is_padded_with_zeros(direct_dir: Path) -> None:
    # Parts of odd lengths, more than one bounce buffer's worth in all.
    parts = [pattern(n, seed) for seed, n in enumerate((1, 4095, directio.CHUNK + 3, 70_000))]
    path = direct_dir / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        directio.pwrite(fd, [*parts[:2], bytearray(parts[2]), memoryview(parts[3])], 8192)
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & directio.O_DIRECT  # as it was
    finally:
        os.close(fd)
    data = path.read_bytes()
    total = sum(map(len, parts))
    padded = -(-total // directio.ALIGN) * directio.ALIGN
    assert len(data) == 8192 + padded
    assert data[:8192] == bytes(8192)  # nothing before the offset was touched
    assert data[8192 : 8192 + total] == b"".join(parts)
    assert data[8192 + total :] == bytes(padded - total)


def test_an_unaligned_offset_is_refused_before_anything_is_written(direct_dir: Path) -> None:
    path = direct_dir / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(ValueError):
            directio.pwrite(fd, [b"x" * 4096], 100)
    finally:
        os.close(fd)
    assert path.stat().st_size == 0


def test_the_descriptor_flags_are_restored_when_the_write_fails(direct_dir: Path) -> None:
    path = direct_dir / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)  # writing fails: EBADF
    try:
        with pytest.raises(OSError) as caught:
            directio.pwrite(fd, [b"x" * 4096], 0)
        assert caught.value.errno == errno.EBADF
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & directio.O_DIRECT
    finally:
        os.close(fd)


def test_a_directory_that_cannot_take_a_probe_is_not_written_directly(tmp_path: Path) -> None:
    assert not directio.supported(tmp_path / "missing")
    assert not list(tmp_path.iterdir())  # the probe of a good directory leaves nothing
    directio.supported(tmp_path)
    assert not list(tmp_path.iterdir())


def resident_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs fincore (util-linux)")
def test_cached_blocks_take_no_page_cache_when_written_directly(
        in_page_cache_test_dir: Path) -> None:
    # A block written to the disk cache is in memory already (the daemon's cache, the
    # mounted file's pages): written through the page cache it took memory a third time.
    item = entry("7", 32 * BS - 1000, None, BS)  # one whole extent, its last block short
    data = pattern(item.size, 3)
    resident = {}
    for direct in (False, True):
        store = Store(in_page_cache_test_dir / f"cache-{direct}", direct=direct)
        store.open()
        assert store.direct is direct
        written, error = store.write_run(
            item, 0, [data[i * BS : (i + 1) * BS] for i in range(item.blocks)])
        assert (written, error) == (item.blocks, None)
        resident[direct] = resident_bytes(store.place(item, 0).path)
        assert b"".join(store.get(item, i) or b"" for i in range(item.blocks)) == data
    assert resident[False] >= item.size  # every byte in the page cache, once written
    assert resident[True] <= directio.ALIGN  # the header table's page only


def test_a_refused_direct_write_goes_through_the_page_cache(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(direct_dir / "cache", direct=True)
    store.open()
    assert store.direct

    def refuse(fd: int, parts: object, offset: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(directio, "pwrite", refuse)
    item = entry("8", 3 * BS, None, BS)
    data = pattern(item.size, 5)
    assert store.write_run(item, 0, [data[:BS], data[BS : 2 * BS]]) == (2, None)
    assert not store.direct  # for good: the next write does not try again
    assert store.write_run(item, 2, [data[2 * BS :]]) == (1, None)
    assert b"".join(store.get(item, i) or b"" for i in range(3)) == data


def test_any_other_error_of_a_direct_write_is_the_write_error_it_was(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(direct_dir / "cache", direct=True)
    store.open()

    def full(fd: int, parts: object, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(directio, "pwrite", full)
    item = entry("9", BS, None, BS)
    written, error = store.write_run(item, 0, [pattern(BS, 1)])
    assert written == 0 and error is not None and error.errno == errno.ENOSPC
    assert store.direct  # a full disk says nothing about direct writes
    assert store.get(item, 0) is None


def test_a_block_size_direct_writes_cannot_take_goes_through_the_page_cache(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Slots of 1000 bytes do not start on 4 KiB boundaries, and padding would overwrite
    # the next block: such an entry is written the ordinary way, and stays right.
    store = Store(direct_dir / "cache", direct=True)
    store.open()

    def never(fd: int, parts: object, offset: int) -> None:
        raise AssertionError("a direct write of unaligned slots")

    monkeypatch.setattr(directio, "pwrite", never)
    item = entry("10", 5 * 1000 - 1, None, 1000)
    data = pattern(item.size, 9)
    blocks = [data[i * 1000 : (i + 1) * 1000] for i in range(item.blocks)]
    assert store.write_run(item, 0, blocks) == (item.blocks, None)
    assert b"".join(store.get(item, i) or b"" for i in range(item.blocks)) == data
    assert store.direct  # other entries still go past the page cache


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs fincore (util-linux)")
def test_the_md5_check_leaves_no_pages_behind(in_page_cache_test_dir: Path) -> None:
    # The check reads a complete file back once; written past the page cache, its bytes
    # would otherwise come back into it there.
    data = pattern(32 * BS - 1000, 4)
    item = entry("11", len(data), hashlib.md5(data).hexdigest(), BS)
    store = Store(in_page_cache_test_dir / "cache", direct=True)
    store.open()
    assert store.write_run(item, 0, [data[i * BS : (i + 1) * BS]
                                     for i in range(item.blocks)]) == (item.blocks, None)
    assert store.verify(item) is True
    assert resident_bytes(store.place(item, 0).path) <= directio.ALIGN


def test_the_md5_check_passes_where_the_page_cache_will_not_take_the_hint(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dropping the pages is a hint: a sandbox that refuses fadvise must not turn blocks
    # read intact into errors, nor keep the md5 check from ever passing.
    def refuse(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "posix_fadvise", refuse)
    data = pattern(3 * BS, 6)
    item = entry("12", len(data), hashlib.md5(data).hexdigest(), BS)
    store = Store(direct_dir / "cache", direct=True)
    store.open()
    assert store.write_run(item, 0, [data[i * BS : (i + 1) * BS] for i in range(3)]) == (3, None)
    assert store.verify(item) is True


def test_the_probe_file_has_no_name_where_the_filesystem_makes_one(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A probe with a name is left behind for good if the daemon is killed meanwhile.
    try:
        os.close(os.open(direct_dir, os.O_TMPFILE | os.O_RDWR, 0o600))
    except OSError as exc:
        pytest.skip(f"no O_TMPFILE here: {exc.strerror}")

    def named(*args: object, **kwargs: object) -> None:
        raise AssertionError("a named probe where O_TMPFILE works")

    monkeypatch.setattr(tempfile, "mkstemp", named)
    assert directio.supported(direct_dir)


def test_where_unnamed_files_are_refused_a_named_probe_is_made_and_removed(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.open

    def no_tmpfile(path: str, flags: int, *args: int) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", no_tmpfile)
    before = len(os.listdir("/proc/self/fd"))
    assert directio.supported(direct_dir)
    assert not list(direct_dir.iterdir())
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_bounce_buffer_of_one_page_writes_parts_longer_than_it(direct_dir: Path) -> None:
    parts = [bytes([i % 251]) * n for i, n in enumerate((1, 4095, 4096, 10_000))]
    fd = os.open(direct_dir / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        directio.pwrite(fd, parts, 0, directio._aligned_buffer(directio.ALIGN))
    finally:
        os.close(fd)
    data = (direct_dir / "f").read_bytes()
    assert data[: sum(map(len, parts))] == b"".join(parts)
    assert data[sum(map(len, parts)) :] == bytes(len(data) - sum(map(len, parts)))
    assert len(data) % directio.ALIGN == 0


def test_bounce_buffers_are_private_to_the_process() -> None:
    # A shared mapping would be shared with any child forked later.
    buffer = directio._aligned_buffer(directio.ALIGN)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            assert perms == "rw-p"
            return
    raise AssertionError("the bounce buffer is not in /proc/self/maps")
