"""The persistent disk cache: verified blocks of Flow files, shared safely between mounts.

Flow's bytes under one data id never change, and the server gives each file's size and
md5. So a block is keyed by *what the bytes are*: an entry is named by a digest of
(data id, size, md5, block size). Should the server ever report another size or md5 for
an id, the key changes and the old blocks are simply never looked at again (eviction
removes them).

An entry's blocks live in *extent files* of up to ``EXTENT_BLOCKS`` blocks each (8 MiB
with 256 KiB blocks): one file per extent, not per block, so a run of blocks is written
with one ``pwritev`` (past the page cache: a ``pwrite`` per MiB) and read back with one
``preadv``, and the kernel's read-ahead works across it. An extent file is sparse: a
table of block headers in its first 4 KiB, then block ``j`` of the extent at
``4096 + j * block_size``, where it is absent (a hole) until written. Layout under the
cache directory (format 2)::

    v2/<2 hex>/<32 hex digest>/<extent index>  up to 32 blocks: header table, then bytes
    v2/<2 hex>/<32 hex digest>/verified        the complete file once matched Flow's md5
    .prune.lock                                one pruning pass at a time

Invariants, each relied upon by readers that share the directory:

1. A block's header is written only after its bytes, and holds the CRC-32 of them: a
   block whose header is not there (a writer killed in between, or a hole) is absent,
   and one whose bytes were not all written (a crash of the machine that lost a page)
   fails its check. Two writers of one block write the same bytes to the same place.
2. A block is returned only if its header names this entry and index, its length is the
   one the file's size implies, and the CRC-32 of header and bytes matches. Anything else
   (a flipped bit, a truncation, a file moved under another name) is *damage*: its header
   is cleared and the caller fetches the block again. A damaged cache never yields a
   wrong byte (short of deliberate forgery: see docs/architecture.md).
3. Nothing is locked for reading or writing. Pruning takes a lock only against other
   pruners; deleting a file another process reads or writes is harmless on POSIX (its
   open descriptor keeps the bytes; what it writes there is lost, and fetched again).
4. Least recently used goes first, an extent at a time: an extent file's mtime is when
   it was last written or read (reads refresh it at most once a minute).

Blocks' bytes are written past the page cache (``O_DIRECT``: :mod:`flowfs.directio`) where
the cache's filesystem takes it and it is a disk (not a network or memory filesystem);
headers, and every read, go through the page cache, and the md5 check drops the pages it
read. The bytes are in memory twice already (the daemon's block cache and the mounted
file's page cache): a third copy in the page cache only pushed the user's own files out
of memory and cost CPU.

Everything here is blocking file I/O: callers run it in worker threads. The store's only
mutable state is whether it writes directly (turned off, never on, by a refused write),
so any number of threads may use one instance.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowfs import directio
from flowfs.extentfile import (
    EXTENT_BLOCKS,
    Buffer,
    Entry,
    clear_headers,
    count_blocks,
    data_at,
    entry,
    extents,
    header_at,
    holds,
    read_run,
    write_run,
)

log = logging.getLogger(__name__)

__all__ = ["Damaged", "Entry", "Found", "Place", "Store", "Usage", "entry",
           "filesystem_type", "is_memory_fs", "is_network_fs"]

FORMAT = "v2"
OLD_FORMATS = ("v1",)  # removed by pruning and clearing: no version reads them any more
VERIFIED = "verified"
TOUCH_AFTER = 60.0  # seconds: how stale an extent's mtime may get before a read refreshes it
GiB = 2**30
FLOOR_BYTES = GiB  # never leave less free than this on the cache's filesystem...
FLOOR_FRACTION = 0.05  # ...or, on a small one, than this share of it (the smaller of both)

PRIVATE_MODES = (0o700, 0o600)  # directories, files
GROUP_MODES = (0o2770, 0o660)  # setgid: new entries keep the shared directory's group
# (files group-writable so that any member's reads refresh an extent's mtime, which needs
# write permission, and any member may add blocks to an extent another member began)


class Damaged(Exception):
    """A block exists but fails its checks; it has been cleared (where we may write)."""



@dataclass(frozen=True)
class Place:
    """Where block ``index`` of an entry lives: its extent file, header and bytes."""

    path: Path
    header_at: int
    data_at: int


@dataclass(frozen=True)
class Usage:
    """What a cache directory holds."""

    bytes: int = 0  # allocated on disk, header tables included
    blocks: int = 0
    entries: int = 0


@dataclass
class Found:
    """What the disk gave for a run of blocks: a buffer or None each, and what went wrong."""

    blocks: list[bytearray | None] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # why each damaged block was refused
    errors: list[OSError] = field(default_factory=list)  # extents the disk would not read


@dataclass(frozen=True)
class _Extent:
    mtime: float
    size: int  # allocated bytes
    path: str


class Store:
    """A cache directory (see the module docstring). ``shared``: group-writable modes.
    ``direct``: write blocks' bytes past the page cache where the filesystem takes it
    (:mod:`flowfs.directio`; found out by :meth:`open`)."""

    def __init__(self, root: Path, *, shared: bool = False, direct: bool = False) -> None:
        self.root = root
        self.base = root / FORMAT
        self.dir_mode, self.file_mode = GROUP_MODES if shared else PRIVATE_MODES
        self._want_direct = direct
        # Whether blocks' bytes are written past the page cache. Set by open(); turned
        # off for good if a write is refused after all. The only state a store keeps: a
        # thread that still writes directly after another turned it off is refused too,
        # and writes through the page cache as well.
        self.direct = False

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
        writable = os.access(self.base, os.W_OK | os.X_OK)
        self.direct = writable and self._want_direct and directio.supported(self.base)
        return writable

    def _mkdir(self, path: Path) -> None:
        try:
            os.mkdir(path, self.dir_mode)
        except FileExistsError:
            return
        with contextlib.suppress(FileNotFoundError):  # a pruner took it (it was empty)
            os.chmod(path, self.dir_mode)  # mkdir's mode went through the umask

    def _entry_dir(self, item: Entry) -> Path:
        return self.base / item.name[:2] / item.name

    def place(self, item: Entry, index: int) -> Place:
        """Where block ``index`` of ``item`` is kept (whether or not it is there)."""
        item.block_length(index)  # raises IndexError outside the file
        return Place(self._entry_dir(item) / str(index // EXTENT_BLOCKS), header_at(index),
                     data_at(item, index))

    # -- runs of blocks ------------------------------------------------------------------

    def read(self, item: Entry, indices: range,
             into: Sequence[bytearray | None] | None = None, *,
             until_gap: bool = False, forget: bool = False) -> Found:
        """Blocks ``indices`` of ``item``: each a buffer, or None (absent or damaged).

        ``into``: a buffer per block, of exactly its length or None, to read into (a
        buffer's old content is overwritten entirely, or the block is damage).
        ``until_gap``: none is read after the first that is absent (None for those).
        ``forget``: drop the extents' pages from the page cache after reading them (a read
        nobody will repeat, of bytes written past the page cache: the md5 check).
        """
        if into is None:
            into = [None] * len(indices)
        found = Found()
        for run in extents(indices):
            if until_gap and None in found.blocks:
                found.blocks.extend([None] * len(run))
                continue
            first = run.start - indices.start
            self._read_extent(item, run, into[first : first + len(run)], found, until_gap,
                              forget)
        return found

    def _read_extent(self, item: Entry, run: range, into: Sequence[bytearray | None],
                     found: Found, until_gap: bool = False, forget: bool = False) -> None:
        path = self.place(item, run.start).path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            found.blocks.extend([None] * len(run))
            return
        except OSError as exc:
            found.errors.append(exc)
            found.blocks.extend([None] * len(run))
            return
        damaged: dict[int, str] = {}
        try:
            blocks = read_run(fd, item, run, into, damaged, until_gap)
            _touch(fd)
        except OSError as exc:
            found.errors.append(exc)
            blocks = [None] * len(run)
        finally:
            if forget:
                # A hint, whose failure costs nothing read; the bytes only: the header
                # table stays cached (and may still be dirty, which the hint would flush).
                with contextlib.suppress(OSError):
                    os.posix_fadvise(fd, data_at(item, run.start), 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        found.blocks.extend(blocks)
        if damaged:
            found.damaged.extend(f"{path}: block {i}: {why}" for i, why in damaged.items())
            clear_headers(path, list(damaged))

    def write_run(self, item: Entry, first: int, blocks: Sequence[Buffer]
                  ) -> tuple[int, OSError | None]:
        """Store blocks from ``first`` on; how many were, and the error that stopped it."""
        for i, block in enumerate(blocks):
            if len(block) != item.block_length(first + i):
                raise ValueError(f"block {first + i}: {len(block)} bytes, expected "
                                 f"{item.block_length(first + i)}")
        done = 0
        for run in extents(range(first, first + len(blocks))):
            part = blocks[run.start - first : run.stop - first]
            try:
                self._write_extent(item, run, part)
            except OSError as exc:
                return done, exc
            done += len(run)
        return done, None

    def _write_extent(self, item: Entry, run: range, blocks: Sequence[Buffer]) -> None:
        fd = self._open_extent(self.place(item, run.start).path)
        try:
            if not (self.direct and directio.aligned(item.block_size)
                    and self._wrote_directly(fd, item, run, blocks)):
                write_run(fd, item, run, blocks)
        finally:
            os.close(fd)

    def _wrote_directly(self, fd: int, item: Entry, run: range,
                        blocks: Sequence[Buffer]) -> bool:
        """Write a run past the page cache; False where the filesystem refused it (direct
        writes are then off for good, and the caller writes the run the ordinary way)."""
        try:
            write_run(fd, item, run, blocks, directio.pwrite)
        except OSError as exc:
            if exc.errno not in directio.REFUSED:
                raise
            self.direct = False
            log.info("disk cache: %s refused a direct write (%s); writing through the page "
                     "cache", self.root, exc.strerror)
            return False
        return True

    def _open_extent(self, path: Path) -> int:
        """Open an extent file to write, made (with our mode) if missing.

        A pruner may remove the file, or its emptied directory, at any moment: each is
        made again, a few times at most.
        """
        flags = os.O_RDWR | os.O_CLOEXEC
        for attempt in range(8):
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, self.file_mode)
            except FileExistsError:
                try:
                    return os.open(path, flags)
                except FileNotFoundError:
                    continue  # pruned just now
            except FileNotFoundError:
                if attempt == 7:
                    raise
                self._mkdir(path.parent.parent)
                self._mkdir(path.parent)
                continue
            self._own_mode(fd)
            return fd
        raise FileNotFoundError(errno.ENOENT, "removed as often as it was made", str(path))

    def _own_mode(self, fd: int) -> None:
        """Give a file this cache's mode: the umask may have taken group bits at creation."""
        if self.file_mode & 0o077:
            with contextlib.suppress(OSError):
                os.fchmod(fd, self.file_mode)

    def holds(self, item: Entry, index: int) -> bool:
        """Whether block ``index`` of ``item`` is here, as its header says (a cheap look:
        :meth:`read` still checks the bytes)."""
        try:
            fd = os.open(self.place(item, index).path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return holds(fd, index)
        except OSError:
            return False
        finally:
            os.close(fd)

    # -- single blocks ---------------------------------------------------------------------

    def get(self, item: Entry, index: int, into: bytearray | None = None) -> bytearray | None:
        """Block ``index`` of ``item``: None if absent; raises :class:`Damaged` if bad."""
        length = item.block_length(index)
        if into is not None and len(into) != length:
            raise ValueError(f"a buffer of {len(into)} bytes for a block of {length}")
        found = self.read(item, range(index, index + 1), [into])
        if found.damaged:
            raise Damaged(found.damaged[0])
        if found.errors:
            raise found.errors[0]
        return found.blocks[0]

    def put(self, item: Entry, index: int, data: Buffer) -> None:
        """Store block ``index``. Raises OSError (ENOSPC, EROFS, ...)."""
        _, error = self.write_run(item, index, [data])
        if error is not None:
            raise error

    # -- whole files -----------------------------------------------------------------------

    def verify(self, item: Entry, stop: threading.Event | None = None) -> bool | None:
        """Check a complete entry against Flow's md5 once.

        True: it matches (now or before: a ``verified`` mark); None: no md5, blocks are
        missing or damaged, or ``stop`` was set; False: it does not match, and the entry
        has been removed.
        """
        if item.md5 is None:
            return None
        directory = self._entry_dir(item)
        if (directory / VERIFIED).exists():
            return True
        digest = hashlib.md5()
        for start in range(0, item.blocks, EXTENT_BLOCKS):
            if stop is not None and stop.is_set():
                return None
            # Written past the page cache, the bytes come back from the disk for this
            # check once: leave the page cache as the writes left it.
            found = self.read(item, range(start, min(start + EXTENT_BLOCKS, item.blocks)),
                              forget=self.direct)
            if found.errors:
                raise found.errors[0]
            for block in found.blocks:
                if block is None:
                    return None  # absent or damaged: fetched and checked again later
                digest.update(block)
        if digest.hexdigest() != item.md5.lower():
            self.remove(item)
            return False
        with contextlib.suppress(FileNotFoundError):  # pruned meanwhile: check again later
            fd = os.open(directory / VERIFIED, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                         self.file_mode)
            self._own_mode(fd)
            os.close(fd)
        return True

    def remove(self, item: Entry) -> None:
        shutil.rmtree(self._entry_dir(item), ignore_errors=True)

    # -- size, eviction ---------------------------------------------------------------------

    def _extent_files(self) -> Iterator[_Extent]:
        for entry_dir in _subdirs(self.base, depth=2):
            for item in _scan(entry_dir):
                if not item.name.isdigit():
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield _Extent(st.st_mtime, st.st_blocks * 512, item.path)

    def used_bytes(self) -> int:
        """What the extents take on the disk (a scan of names and sizes only)."""
        return sum(extent.size for extent in self._extent_files())

    def usage(self) -> Usage:
        total = count = 0
        entries: set[str] = set()
        for extent in self._extent_files():
            total += extent.size
            count += count_blocks(extent.path)
            entries.add(os.path.dirname(extent.path))
        return Usage(total, count, len(entries))

    def budget(self, used: int, max_bytes: int) -> int:
        """The most the cache may hold: ``max_bytes``, less what the floor of free space
        on its filesystem takes (``used``: what the cache holds now)."""
        fs = os.statvfs(self.base)
        free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
        floor = min(FLOOR_BYTES, int(total * FLOOR_FRACTION))
        return max(0, min(max_bytes, used + free - floor))

    def prune(self, max_bytes: int) -> Usage | None:
        """Remove least recently used extents until at most ``max_bytes`` remain.

        Returns what remains, or None if another process is pruning right now.
        """
        with self._prune_lock() as locked:
            if not locked:
                return None
            self._remove_old_formats()
            extents = sorted(self._extent_files(), key=lambda e: e.mtime)
            total = sum(e.size for e in extents)
            emptied: set[str] = set()
            removed = 0
            for extent in extents:
                if total <= max_bytes:
                    break
                _unlink(extent.path)
                total -= extent.size
                removed += 1
                emptied.add(os.path.dirname(extent.path))
            for directory in emptied:
                _remove_if_empty(directory)
            left = extents[removed:]
            return Usage(total, sum(count_blocks(e.path) for e in left),
                         len({os.path.dirname(e.path) for e in left}))

    def clear(self) -> Usage:
        """Remove every entry; returns what was removed."""
        removed = self.usage()
        for shard in _subdirs(self.base, depth=1):
            shutil.rmtree(shard, ignore_errors=True)
        self._remove_old_formats()
        return removed

    def _remove_old_formats(self) -> None:
        for old in OLD_FORMATS:
            shutil.rmtree(self.root / old, ignore_errors=True)

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


def _touch(fd: int) -> None:
    """Refresh an extent's mtime (its place in the eviction order), at most once a minute."""
    with contextlib.suppress(OSError):  # a read-only cache still serves what it read
        if time.time() - os.fstat(fd).st_mtime > TOUCH_AFTER:
            os.utime(fd)


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


def is_memory_fs(fstype: str | None) -> bool:
    """Whether a filesystem keeps its files in memory (there is no page cache to bypass)."""
    return fstype in ("tmpfs", "ramfs")


def is_network_fs(fstype: str | None) -> bool:
    return fstype is not None and fstype in NETWORK_FS
