"""Directories backed by a remote listing: their TTL, refresh, reconciliation and walk-ahead.

Directories fetch their listing on first use and again once it is older than the
TTL; a refresh keeps the node (and so the inode) of every name whose identity
stayed, and tells the kernel to forget names that vanished or now mean something
else. What each directory lists is its subclass's ``_fetch`` (``flowdirs``, ``byid``).

Every listing directory names its entries through the tree's ``NameBook`` under a
key of its own (``sample/60``): the same directory seen at two paths (a sample under
``projects/`` and under ``samples/``) shares its names, and a name once shown stays
with its item for as long as the item is listed, across remounts too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import trio

from flowfs.errors import Transient
from flowfs.nodes import DirNode, Node, Owner

log = logging.getLogger(__name__)


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

    def __init__(self, tree: Owner, mtime: float) -> None:
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

