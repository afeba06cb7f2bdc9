"""The directory tree of docs/design.md: the owner of one mount's node graph.

``Tree`` builds the root, holds what every node shares (the API, the inode table,
the TTL, the ``NameBook``), keeps the index of file nodes, lets go of memory when the
kernel forgets, and schedules walk-ahead listings. The nodes themselves are in
``nodes`` (the plain ones), ``listing`` (a remote listing's rules), ``flowdirs`` and
``byid`` (Flow's directories).

A data id's bytes never change, so one ``FileNode`` per data id is shared by
every directory that shows it (and the kernel's page cache with it).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from flowfs.api import FlowAPI
from flowfs.byid import ByIdDir
from flowfs.errors import FlowError, NotFound
from flowfs.flowdirs import ExecutionsDir, LooseDataDir, ProjectsDir, SamplesDir
from flowfs.inodes import InodeTable
from flowfs.listing import ListingDir
from flowfs.memory import Release
from flowfs.model import DataFile
from flowfs.namebook import NameBook
from flowfs.nodes import DirNode, FileNode, Node, StaticDir, TextFile

log = logging.getLogger(__name__)

WALK_AHEAD = 16  # listings fetched at once ahead of a walker
MAX_WALK_AHEAD = 10_000  # sub-directories listed ahead of one walk at most


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

    def warm(self) -> None:
        """List ``projects/`` in the background, as a fresh mount's first step.

        Nearly every path a user opens first goes through it, and across the internet
        each listing the kernel waits for is a round trip: ``cat`` of a sample's file on
        a fresh mount waited for three (projects, samples, files), now for two. A lookup
        meanwhile waits for this listing rather than asking again (``ListingDir``).
        """
        projects = self.root.children["projects"]
        assert isinstance(projects, ListingDir)
        self.walk_ahead([projects])

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
                except Exception:  # a reply httpx refuses, or a bug: never the mount's end
                    log.warning("walk-ahead listing failed", exc_info=True)

        for _ in range(min(WALK_AHEAD, len(dirs))):
            self._spawn(worker)

    async def list_items(self, path: str, key: str, model: Any) -> list[Any]:
        return [model.from_json(obj) for obj in await self.api.list_all(path, key)]
