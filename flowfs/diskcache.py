"""The persistent disk cache: verified blocks of Flow files, shared safely between mounts.

Flow's bytes under one data id never change, and the server gives each file's size and
md5. So a block is keyed by *what the bytes are*: an entry is named by a digest of
(data id, size, md5, block size), and a block file by its index in that entry. Should
the server ever report another size or md5 for an id, the key changes and the old
blocks are simply never looked at again (eviction removes them).

Layout under the cache directory (format 1)::

    v1/<2 hex>/<32 hex digest>/<block index>   one block: a 36-byte header, then the bytes
    v1/<2 hex>/<32 hex digest>/verified        the complete file once matched Flow's md5
    v1/<2 hex>/<32 hex digest>/.tmp.*          a block being written (never read)
    .prune.lock                                one pruning pass at a time

Invariants, each relied upon by readers that share the directory:

1. A block file only ever appears complete: it is written under a temporary name in its
   entry's directory and renamed into place (rename is atomic), so neither a reader nor
   a ``kill -9`` in the middle of a write leaves a torn block under a block's name.
2. A block is returned only if its header names this entry and index, its length is the
   one the file's size implies, and the CRC-32 of header and bytes matches. Anything else
   (a flipped bit, a truncation, a file moved under another name) is *damage*: the file
   is removed and the caller fetches the block again. A damaged cache never yields a
   wrong byte (short of deliberate forgery: see docs/architecture.md).
3. Nothing is locked for reading or writing: two writers of one block write the same
   bytes and the last rename wins. Pruning takes a lock only against other pruners;
   deleting a file another process reads is harmless on POSIX (its open descriptor
   keeps the bytes).
4. Least recently used goes first: a block's mtime is when it was written or last read
   (reads refresh it at most once a minute).

Everything here is blocking file I/O: callers run it in worker threads. The store keeps
no mutable state of its own, so any number of threads may use one instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMAT = "v1"
MAGIC = b"FFC1"
# magic, length of the bytes, block index, entry digest (16 bytes), crc32 of all before + bytes
_HEADER = struct.Struct("<4sIQ16sI")
HEADER_SIZE = _HEADER.size
VERIFIED = "verified"
TMP_PREFIX = ".tmp."
TOUCH_AFTER = 60.0  # seconds: how stale a block's mtime may get before a read refreshes it
STALE_TMP = 3600.0  # a temporary file this old is a dead writer's leftover
GiB = 2**30
FLOOR_BYTES = GiB  # never leave less free than this on the cache's filesystem...
FLOOR_FRACTION = 0.05  # ...or, on a small one, than this share of it (the smaller of both)

PRIVATE_MODES = (0o700, 0o600)  # directories, files
GROUP_MODES = (0o2770, 0o660)  # setgid: new entries keep the shared directory's group
# (files group-writable so that any member's reads refresh a block's mtime, which needs write
# permission: members can replace any file through the directory anyway)


class Damaged(Exception):
    """A block file exists but fails its checks; it has been removed."""


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


@dataclass(frozen=True)
class Usage:
    """What a cache directory holds."""

    bytes: int = 0  # on disk, headers included
    blocks: int = 0
    entries: int = 0


@dataclass(frozen=True)
class _Block:
    mtime: float
    size: int
    path: str


class Store:
    """A cache directory (see the module docstring). ``shared``: group-writable modes."""

    def __init__(self, root: Path, *, shared: bool = False) -> None:
        self.root = root
        self.base = root / FORMAT
        self.dir_mode, self.file_mode = GROUP_MODES if shared else PRIVATE_MODES

    # -- setup -------------------------------------------------------------------------

    def open(self) -> bool:
        """Create the directories (with our modes); whether we may write there.

        Raises OSError if the directory neither exists nor can be made. A directory we may
        only read still serves what it holds (a cache prepared by someone else, or a
        read-only mount).
        """
        # A fresh account may have no ~/.cache yet: made as XDG asks (0700), the
        # cache directory itself and its format directory with the cache's modes. Not
        # for a directory shared with a group: its parents are the administrator's.
        if self.dir_mode == PRIVATE_MODES[0]:
            missing = [p for p in (self.root.parent, *self.root.parent.parents)
                       if not p.exists()]
            for path in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path, 0o700)
        for path in (self.root, self.base):
            self._mkdir(path)
        return os.access(self.base, os.W_OK | os.X_OK)

    def _mkdir(self, path: Path) -> None:
        try:
            os.mkdir(path, self.dir_mode)
        except FileExistsError:
            return
        os.chmod(path, self.dir_mode)  # mkdir's mode went through the umask

    def _entry_dir(self, item: Entry) -> Path:
        return self.base / item.name[:2] / item.name

    # -- blocks --------------------------------------------------------------------------

    def get(self, item: Entry, index: int, into: bytearray | None = None) -> bytearray | None:
        """Block ``index`` of ``item``: None if absent; raises :class:`Damaged` if bad.

        ``into``: a buffer of exactly the block's length to read into (its old content
        is overwritten entirely, or the block is damage).
        """
        length = item.block_length(index)
        if into is not None and len(into) != length:
            raise ValueError(f"a buffer of {len(into)} bytes for a block of {length}")
        path = self._entry_dir(item) / str(index)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            data = bytearray(length) if into is None else into
            head, extra = bytearray(HEADER_SIZE), bytearray(1)
            got = os.readv(fd, [head, data, extra])
        finally:
            os.close(fd)
        problem = _check(head, data, got, item, index)
        if problem is not None:
            _unlink(path)
            raise Damaged(f"{path}: {problem}")
        if time.time() - st.st_mtime > TOUCH_AFTER:
            with contextlib.suppress(OSError):  # a read-only cache still serves
                os.utime(path)
        return data

    def prefetch(self, item: Entry, indices: range) -> None:
        """Ask the kernel to start reading these blocks' files from the disk, all at once.

        Each block is a file of its own, so the kernel's read-ahead, which works within
        a file, never reaches the next block: read one after the other, a cold run
        waits for the disk once per block. Announced together, their reads queue up
        side by side and the ``get`` calls that follow find them in memory.
        """
        directory = self._entry_dir(item)
        if not directory.is_dir():
            return  # nothing of this file on disk (a first read)
        for index in indices:
            try:
                fd = os.open(directory / str(index), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def put(self, item: Entry, index: int, data: bytes | bytearray | memoryview) -> None:
        """Store block ``index`` (invariant 1). Raises OSError (ENOSPC, EROFS, ...)."""
        if len(data) != item.block_length(index):
            raise ValueError(f"block {index}: {len(data)} bytes, expected "
                             f"{item.block_length(index)}")
        directory = self._entry_dir(item)
        head = _header(item, index, data)
        for attempt in (1, 2):
            try:
                self._write(directory, str(index), head, data)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
                # a new entry, or a pruner removed the (then empty) directory meanwhile
                self._mkdir(directory.parent)
                self._mkdir(directory)

    def _write(self, directory: Path, name: str, head: bytes,
               data: bytes | bytearray | memoryview) -> None:
        tmp = directory / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.file_mode)
        try:
            try:
                if self.file_mode & 0o077:
                    os.fchmod(fd, self.file_mode)  # the umask may have taken group bits
                _write_all(fd, [head, data])
            finally:
                os.close(fd)
            os.rename(tmp, directory / name)
        except BaseException:
            _unlink(tmp)
            raise

    # -- whole files -----------------------------------------------------------------------

    def verify(self, item: Entry, stop: threading.Event | None = None) -> bool | None:
        """Check a complete entry against Flow's md5 once.

        True: it matches (now or before: a ``verified`` mark); None: no md5, blocks are
        missing, or ``stop`` was set; False: it does not match, and the entry has been
        removed.
        """
        if item.md5 is None:
            return None
        directory = self._entry_dir(item)
        if (directory / VERIFIED).exists():
            return True
        digest = hashlib.md5()
        try:
            for index in range(item.blocks):
                if stop is not None and stop.is_set():
                    return None
                block = self.get(item, index)
                if block is None:
                    return None
                digest.update(block)
        except Damaged:
            return None  # that block is gone: it will be fetched and checked again
        if digest.hexdigest() != item.md5.lower():
            self.remove(item)
            return False
        with contextlib.suppress(FileNotFoundError):  # pruned meanwhile: check again later
            self._write(directory, VERIFIED, b"", b"")
        return True

    def remove(self, item: Entry) -> None:
        shutil.rmtree(self._entry_dir(item), ignore_errors=True)

    # -- size, eviction ---------------------------------------------------------------------

    def _blocks(self) -> Iterator[_Block]:
        """Every block file (and stale temporary files, which are removed on the way)."""
        now = time.time()
        for entry_dir in _subdirs(self.base, depth=2):
            for item in _scan(entry_dir):
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if item.name.startswith(TMP_PREFIX):
                    if now - st.st_mtime > STALE_TMP:
                        _unlink(item.path)
                    continue
                if item.name != VERIFIED and stat.S_ISREG(st.st_mode):
                    yield _Block(st.st_mtime, st.st_size, item.path)

    def usage(self) -> Usage:
        total = count = 0
        entries: set[str] = set()
        for block in self._blocks():
            total += block.size
            count += 1
            entries.add(os.path.dirname(block.path))
        return Usage(total, count, len(entries))

    def budget(self, used: int, max_bytes: int) -> int:
        """The most the cache may hold: ``max_bytes``, less what the floor of free space
        on its filesystem takes (``used``: what the cache holds now)."""
        fs = os.statvfs(self.base)
        free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
        floor = min(FLOOR_BYTES, int(total * FLOOR_FRACTION))
        return max(0, min(max_bytes, used + free - floor))

    def prune(self, max_bytes: int) -> Usage | None:
        """Remove least recently used blocks until at most ``max_bytes`` remain.

        Returns what remains, or None if another process is pruning right now.
        """
        with self._prune_lock() as locked:
            if not locked:
                return None
            blocks = sorted(self._blocks(), key=lambda b: b.mtime)
            total = sum(b.size for b in blocks)
            emptied: set[str] = set()
            removed = 0
            for block in blocks:
                if total <= max_bytes:
                    break
                _unlink(block.path)
                total -= block.size
                removed += 1
                emptied.add(os.path.dirname(block.path))
            for directory in emptied:
                _remove_if_empty(directory)
            left = blocks[removed:]
            return Usage(total, len(left), len({os.path.dirname(b.path) for b in left}))

    def clear(self) -> Usage:
        """Remove every entry; returns what was removed."""
        removed = self.usage()
        for shard in _subdirs(self.base, depth=1):
            shutil.rmtree(shard, ignore_errors=True)
        return removed

    @contextlib.contextmanager
    def _prune_lock(self) -> Iterator[bool]:
        fd = os.open(self.root / ".prune.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC,
                     self.file_mode)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def _header(item: Entry, index: int, data: bytes | bytearray | memoryview) -> bytes:
    prefix = _HEADER.pack(MAGIC, len(data), index, item.digest, 0)[:-4]
    return prefix + struct.pack("<I", zlib.crc32(data, zlib.crc32(prefix)))


def _check(head: bytearray, data: bytearray, got: int, item: Entry, index: int) -> str | None:
    """Why a block read back is not the block wanted (None: it is)."""
    if got != HEADER_SIZE + len(data):
        return f"{got} bytes, expected {HEADER_SIZE + len(data)}"
    magic, length, stored_index, digest, crc = _HEADER.unpack(head)
    if magic != MAGIC or length != len(data):
        return "not a block of this format"
    if stored_index != index or digest != item.digest:
        return "a block of another file or position"
    if zlib.crc32(data, zlib.crc32(head[:-4])) != crc:
        return "checksum mismatch"
    return None


def _write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _scan(path: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _subdirs(path: str | Path, depth: int) -> Iterator[str]:
    for item in _scan(path):
        if item.is_dir(follow_symlinks=False):
            if depth == 1:
                yield item.path
            else:
                yield from _subdirs(item.path, depth - 1)


def _remove_if_empty(directory: str) -> None:
    """Remove an entry left with nothing but its mark (a writer may race: then keep it)."""
    names = [item.name for item in _scan(directory)]
    if names and names != [VERIFIED]:
        return
    if names:
        _unlink(os.path.join(directory, VERIFIED))
    with contextlib.suppress(OSError):  # ENOTEMPTY: a block just arrived
        os.rmdir(directory)


# -- where the cache lives ------------------------------------------------------------------

# Filesystems a cache should not default to: the bytes would cross a network again, and
# renames, mtimes and locks behave differently from one client to the next.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "afs", "9p", "panfs", "fuse.gcsfuse",
    "fuse.s3fs", "fuse.rclone", "fuse.flowfs", "orangefs", "pvfs2", "wekafs", "fuse.juicefs",
})


_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo escapes spaces and such as \040


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (its nearest existing ancestor)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(errors="replace")
        except OSError:
            return None
    target = os.path.realpath(path)  # resolves the parts that exist
    best, fstype = "", None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, right.split(" ", 1)[0]
    return fstype


def is_network_fs(fstype: str | None) -> bool:
    return fstype is not None and fstype in NETWORK_FS
