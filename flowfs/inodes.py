"""Inode numbers: assigned once, never reused in a mount's life.

The table maps numbers to node objects and tracks the kernel's lookup count
per inode, so a node that vanished from every listing can be dropped once
the kernel has forgotten it, and not before. It also keeps the name the kernel
last knew each inode by, so a log line can say which path failed (FUSE names
inodes, not paths); that entry goes when the kernel forgets the inode.
"""

from __future__ import annotations

from typing import Generic, TypeVar

ROOT_INODE = 1  # pyfuse3.ROOT_INODE; fixed by FUSE

N = TypeVar("N")


class InodeTable(Generic[N]):
    """inode -> node, with kernel lookup counts and the names they were looked up by."""

    def __init__(self) -> None:
        self._nodes: dict[int, N] = {}
        self._lookups: dict[int, int] = {}
        self._names: dict[int, tuple[int, str]] = {}  # inode -> (parent inode, name)
        self._detached: set[int] = set()
        self._next = ROOT_INODE + 1

    def add_root(self, node: N) -> int:
        self._nodes[ROOT_INODE] = node
        return ROOT_INODE

    def add(self, node: N) -> int:
        ino = self._next
        self._next += 1
        self._nodes[ino] = node
        return ino

    def get(self, ino: int) -> N | None:
        return self._nodes.get(ino)

    def __len__(self) -> int:
        return len(self._nodes)

    def remember(self, ino: int, count: int = 1, *,
                 under: tuple[int, str] | None = None) -> None:
        """The kernel took ``count`` more references (lookup, readdirplus, create).

        ``under``: the (parent inode, name) it looked the inode up by.
        """
        self._lookups[ino] = self._lookups.get(ino, 0) + count
        if under is not None:
            self._names[ino] = under

    def path(self, ino: int) -> str:
        """The inode's path in the mount, by the names the kernel last used for it."""
        parts: list[str] = []
        while ino != ROOT_INODE and ino in self._names and len(parts) < 256:
            ino, name = self._names[ino]
            parts.append(name)
        if ino != ROOT_INODE:  # not looked up by name (or a cycle): say so, not guess
            parts.append(f"<inode {ino}>")
        return "/".join(reversed(parts)) or "."

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped references; a detached node with none left is freed."""
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        self._names.pop(ino, None)
        if ino in self._detached:
            self._detached.discard(ino)
            self._nodes.pop(ino, None)

    def detach(self, ino: int) -> None:
        """The node left every listing: free it now, or when the kernel forgets it."""
        if ino == ROOT_INODE:
            return
        if self._lookups.get(ino, 0) > 0:
            self._detached.add(ino)
        else:
            self._nodes.pop(ino, None)
