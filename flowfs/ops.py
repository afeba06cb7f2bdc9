"""The FUSE boundary: resolve an inode or handle, ask the tree or reader, answer.

Handlers hold no logic of their own. ``@fuse_errors`` is the one place that
turns exceptions into errno: domain errors through ``errors.errno_for``, and
anything unexpected into ``EIO`` with a logged traceback (an exception other
than ``FUSEError`` escaping a handler would take the whole mount down).
"""

from __future__ import annotations

import copy
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import pyfuse3
from pyfuse3 import EntryAttributes, FileHandleT, FileInfo, FUSEError, InodeT

from flowfs.downloads import Downloads
from flowfs.errors import FlowError, NotFound, ReadOnly, errno_for
from flowfs.failures import Failures
from flowfs.inodes import InodeTable
from flowfs.nodes import ControlFile, DirNode, FileNode, Node, TextFile
from flowfs.reader import Reader, Stream
from flowfs.tree import Tree

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
BLKSIZE = 128 * 1024


def fuse_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Map every exception of a handler to a FUSEError (the only kind pyfuse3 accepts).

    At DEBUG, every operation is logged once it is answered: its arguments, its outcome
    and how long it took (what ``--debug`` shows instead of libfuse's raw dump).
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.monotonic()
        outcome = "ok"
        try:
            return await fn(*args, **kwargs)
        except FUSEError as exc:
            outcome = errno.errorcode.get(exc.errno, str(exc.errno))
            raise
        except Exception as exc:
            code = errno_for(exc)
            if code is None:
                log.exception("unexpected error in %s", fn.__name__)
                code = errno.EIO
            elif code == errno.EIO:
                log.warning("%s failed: %s", fn.__name__, exc)
            else:
                log.debug("%s: %s", fn.__name__, exc)
            outcome = errno.errorcode.get(code, str(code))
            _record(args, fn.__name__, code, exc)
            raise FUSEError(code) from None
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s(%s) %s %.1f ms", fn.__name__,
                          _arguments(args[1:], names=fn.__name__ != "write"), outcome,
                          (time.monotonic() - started) * 1000)

    return wrapper


def _record(args: Sequence[Any], operation: str, code: int, exc: Exception) -> None:
    """Count a failure on the mount's record (``args[0]`` is the handler's ``self``)."""
    failures = getattr(args[0], "failures", None) if args else None
    if isinstance(failures, Failures):
        failures.record(operation, code, str(exc) or type(exc).__name__)


def _arguments(args: Sequence[Any], names: bool) -> str:
    """A handler's arguments for the log: numbers and names; of data, only its size."""
    shown = []
    for arg in args:
        if isinstance(arg, bool | int):
            shown.append(str(arg))
        elif isinstance(arg, bytes):
            shown.append(repr(os.fsdecode(arg)) if names else f"<{len(arg)} bytes>")
        elif isinstance(arg, list | tuple):
            shown.append(f"<{len(arg)} items>")
    return ", ".join(shown)


def _located(exc: FlowError, where: str) -> FlowError:
    """The same error (so the same errno) with the path and data id it concerns.

    A copy: one failed fetch's error object is shared by every read that waited on it.
    """
    located = copy.copy(exc)
    located.args = (f"{where}: {exc}",)
    return located


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
RENAME_NOREPLACE = 1  # renameat2(2)'s flag, as the kernel passes it


@dataclass(frozen=True)
class Listing:
    """An open directory: its inode and its entries as of ``opendir``."""

    inode: int
    entries: list[tuple[str, Node]]


@dataclass(eq=False)  # compared by identity: two opens of one file are two writers
class OpenFile:
    node: Node
    stream: Stream | None
    snapshot: bytes | None = None  # in-memory files: the content as of open()
    writer: bool = False


Handle = Listing | OpenFile  # what a file handle number stands for
H = TypeVar("H", Listing, OpenFile)


def _downloads_writer(handle: OpenFile) -> bool:
    """Whether ``handle`` writes in `.downloads/` (the only other writable files,
    `.flowfs/`'s control files, answer each write at once and keep no writer)."""
    return handle.writer and not isinstance(handle.node, ControlFile)


class Operations(pyfuse3.Operations):
    """pyfuse3 handlers over a :class:`Tree`, a :class:`Reader` and :class:`Downloads`."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, tree: Tree, inodes: InodeTable[Node], reader: Reader,
                 downloads: Downloads, *, uid: int, gid: int, ttl: float, umask: int = 0o022,
                 failures: Failures | None = None) -> None:
        super().__init__()
        self.failures = failures or Failures()  # what `flowfs status` shows of errors
        self.tree = tree
        self.inodes = inodes
        self.reader = reader
        self.downloads = downloads  # everything written outside .flowfs/'s control files
        self.uid = uid
        self.gid = gid
        self.ttl = ttl
        self.umask = umask
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1

    # -- helpers ---------------------------------------------------------------
    def attributes(self, node: Node) -> EntryAttributes:
        attr = EntryAttributes()
        attr.st_ino = cast(InodeT, node.inode)
        kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        attr.st_mode = kind | node.permissions(self.umask)
        # A data file has two names at least, its place and by-id/<id>, and often more
        # (samples/ and projects/): one inode shown with a link count of 2 is what du,
        # rsync -H, cp -a and tar need to take it once (they ignore inodes of count 1).
        shared = isinstance(node, FileNode) and node.kind == "data"
        attr.st_nlink = 2 if node.is_dir or shared else 1
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_size = node.size
        attr.st_blocks = node.blocks
        attr.st_blksize = BLKSIZE
        ns = int(node.mtime * 1e9)
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = ns
        timeout = 0.0 if node.volatile else self.ttl
        attr.entry_timeout = attr.attr_timeout = timeout
        if node.entry_ttl is not None:
            attr.entry_timeout = node.entry_ttl
        return attr

    def _new_handle(self, handle: Handle) -> FileHandleT:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return cast(FileHandleT, fh)

    def _handle(self, fh: int, kind: type[H]) -> H:
        """The open directory or file ``fh`` stands for (EBADF if none, or another kind)."""
        handle = self._handles.get(fh)
        if not isinstance(handle, kind):
            raise FUSEError(errno.EBADF)
        return handle

    def _dir(self, inode: int) -> DirNode:
        node = self.tree.node(inode)
        if not isinstance(node, DirNode):
            raise FUSEError(errno.ENOTDIR)
        return node

    # -- names -----------------------------------------------------------------
    @fuse_errors
    async def lookup(self, parent_inode: InodeT, name: bytes, ctx: Any = None) -> EntryAttributes:
        node = await self._dir(parent_inode).lookup(os.fsdecode(name))
        self.inodes.remember(node.inode, under=(parent_inode, os.fsdecode(name)))
        return self.attributes(node)

    @fuse_errors
    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        for inode, count in inode_list:
            node = self.inodes.forget(inode, count)
            if node is not None:  # the kernel's last reference: what it alone needed goes
                node.forgotten()
        # Much of what was browsed gone: its memory goes back to the system.
        self.tree.forgotten(much=self.inodes.shrunk())

    @fuse_errors
    async def getattr(self, inode: InodeT, ctx: Any = None) -> EntryAttributes:
        return self.attributes(self.tree.node(inode))

    @fuse_errors
    async def opendir(self, inode: InodeT, ctx: Any) -> FileHandleT:
        entries = await self._dir(inode).entries()
        # a snapshot: offsets stay valid
        return self._new_handle(Listing(inode, list(entries.items())))

    @fuse_errors
    async def readdir(self, fh: FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._handle(fh, Listing)
        for index in range(start_id, len(listing.entries)):
            name, node = listing.entries[index]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.attributes(node),
                                         index + 1):
                break
            # readdirplus counts as a lookup
            self.inodes.remember(node.inode, under=(listing.inode, name))

    @fuse_errors
    async def releasedir(self, fh: FileHandleT) -> None:
        self._handles.pop(fh, None)

    # -- reading ---------------------------------------------------------------
    @fuse_errors
    async def open(self, inode: InodeT, flags: int, ctx: Any) -> FileInfo:
        node = self.tree.node(inode)
        if node.is_dir:
            raise FUSEError(errno.EISDIR)
        writer = bool(flags & WRITE_FLAGS)
        if writer and not node.mode & 0o200:
            raise ReadOnly("read-only file system")
        return self._open_handle(node, writer, flags)

    def _open_handle(self, node: Node, writer: bool, flags: int) -> FileInfo:
        stream = self.reader.open(node) if isinstance(node, FileNode) else None
        handle = OpenFile(node, stream, writer=writer)
        if isinstance(node, TextFile) and not node.live:
            handle.snapshot = node.content
        if _downloads_writer(handle):  # EBUSY while another open file writes it
            self.downloads.open(node, handle, truncate=bool(flags & os.O_TRUNC))
        info = FileInfo(fh=self._new_handle(handle))
        info.keep_cache = node.keep_cache and not node.volatile
        info.direct_io = node.direct_io
        return info

    @fuse_errors
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        handle = self._handle(fh, OpenFile)
        if handle.snapshot is not None:
            return handle.snapshot[off:off + size]
        if isinstance(handle.node, TextFile):
            return handle.node.read(off, size)
        if handle.stream is None:
            raise NotFound("not a readable file")
        try:
            return await self.reader.read(handle.stream, off, size)
        except FlowError as exc:
            if isinstance(exc, NotFound):  # 404/410: gone; the listings showing it are stale
                self.tree.expire()
            node = handle.node
            data_id = node.data.id if isinstance(node, FileNode) else "?"
            where = f"{self.inodes.path(node.inode)} (data id {data_id}) at {off}+{size}"
            raise _located(exc, where) from None

    @fuse_errors
    async def flush(self, fh: FileHandleT) -> None:
        """close(2): what the writer of a manifest wrote is submitted; errors reach close."""
        handle = self._handle(fh, OpenFile)
        if _downloads_writer(handle):
            await self.downloads.flush(handle.node, handle)

    @fuse_errors
    async def release(self, fh: FileHandleT) -> None:
        handle = self._handles.pop(fh, None)
        if not isinstance(handle, OpenFile):
            return
        if handle.stream is not None:
            self.reader.close(handle.stream)
        if _downloads_writer(handle):
            await self.downloads.release(handle.node, handle)

    # -- writing: .flowfs/'s control files, and .downloads/ --------------------------
    @fuse_errors
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        handle = self._handle(fh, OpenFile)
        if not handle.writer:
            raise ReadOnly("read-only file system")
        if isinstance(handle.node, ControlFile):
            await handle.node.command(buf)
            return len(buf)
        return await self.downloads.write(handle.node, handle, off, buf)

    @fuse_errors
    async def setattr(self, inode: InodeT, attr: EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: FileHandleT | None, ctx: Any) -> EntryAttributes:
        node = self.tree.node(inode)
        if isinstance(node, ControlFile):  # `echo PATH > .flowfs/refresh` truncates first
            return self.attributes(node)
        holder = self._handles.get(fh) if fh is not None else None
        self.downloads.setattr(node, holder, attr.st_size if fields.update_size else None)
        return self.attributes(node)

    @fuse_errors
    async def create(self, parent_inode: InodeT, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[FileInfo, EntryAttributes]:
        node = self.downloads.create(self._dir(parent_inode), os.fsdecode(name))
        info = self._open_handle(node, True, flags)
        self.inodes.remember(node.inode, under=(parent_inode, os.fsdecode(name)))
        return info, self.attributes(node)

    @fuse_errors
    async def unlink(self, parent_inode: InodeT, name: bytes, ctx: Any) -> None:
        await self.downloads.unlink(self._dir(parent_inode), os.fsdecode(name))

    @fuse_errors
    async def rename(self, parent_inode_old: InodeT, name_old: bytes, parent_inode_new: InodeT,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        """Only in `.downloads/`: a draft renamed to ``<name>.manifest`` is submitted."""
        await self.downloads.rename(
            self._dir(parent_inode_old), os.fsdecode(name_old),
            self._dir(parent_inode_new), os.fsdecode(name_new),
            replace=not flags & RENAME_NOREPLACE, plain=not flags & ~RENAME_NOREPLACE)

    @fuse_errors
    async def mkdir(self, parent_inode: InodeT, name: bytes, mode: int,
                    ctx: Any) -> EntryAttributes:
        self.downloads.mkdir(self._dir(parent_inode))

    # -- attributes --------------------------------------------------------------
    @fuse_errors
    async def getxattr(self, inode: InodeT, name: bytes, ctx: Any) -> bytes:
        value = self.tree.node(inode).xattrs().get(os.fsdecode(name))
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_errors
    async def listxattr(self, inode: InodeT, ctx: Any) -> Sequence[bytes]:
        return [os.fsencode(n) for n in self.tree.node(inode).xattrs()]

    @fuse_errors
    async def access(self, inode: InodeT, mode: int, ctx: Any) -> bool:
        node = self.tree.node(inode)
        if mode & os.W_OK and not (node.mode & 0o200):
            raise ReadOnly("read-only file system")
        return True

    @fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = BLKSIZE
        st.f_blocks = st.f_bfree = st.f_bavail = 0
        st.f_files = len(self.inodes)
        st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st

    # -- everything that would change something: read-only ---------------------
    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise FUSEError(errno.EROFS)

    mknod = _read_only
    rmdir = _read_only
    symlink = _read_only
    link = _read_only
    setxattr = _read_only
    removexattr = _read_only
