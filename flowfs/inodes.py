"""Inode numbers and who holds each node: the kernel's lookup counts.

Every node made gets a number from a counter: never reused in a mount's life, so
a node made again (a directory whose listing was dropped, then looked up anew)
gets a new one, and the kernel can never confuse it with what it held before.

Who keeps a node alive (docs/architecture.md, "Lifecycle of nodes"):

1. The kernel, while its lookup count is above zero: the table holds such nodes
   strongly (``_held``), so nothing the kernel may still name is ever freed.
2. The listings that show it (a directory's children, ``.downloads/``'s files),
   and for a while an open handle or a request under way.

The table's index of every live node is weak: a node that neither holds is freed
at once by its last reference going, and its number leaves the index with it,
so ``len()`` counts the nodes in memory, not every node ever made.

Memory comes back when the kernel lets go of much at once (a ``find`` forgotten):
a dict's table never shrinks as keys leave it, so once at least as many nodes were
freed as are left, ``shrunk()`` copies the table's dicts into tables of their present
size and says so, and the tree then compacts its own (``Tree.compact``). A copy costs
what is left, no more than what was freed since the last: amortised, nothing.

The table also keeps the name the kernel last knew each held inode by, so a log
line can say which path failed (FUSE names inodes, not paths); that entry goes
when the kernel forgets the inode.
"""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

ROOT_INODE = 1  # pyfuse3.ROOT_INODE; fixed by FUSE
SHRINK_FROM = 4096  # nodes freed below which no shrinking is worth it

N = TypeVar("N")


class InodeTable(Generic[N]):
    """inode -> node: weakly for every live node, strongly while the kernel holds it."""

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[int, N] = weakref.WeakValueDictionary()
        self._held: dict[int, N] = {}  # the kernel's (lookup count > 0), and the root
        self._lookups: dict[int, int] = {}
        self._names: dict[int, tuple[int, str]] = {}  # inode -> (parent inode, name)
        self._next = ROOT_INODE + 1
        self._peak = 0  # the most live nodes since the dicts were last compacted

    def add_root(self, node: N) -> int:
        self._live[ROOT_INODE] = self._held[ROOT_INODE] = node  # lives as long as the mount
        return ROOT_INODE

    def add(self, node: N) -> int:
        """A new number for a new node (weakly indexed: its owners keep it alive)."""
        ino = self._next
        self._next += 1
        self._live[ino] = node
        self._peak = max(self._peak, len(self._live))
        return ino

    def get(self, ino: int) -> N | None:
        return self._live.get(ino)

    def __len__(self) -> int:
        """The nodes in memory (held by the kernel or by a listing)."""
        return len(self._live)

    @property
    def held(self) -> int:
        """The inodes the kernel holds (lookup count above zero)."""
        return len(self._lookups)

    def lookups(self, ino: int) -> int:
        return self._lookups.get(ino, 0)

    def remember(self, ino: int, count: int = 1, *,
                 under: tuple[int, str] | None = None) -> None:
        """The kernel took ``count`` more references (lookup, readdirplus, create).

        ``under``: the (parent inode, name) it looked the inode up by. The node must be
        alive (its caller is about to answer with it), and stays so until forgotten.
        """
        node = self._live.get(ino)
        if node is None:
            raise KeyError(f"inode {ino} is not a live node")
        self._held[ino] = node
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

    def forget(self, ino: int, count: int) -> N | None:
        """The kernel dropped ``count`` references. Returns the node if that was its last:
        the table lets go of it (its listings may still hold it), and the caller may
        release what the node holds for the kernel's sake (a directory's listing)."""
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return None
        if ino not in self._lookups:
            return None  # not ours to forget (a count we never gave, or forgotten already)
        del self._lookups[ino]
        self._names.pop(ino, None)
        if ino == ROOT_INODE:
            return None
        return self._held.pop(ino, None)

    def shrunk(self) -> bool:
        """Whether at least half the nodes live at the peak since the last time were freed
        (and SHRINK_FROM at least); if so, the table's own dicts have just been copied
        into tables of their present size."""
        freed = self._peak - len(self._live)
        if freed < SHRINK_FROM or freed < len(self._live):
            return False
        self._live = weakref.WeakValueDictionary(self._live)
        self._held, self._lookups, self._names = (
            dict(self._held), dict(self._lookups), dict(self._names))
        self._peak = len(self._live)
        return True
