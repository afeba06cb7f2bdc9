"""The nodes of the tree: anything with an inode, and the plain ones.

Nodes are plain objects; ``ops`` turns them into FUSE answers. A node knows the
``Tree`` that made it, as an ``Owner`` (its inode table, its API, when the mount started); the
directories whose entries come from Flow are in ``listing`` (the rules of every
remote listing) and ``flowdirs``/``byid`` (what each of Flow's directories lists).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from flowfs.errors import NotFound
from flowfs.model import DataFile

if TYPE_CHECKING:  # types only, from below: the api and the tables the owner hands on
    from flowfs.api import FlowAPI
    from flowfs.inodes import InodeTable
    from flowfs.namebook import NameBook


class Owner(Protocol):
    """What the nodes use of the ``Tree`` that made them (``flowfs.tree.Tree`` is one).

    Nodes name this, never the tree's module: the tree imports the nodes, not the reverse.
    """

    api: FlowAPI
    root: StaticDir
    inodes: InodeTable[Node]
    names: NameBook
    ttl: float
    io_timeout: float
    started: float
    generation: int
    invalidate: Callable[[int, str], None]

    def file_for(self, data: DataFile) -> FileNode: ...

    def forget_entry(self, parent: DirNode, name: str, node: Node) -> None: ...

    def walk_ahead(self, dirs: list[Any]) -> None: ...

    async def list_items(self, path: str, key: str, model: Any) -> list[Any]: ...

DIR_MODE = 0o555
FILE_MODE = 0o444


class Node:
    """Anything with an inode. Subclasses say whether they are a directory."""

    is_dir = False
    mode = FILE_MODE
    kind = ""  # user.flow.kind
    volatile = False  # True: the kernel must not cache its entry or attributes
    entry_ttl: float | None = None  # overrides the TTL of its name in the kernel's cache
    direct_io = False  # True: every read comes to us (content that changes)
    keep_cache = False  # True: bytes that never change: the page cache may keep them

    def __init__(self, tree: Owner, mtime: float, *, root: bool = False) -> None:
        self.tree = tree
        self.mtime = mtime
        self.inode = tree.inodes.add_root(self) if root else tree.inodes.add(self)

    def permissions(self, umask: int) -> int:
        """The permission bits shown: rclone's convention, 0777/0666 less the umask.

        Write bits on read-only things cost nothing (writes fail with EROFS) and make
        `cp -r` copies deletable. ``mode`` is what may really be done.
        """
        return (0o777 if self.is_dir else 0o666) & ~umask

    @property
    def size(self) -> int:
        return 0

    @property
    def blocks(self) -> int:
        return math.ceil(self.size / 512)

    def xattrs(self) -> dict[str, bytes]:
        return {}

    def forgotten(self) -> None:
        """The kernel let go of this node (its last lookup was forgotten).

        Nothing to do for most nodes: whoever else holds them (a listing) keeps them.
        """


class FileNode(Node):
    """A remote, immutable file: a data file (or, in .downloads/, an archive)."""

    keep_cache = True

    def __init__(self, tree: Owner, data: DataFile, kind: str = "data",
                 url: str | None = None, cache_key: str | None = None) -> None:
        super().__init__(tree, data.created)
        self.data = data
        self.kind = kind
        self.url = url or tree.api.data_url(data.id, _encodable(data.filename))
        # With the size: should an id ever come back with other bytes, old blocks can't mix in.
        self._cache_key = cache_key or f"{data.id}:{data.size}"

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def cache_key(self) -> str:
        return self._cache_key

    @property
    def disk_id(self) -> str:
        """The id its bytes are kept under in the disk cache: the data id; an archive's
        job id in a namespace of its own (job and data ids are separate sequences, so a
        job and a data file may share a number, and a size)."""
        return self.data.id if self.kind == "data" else f"{self.kind}:{self.data.id}"

    def xattrs(self) -> dict[str, bytes]:
        attrs = {"user.flow.id": self.data.id.encode(), "user.flow.url": self.url.encode(),
                 "user.flow.kind": self.kind.encode()}
        if self.data.md5:
            attrs["user.flow.md5"] = self.data.md5.encode()
        return attrs


def _encodable(text: str) -> str:
    """``text`` with unpaired surrogates (valid JSON, not UTF-8) as U+FFFD, so that a URL
    can be made of it: a server that sends such a name gets a request, not a crash."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class TextFile(Node):
    """A small file held in memory (README.txt)."""

    keep_cache = True
    kind = "text"
    live = False  # True: reads see the content as it is now, not as of open (being written)

    def __init__(self, tree: Owner, content: str | bytes, mtime: float | None = None) -> None:
        super().__init__(tree, tree.started if mtime is None else mtime)
        self._content = content.encode() if isinstance(content, str) else bytes(content)

    @property
    def content(self) -> bytes:
        return self._content

    @property
    def size(self) -> int:
        return len(self.content)

    def read(self, offset: int, size: int) -> bytes:
        return self.content[offset:offset + size]


class ControlFile(TextFile):
    """A file written to ask the daemon for something (``.flowfs/refresh``).

    Anyone who may enter the mount may write it (the request is harmless and bounded);
    reading it gives its help text. Each ``write(2)`` is one request, answered by
    ``command`` before the write returns, so its errors reach the writer.
    """

    mode = 0o666
    volatile = True
    direct_io = True

    def permissions(self, umask: int) -> int:
        # Anyone who may enter its directory (whose mode follows the umask) may ask.
        return self.mode

    async def command(self, data: bytes) -> None:
        raise NotImplementedError


class DirNode(Node):
    is_dir = True
    mode = DIR_MODE
    flow_id: str | None = None

    async def entries(self) -> dict[str, Node]:
        raise NotImplementedError

    async def lookup(self, name: str) -> Node:
        node = (await self.entries()).get(name)
        if node is None:
            raise NotFound(name)
        return node

    def xattrs(self) -> dict[str, bytes]:
        if self.flow_id is None:
            return {}
        return {"user.flow.id": self.flow_id.encode(), "user.flow.kind": self.kind.encode()}


class StaticDir(DirNode):
    """A directory whose children are fixed when it is made."""

    def __init__(self, tree: Owner, mtime: float, *, root: bool = False) -> None:
        super().__init__(tree, mtime, root=root)
        self.children: dict[str, Node] = {}

    async def entries(self) -> dict[str, Node]:
        return self.children

