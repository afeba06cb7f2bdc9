"""`flowfs refresh [PATH]`: fetch the listings under PATH again now, not after `--dir-ttl`.

The protocol is a file: writing a path relative to the mount's root (``.`` or an
empty line for the whole mount), one per line, into ``.flowfs/refresh``. Any
user who may enter the mount may write it; ``write(2)`` returns once the
daemon has done the refresh, and fails with ``ENOENT`` for a path that does not
exist. A file rather than an extended attribute: setting ``user.*`` attributes
needs write permission on the directory, which nobody has on a read-only tree
mounted with ``allow_other``.

What a refresh costs the API is bounded, whoever asks and however often:

- Only listings already held in memory are marked stale (a walk without an
  await, at most ``MAX_DEPTH`` levels and ``MAX_DIRS`` directories): each is
  fetched again on its next use, not all at once.
- One listing is fetched right away: PATH's own (for a fixed directory such as
  the root, those of its listed children, at most a handful).
- A listing fetched less than ``MIN_AGE`` s ago is left alone, so a loop of
  refreshes costs at most one fetch per listing per ``MIN_AGE``; concurrent
  refreshes of one directory share one fetch (the listing's own lock).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import trio

from flowfs.config import REFRESH_FILE, STATS_DIR
from flowfs.errors import FlowError, NotFound
from flowfs.listing import ListingDir
from flowfs.mounts import Hung, within
from flowfs.nodes import ControlFile, DirNode, Node, Owner, StaticDir
from flowfs.tree import Tree

log = logging.getLogger(__name__)

MIN_AGE = 1.0
MAX_DEPTH = 32
MAX_DIRS = 100_000
MAX_REQUEST = 64 * 1024

HELP = f"""\
Write a path relative to the mount ('.' for all of it) into this file to have
its listings fetched again now, instead of after --dir-ttl:

    echo 'projects/My project' > {STATS_DIR}/{REFRESH_FILE}

or run 'flowfs refresh [PATH]'. Listings fetched less than {MIN_AGE:g} s ago are kept.
"""


def outdate(top: DirNode) -> int:
    """Mark the listings held under ``top`` (itself included) stale; how many were.

    Synchronous (no await), so it sees one consistent tree; bounded in depth and size.
    """
    marked = 0
    seen: set[int] = set()
    level: list[DirNode] = [top]
    for _ in range(MAX_DEPTH):
        below: list[DirNode] = []
        for directory in level:
            if directory.inode in seen or len(seen) >= MAX_DIRS:
                continue
            seen.add(directory.inode)
            children: dict[str, Node] = {}
            if isinstance(directory, ListingDir):
                marked += directory.outdate(MIN_AGE)
                children = directory.listed
            elif isinstance(directory, StaticDir):
                children = directory.children
            below += [node for node in children.values() if isinstance(node, DirNode)]
        if not below:
            break
        level = below
    return marked


async def refresh(tree: Owner, path: str) -> int:
    """Refresh the listings under ``path`` (relative to the root); listings marked stale."""
    node: Node = tree.root
    for name in (part for part in path.strip("/").split("/") if part not in ("", ".")):
        if not isinstance(node, DirNode):
            raise NotFound(f"{path}: not a directory")
        node = await node.lookup(name)
    if not isinstance(node, DirNode):
        raise NotFound(f"{path}: not a directory")
    marked = outdate(node)
    now = [node] if isinstance(node, ListingDir) else [
        child for child in (node.children.values() if isinstance(node, StaticDir) else ())
        if isinstance(child, ListingDir) and child.listed]
    failed: list[FlowError] = []

    async def fetch(listing: ListingDir) -> None:
        try:
            await listing.entries()
        except FlowError as exc:  # a listing never fetched, and the server fails now
            failed.append(exc)

    async with trio.open_nursery() as nursery:
        for listing in now:
            nursery.start_soon(fetch, listing)
    if failed:
        raise failed[0]
    log.info("refresh %r: %d listings marked stale, %d fetched now", path or ".", marked,
             len(now))
    return marked


class RefreshFile(ControlFile):
    """``.flowfs/refresh``: each line written is a path whose listings are refreshed."""

    def __init__(self, tree: Tree) -> None:
        super().__init__(tree, HELP)

    async def command(self, data: bytes) -> None:
        if len(data) > MAX_REQUEST:
            raise NotFound("a refresh request is one path per line")
        paths = os.fsdecode(data).splitlines() or [""]
        for path in dict.fromkeys(paths):  # the same path twice is one refresh
            await refresh(self.tree, path)


# -- the command's side --------------------------------------------------------------------

TIMEOUT = 90.0


def mount_of(path: Path, mounts: list[Path]) -> Path | None:
    """The innermost mount among ``mounts`` that holds ``path``."""
    holding = [m for m in mounts if path == m or m in path.parents]
    return max(holding, key=lambda m: len(m.parts)) if holding else None


def request(mount: Path, relative: str, timeout: float = TIMEOUT) -> None:
    """Ask ``mount``'s daemon to refresh ``relative``; FlowError says what went wrong.

    The write happens in a daemon thread given up after ``timeout`` s: a hung mount
    would otherwise hang the command.
    """
    def write() -> None:
        fd = os.open(mount / STATS_DIR / REFRESH_FILE, os.O_WRONLY)
        try:
            os.write(fd, os.fsencode(relative or ".") + b"\n")
        finally:
            os.close(fd)

    started = time.monotonic()
    try:
        within(write, timeout, "flowfs-refresh")
        return
    except Hung:
        raise FlowError(f"{mount} did not answer within {time.monotonic() - started:.0f} s; "
                        f"'flowfs status {mount}' shows whether it is stuck") from None
    except OSError as error:
        exc = error
    where = mount / relative if relative else mount
    if exc.errno == errno.ENOENT and exc.filename is not None:  # from open(), not write()
        raise FlowError(f"{mount} is served by a flowfs without refresh: unmount "
                        f"('flowfs umount {mount}') and mount it again")
    if exc.errno == errno.ENOENT:
        raise FlowError(f"{where}: no such directory in the mount (any more?)")
    if exc.errno == errno.ENOTCONN:
        raise FlowError(f"{mount} is a stale mount of a dead daemon; "
                        f"run 'flowfs umount {mount}' and mount it again")
    raise FlowError(f"{where}: refresh failed: {exc.strerror} "
                    f"('flowfs status {mount}' shows the last failure)")
