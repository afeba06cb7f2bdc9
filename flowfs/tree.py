"""The directory tree of docs/design.md: remote listings, names and their TTLs.

Nodes are plain objects; ``ops`` turns them into FUSE answers. Directories
fetch their listing on first use and again once it is older than the TTL; a
refresh keeps the node (and so the inode) of every name whose identity stayed,
and tells the kernel to forget names that vanished or now mean something else.
A data id's bytes never change, so one ``FileNode`` per data id is shared by
every directory that shows it (and the kernel's page cache with it).

Every listing directory names its entries through the tree's ``NameBook`` under a
key of its own (``sample/60``): the same directory seen at two paths (a sample under
``projects/`` and under ``samples/``) shares its names, and a name once shown stays
with its item for as long as the item is listed, across remounts too.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from flowfs.api import FlowAPI
from flowfs.errors import FlowError, NotFound, Transient
from flowfs.inodes import InodeTable
from flowfs.memory import Release
from flowfs.model import DataFile, Execution, Project, Sample, is_id
from flowfs.namebook import NameBook
from flowfs.names import sanitize
from flowfs.tasks import gather

log = logging.getLogger(__name__)

DIR_MODE = 0o555
FILE_MODE = 0o444
WALK_AHEAD = 16  # listings fetched at once ahead of a walker
MAX_WALK_AHEAD = 10_000  # sub-directories listed ahead of one walk at most


class Node:
    """Anything with an inode. Subclasses say whether they are a directory."""

    is_dir = False
    mode = FILE_MODE
    kind = ""  # user.flow.kind
    volatile = False  # True: the kernel must not cache its entry or attributes
    entry_ttl: float | None = None  # overrides the TTL of its name in the kernel's cache
    direct_io = False  # True: every read comes to us (content that changes)
    keep_cache = False  # True: bytes that never change: the page cache may keep them

    def __init__(self, tree: Tree, mtime: float, *, root: bool = False) -> None:
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

    def __init__(self, tree: Tree, data: DataFile, kind: str = "data",
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

    def __init__(self, tree: Tree, content: str | bytes, mtime: float | None = None) -> None:
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

    def __init__(self, tree: Tree, mtime: float, *, root: bool = False) -> None:
        super().__init__(tree, mtime, root=root)
        self.children: dict[str, Node] = {}

    async def entries(self) -> dict[str, Node]:
        return self.children


@dataclass(frozen=True)
class Child:
    """One entry of a fresh listing: its name, what it is, and how to make its node."""

    name: str
    key: Hashable
    make: Callable[[], Node]


class ListingDir(DirNode):
    """A directory backed by a remote listing, cached for the tree's TTL.

    Walk-ahead: once the listings of two of its sub-directories have been fetched since
    its own (a walker: find, du, rsync, ``ls -R``, a pipeline stepping through samples),
    the rest of its sub-directories are listed in the background (``Tree.walk_ahead``),
    so a walk over a distant link waits for one round trip per batch, not per directory.
    A plain ``ls`` lists one directory and starts nothing.
    """

    def __init__(self, tree: Tree, mtime: float) -> None:
        super().__init__(tree, mtime)
        self._children: dict[str, Node] = {}
        self._keys: dict[str, Hashable] = {}
        self._fetched_at: float | None = None
        self._generation = tree.generation
        self._lock = trio.Lock()
        self.parent: ListingDir | None = None  # the listing that holds this one, if any
        self._walked = 0  # sub-directory listings fetched since this listing
        self._walk_started = False
        self._name_keys: set[str] = set()  # the NameBook keys its listings were named under

    async def _fetch(self) -> list[Child]:
        raise NotImplementedError

    @property
    def listed(self) -> dict[str, Node]:
        """The children of the last listing, without fetching (none if never listed)."""
        return self._children

    def outdate(self, min_age: float) -> bool:
        """For `flowfs refresh`: the next use fetches this listing again, unless it was
        fetched under ``min_age`` s ago (so repeated refreshes coalesce). Whether it was."""
        if self._fetched_at is None or time.monotonic() - self._fetched_at < min_age:
            return False
        self._fetched_at = -math.inf  # still listed once: a failed refetch serves the old one
        return True

    def _fresh(self) -> bool:
        return (
            self._fetched_at is not None
            and self._generation == self.tree.generation
            and time.monotonic() - self._fetched_at < self.tree.ttl
        )

    def listing_due(self) -> bool:
        """Neither fresh nor being refreshed: using it now would fetch its listing."""
        return not self._fresh() and not self._lock.locked()

    async def entries(self) -> dict[str, Node]:
        if self._fresh():
            return self._children
        if self._lock.locked() and self._fetched_at is not None:
            return self._children  # a refresh is under way: the last listing meanwhile
        try:
            # The deadline covers waiting for the lock too: no caller waits on a queue
            # of refreshes, each with a deadline of its own.
            with trio.fail_after(self.tree.io_timeout):
                async with self._lock:  # one refresh at a time; others wait and reuse it
                    if not self._fresh():
                        self._reconcile(await self._fetch())
                        self._fetched_at = time.monotonic()
                        self._generation = self.tree.generation
                        if self.parent is not None:
                            self.parent._sub_listed()
        except trio.TooSlowError:
            if self._fetched_at is None:
                raise Transient(
                    f"listing took longer than {self.tree.io_timeout:.0f} s") from None
            log.warning("serving a stale listing: the refresh timed out")
        except Transient as exc:
            if self._fetched_at is None:
                raise
            log.warning("serving a stale listing after: %s", exc)
        return self._children

    def forgotten(self) -> None:
        """The kernel holds this directory no more, so none of its entries either: the
        listing goes, and with it every node only it held. The next use fetches it
        again (as a first listing: the kernel has nothing of it to invalidate).

        A new dict, not a cleared one: a caller may be iterating over the old listing.
        """
        self._children, self._keys, self._fetched_at = {}, {}, None
        for key in self._name_keys:
            self.tree.names.release(key)
        self._name_keys = set()

    async def assign_names(self, key: str, items: Iterable[tuple[str, str]],
                           taken: Iterable[str] = ()) -> dict[str, str]:
        """Names for the items of this listing, from the tree's NameBook under ``key``."""
        self._name_keys.add(key)
        return await self.tree.names.assign(key, items, taken)

    def _reconcile(self, fresh: list[Child]) -> None:
        """Keep nodes whose name and identity stayed; invalidate the rest."""
        children: dict[str, Node] = {}
        keys: dict[str, Hashable] = {}
        for child in fresh:
            old = self._children.get(child.name)
            same = old is not None and self._keys.get(child.name) == child.key
            children[child.name] = old if same and old is not None else child.make()
            keys[child.name] = child.key
        first = self._fetched_at is None
        for name, node in self._children.items():
            if children.get(name) is not node:
                self.tree.forget_entry(self, name, node)
        if not first:
            for name in children.keys() - self._children.keys():
                self.tree.invalidate(self.inode, name)
        self._children, self._keys = children, keys
        for node in children.values():
            if isinstance(node, ListingDir):
                node.parent = self
        self._walked, self._walk_started = 0, False

    def _sub_listed(self) -> None:
        """A sub-directory's listing was fetched: a second one means a walk (class doc)."""
        self._walked += 1
        if self._walked >= 2 and not self._walk_started:
            self._walk_started = True
            self.tree.walk_ahead([node for _, node in sorted(self._children.items())
                                  if isinstance(node, ListingDir) and not node._fresh()])


class Tree:
    """Builds and owns the node graph of one mount."""

    def __init__(
        self,
        api: FlowAPI,
        inodes: InodeTable[Node],
        *,
        ttl: float,
        invalidate: Callable[[int, str], None],
        io_timeout: float = 60.0,
        names: NameBook | None = None,
        spawn: Callable[..., object] | None = None,
    ) -> None:
        self.api = api
        # Starts background tasks (the mount's nursery); None: no walk-ahead.
        self._spawn = spawn
        self.walk_ahead_listings = 0
        self.names = names or NameBook()  # without a store: names held for this mount only
        self.io_timeout = io_timeout  # no listing or lookup waits longer
        self.inodes = inodes
        self.ttl = ttl
        self.invalidate = invalidate
        self.started = time.time()
        self.generation = 0  # bumped to make every listing stale at once
        # Weak: a file's node lives while a listing shows it or the kernel holds it.
        self._files: weakref.WeakValueDictionary[str, FileNode] = weakref.WeakValueDictionary()
        self._release = Release(spawn)
        self.root = self._build_root()

    def _build_root(self) -> StaticDir:
        from flowfs.readme import ROOT_README

        root = StaticDir(self, self.started, root=True)
        root.children = {
            "README.txt": TextFile(self, ROOT_README),
            "projects": ProjectsDir(self, self.started),
            "samples": SamplesDir(self, self.started),
            "executions": ExecutionsDir(self, self.started),
            "data": LooseDataDir(self, self.started),
            "by-id": ByIdDir(self, self.started),
        }
        return root

    def add_root_entries(self, entries: dict[str, Node]) -> None:
        """Root entries other parts of the mount made (``.downloads``, ``.flowfs``):
        made once the tree exists, since every node needs it."""
        taken = sorted(entries.keys() & self.root.children.keys())
        if taken:
            raise ValueError(f"the root already has {', '.join(taken)}")
        self.root.children.update(entries)

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise NotFound(f"inode {ino}")
        return node

    def file_for(self, data: DataFile) -> FileNode:
        """The one node of a data id (its bytes never change), made on first sight."""
        node = self._files.get(data.id)
        if node is None or node.data.size != data.size or node.data.filename != data.filename:
            node = FileNode(self, data)
            self._files[data.id] = node
        return node

    def forgotten(self, much: bool) -> None:
        """The kernel forgot nodes; ``much``: much of the tree (``InodeTable.shrunk``).

        Then the index of files is copied into a table of its present size, and
        ``memory.Release`` returns what is free to the system, now and once the
        kernel's forgetting has settled.
        """
        if much:
            self._files = weakref.WeakValueDictionary(self._files)
            log.debug("compacting: the kernel forgot much of the tree")
        self._release.freed(much)

    def expire(self) -> None:
        """Something we showed is gone on the server: refresh listings on next use."""
        self.generation += 1

    def forget_entry(self, parent: DirNode, name: str, node: Node) -> None:
        """A name left a listing (or changed meaning): the kernel must look it up again.

        The node itself lives on only while the kernel holds it (``inodes``).
        """
        self.invalidate(parent.inode, name)

    def walk_ahead(self, dirs: list[ListingDir]) -> None:
        """List ``dirs`` in the background, ``WALK_AHEAD`` at a time (ListingDir's doc)."""
        if self._spawn is None or not dirs:
            return
        pending = iter(dirs[:MAX_WALK_AHEAD])

        async def worker() -> None:
            for directory in pending:
                if not directory.listing_due():
                    continue  # the walker got there first
                self.walk_ahead_listings += 1
                try:
                    await directory.entries()
                except FlowError as exc:  # the walker will meet it, and say so
                    log.debug("walk-ahead listing failed: %s", exc)

        for _ in range(min(WALK_AHEAD, len(dirs))):
            self._spawn(worker)

    async def list_items(self, path: str, key: str, model: Any) -> list[Any]:
        return [model.from_json(obj) for obj in await self.api.list_all(path, key)]


async def file_children(
    owner: ListingDir, key: str, files: Iterable[DataFile], taken: Iterable[str] = (),
    shown: dict[str, str] | None = None,
) -> list[Child]:
    """Children for data files of directory ``key``; directory-like data is skipped.

    ``shown`` overrides the name to show for some ids (an output path's last part).
    """
    by_id = {f.id: f for f in files if not f.is_directory}
    shown = shown or {}
    names = await owner.assign_names(
        key, ((i, shown.get(i, f.filename)) for i, f in by_id.items()), taken)
    return [
        Child(names[i], ("data", i, by_id[i].size), partial(owner.tree.file_for, by_id[i]))
        for i in by_id
    ]


# -- the directories of docs/design.md --------------------------------------------

class ProjectsDir(ListingDir):
    """projects/: owned ∪ shared."""

    async def _fetch(self) -> list[Child]:
        found: dict[str, list[Project]] = {}

        async def get(which: str) -> None:
            found[which] = await self.tree.list_items(f"/projects/{which}", "projects", Project)

        await gather(partial(get, "owned"), partial(get, "shared"))
        projects = {p.id: p for p in found["owned"] + found["shared"]}
        names = await self.assign_names("projects",
                                             ((p.id, p.name) for p in projects.values()))
        return [Child(names[i], ("project", i), partial(ProjectDir, self.tree, p))
                for i, p in projects.items()]


class ProjectDir(StaticDir):
    kind = "project"

    def __init__(self, tree: Tree, project: Project) -> None:
        super().__init__(tree, project.created)
        self.flow_id = project.id
        self.children = {
            "samples": ProjectSamplesDir(tree, project),
            "executions": ProjectExecutionsDir(tree, project),
        }


async def sample_children(owner: ListingDir, key: str,
                          samples: Iterable[Sample]) -> list[Child]:
    by_id = {s.id: s for s in samples}
    names = await owner.assign_names(key, ((s.id, s.name) for s in by_id.values()))
    return [Child(names[i], ("sample", i), partial(SampleDir, owner.tree, s))
            for i, s in by_id.items()]


async def execution_children(owner: ListingDir, key: str,
                             executions: Iterable[Execution]) -> list[Child]:
    by_id = {e.id: e for e in executions}
    names = await owner.assign_names(key, ((e.id, e.dirname) for e in by_id.values()))
    return [Child(names[i], ("execution", i), partial(ExecutionDir, owner.tree, e))
            for i, e in by_id.items()]


class ProjectSamplesDir(ListingDir):
    def __init__(self, tree: Tree, project: Project) -> None:
        super().__init__(tree, project.created)
        self.project = project

    async def _fetch(self) -> list[Child]:
        path = f"/projects/{self.project.id}/samples"
        items = await self.tree.list_items(path, "samples", Sample)
        return await sample_children(self, f"project/{self.project.id}/samples", items)


class ProjectExecutionsDir(ListingDir):
    def __init__(self, tree: Tree, project: Project) -> None:
        super().__init__(tree, project.created)
        self.project = project

    async def _fetch(self) -> list[Child]:
        path = f"/projects/{self.project.id}/executions"
        items = await self.tree.list_items(path, "executions", Execution)
        return await execution_children(self, f"project/{self.project.id}/executions",
                                        items)


class SamplesDir(ListingDir):
    """samples/: every sample the user can read (owned ∪ shared)."""

    async def _fetch(self) -> list[Child]:
        found: list[Sample] = []

        async def get(which: str) -> None:
            found.extend(await self.tree.list_items(f"/samples/{which}", "samples", Sample))

        await gather(partial(get, "owned"), partial(get, "shared"))
        return await sample_children(self, "samples", found)


class ExecutionsDir(ListingDir):
    async def _fetch(self) -> list[Child]:
        items = await self.tree.list_items("/executions/owned", "executions", Execution)
        return await execution_children(self, "executions", items)


class SampleDir(ListingDir):
    kind = "sample"

    def __init__(self, tree: Tree, sample: Sample) -> None:
        super().__init__(tree, sample.created)
        self.sample = sample
        self.flow_id = sample.id

    async def _fetch(self) -> list[Child]:
        path = f"/samples/{self.sample.id}/data"
        items = await self.tree.list_items(path, "data", DataFile)
        return await file_children(self, f"sample/{self.sample.id}", items)


class LooseDataDir(ListingDir):
    """data/: the user's own data that is in no sample and no execution."""

    async def _fetch(self) -> list[Child]:
        items = await self.tree.list_items("/data/owned", "data", DataFile)
        loose = [d for d in items
                 if not d.placement_known or (d.sample_id is None and d.execution_id is None)]
        return await file_children(self, "data", loose)


class ExecutionDir(ListingDir):
    """An execution's outputs, nested by output path. Sub-directories read its levels."""

    kind = "execution"

    def __init__(self, tree: Tree, execution: Execution) -> None:
        super().__init__(tree, execution.created)
        self.execution = execution
        self.flow_id = execution.id
        self._levels: dict[tuple[str, ...], list[Child]] = {}

    async def _fetch(self) -> list[Child]:
        path = f"/executions/{self.execution.id}/data"
        try:
            items = await self.tree.list_items(path, "data", DataFile)
        except NotFound:
            items = []  # a Flow without the output listing: an empty directory
        self._levels = await self._build_levels(items)
        return self._levels.get((), [])

    def forgotten(self) -> None:
        super().forgotten()
        self._levels = {}

    async def level(self, prefix: tuple[str, ...]) -> list[Child]:
        await self.entries()
        return self._levels.get(prefix, [])

    async def _build_levels(self, items: list[DataFile]) -> dict[tuple[str, ...], list[Child]]:
        files: dict[tuple[str, ...], list[DataFile]] = {}
        dirs: dict[tuple[str, ...], set[str]] = {}
        shown: dict[str, str] = {}
        for item in items:
            raw = (item.path or item.filename).split("/")
            parts = [sanitize(p) for p in raw if p not in ("", ".")] or [sanitize(item.filename)]
            for depth in range(len(parts) - 1):
                dirs.setdefault(tuple(parts[:depth]), set()).add(parts[depth])
            shown[item.id] = parts[-1]
            files.setdefault(tuple(parts[:-1]), []).append(item)
        levels: dict[tuple[str, ...], list[Child]] = {}
        for prefix in dirs.keys() | files.keys():
            subdirs = sorted(dirs.get(prefix, ()))
            children = [Child(d, ("outdir", prefix + (d,)),
                              partial(OutputDir, self.tree, self, prefix + (d,)))
                        for d in subdirs]
            key = "/".join((f"execution/{self.execution.id}", *prefix))
            children += await file_children(self, key, files.get(prefix, []), subdirs,
                                            shown)
            levels[prefix] = children
        return levels


class OutputDir(ListingDir):
    def __init__(self, tree: Tree, execution: ExecutionDir, prefix: tuple[str, ...]) -> None:
        super().__init__(tree, execution.mtime)
        self.execution = execution
        self.prefix = prefix

    async def _fetch(self) -> list[Child]:
        return await self.execution.level(self.prefix)


# by-id/<id>.d/: a directory that holds the file under its own name, so a tool that looks
# for an index beside it (x.bam.bai, x.vcf.gz.tbi) finds one.
ID_DIR_SUFFIX = ".d"
INDEX_SUFFIXES = (".bai", ".csi", ".crai", ".tbi", ".fai", ".gzi")
# Indexes named after the stem, as samtools also accepts: x.bam -> x.bai, x.cram -> x.crai.
STEM_INDEXES = {".bam": (".bai", ".csi"), ".cram": (".crai",)}


def index_names(filename: str) -> set[str]:
    """The names a tool looks for when it wants the index of ``filename``."""
    names = {filename + suffix for suffix in INDEX_SUFFIXES}
    for ext, suffixes in STEM_INDEXES.items():
        if filename.endswith(ext):
            names |= {filename[:-len(ext)] + suffix for suffix in suffixes}
    return names


class ByIdDir(DirNode):
    """by-id/<data id>: any readable data file, found on lookup, never listed.

    by-id/<data id>.d/ is a directory holding that file under its filename, with its index
    files beside it when they are in the same sample or execution.
    """

    def __init__(self, tree: Tree, mtime: float) -> None:
        super().__init__(tree, mtime)
        # Weak: a file found here lives while the kernel (or a listing) holds it.
        self._found: weakref.WeakValueDictionary[str, Node] = weakref.WeakValueDictionary()

    async def entries(self) -> dict[str, Node]:
        return {}

    async def lookup(self, name: str) -> Node:
        data_id = name.removesuffix(ID_DIR_SUFFIX)
        if not is_id(data_id):
            raise NotFound(name)
        node = self._found.get(name)
        if node is None:
            data = await self._data(data_id)
            node = self.tree.file_for(data) if name == data_id else IdDir(self.tree, data)
            self._found[name] = node
        return node

    async def _data(self, data_id: str) -> DataFile:
        try:
            with trio.fail_after(self.tree.io_timeout):
                obj = await self.tree.api.get_json(f"/data/{data_id}")
        except trio.TooSlowError:
            raise Transient(f"looking up data {data_id} took too long") from None
        data = DataFile.from_json(obj)
        if data.is_directory or data.id != data_id:
            raise NotFound(data_id)
        return data


class IdDir(ListingDir):
    """by-id/<id>.d/: the file of a data id under its name, and its index files."""

    kind = "by-id"

    def __init__(self, tree: Tree, data: DataFile) -> None:
        super().__init__(tree, data.created)
        self.data = data
        self.flow_id = data.id

    async def _fetch(self) -> list[Child]:
        # Named by the file alone, not by a directory's assignments: the path follows from
        # the id. The file comes first; an index whose name is taken is left out.
        children: dict[str, Child] = {}
        for data in (self.data, *sorted(await self._indexes(), key=lambda d: int(d.id))):
            name = sanitize(data.filename)
            if name not in children:
                children[name] = Child(name, ("data", data.id, data.size),
                                       partial(self.tree.file_for, data))
        return list(children.values())

    async def _indexes(self) -> list[DataFile]:
        """Index files of the same sample or execution; none if they cannot be listed."""
        owner = (f"/samples/{self.data.sample_id}/data" if self.data.sample_id else
                 f"/executions/{self.data.execution_id}/data" if self.data.execution_id else None)
        if owner is None:
            return []
        try:
            siblings = await self.tree.list_items(owner, "data", DataFile)
        except FlowError as exc:  # the file alone is still worth showing
            log.info("no index files for data %s: %s", self.data.id, exc)
            return []
        wanted = index_names(self.data.filename)
        return [d for d in siblings if d.filename in wanted and d.id != self.data.id]
