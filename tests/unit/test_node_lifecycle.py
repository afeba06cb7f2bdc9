"""Nodes live while the kernel or a listing holds them (Operations called as the kernel would).

The kernel takes references by lookup and readdirplus and gives them back by FORGET;
these tests play its part, and check what a user would notice: the same names, inode
numbers never reused, nothing the kernel may still name freed, and memory (the node
count) back to where it was once the kernel has forgotten what was browsed.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyfuse3
import pytest
from test_ops import operations

from flowfs.inodes import ROOT_INODE
from flowfs.ops import Operations

FILES = 300


class Flow:
    """A project with two samples; sample 10 has FILES files."""

    def __init__(self) -> None:
        self.lists: list[str] = []
        self.data = {"10": [self.file(i) for i in range(FILES)], "11": [self.file(FILES)]}

    @staticmethod
    def file(i: int) -> dict[str, Any]:
        return {"id": str(1000 + i), "filename": f"f{i:04d}.txt", "size": 5,
                "created": 1700000000}

    def __call__(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path.startswith("/downloads/"):
            a, b = (int(x) for x in req.headers["range"].removeprefix("bytes=").split("-"))
            return httpx.Response(206, stream=httpx.ByteStream(b"hello"[a:b + 1]),
                                  headers={"Content-Range": f"bytes {a}-{b}/5"})
        self.lists.append(path)
        table: dict[str, tuple[str, list[dict[str, Any]]]] = {
            "/api/projects/owned": ("projects", [{"id": "1", "name": "P"}]),
            "/api/projects/shared": ("projects", []),
            "/api/projects/1/samples": ("samples", [{"id": "10", "name": "s"},
                                                    {"id": "11", "name": "t"}]),
            "/api/samples/10/data": ("data", self.data["10"]),
            "/api/samples/11/data": ("data", self.data["11"]),
            "/api/downloads": ("jobs", []),
        }
        if path not in table:
            return httpx.Response(404, json={"error": "Not found"})
        key, items = table[path]
        return httpx.Response(200, json={"count": len(items), "page": 1, key: items})


@pytest.fixture
async def mount() -> AsyncIterator[tuple[Operations, Flow]]:
    flow = Flow()
    async with operations(flow, cache_bytes=2**20, uid=0, gid=0) as o:
        yield o, flow


class Kernel:
    """What the kernel holds: every lookup it was answered, until it forgets."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.held: list[int] = []  # one entry per reference, in the order taken

    async def lookup(self, path: str) -> pyfuse3.EntryAttributes:
        ino = ROOT_INODE
        attr = await self.ops.getattr(ino)
        for name in path.split("/"):
            attr = await self.ops.lookup(ino, os.fsencode(name))
            ino = attr.st_ino
            self.held.append(ino)
        return attr

    async def forget_all(self) -> None:
        """Drop caches: leaves first (a dentry holds its parent), as the kernel does."""
        counts: dict[int, int] = {}
        for ino in reversed(self.held):
            counts[ino] = counts.get(ino, 0) + 1
        self.held.clear()
        await self.ops.forget(list(counts.items()))  # type: ignore[arg-type]


async def test_forgotten_files_are_freed_and_come_back_under_their_names(mount: Any) -> None:
    ops, flow = mount
    kernel = Kernel(ops)
    start = len(ops.inodes)
    first = {i: await kernel.lookup(f"projects/P/samples/s/f{i:04d}.txt") for i in range(FILES)}
    assert len(ops.inodes) > start + FILES
    numbers = [a.st_ino for a in first.values()]
    one = weakref.ref(ops.tree.node(numbers[0]))
    await kernel.forget_all()
    gc.collect()
    assert one() is None
    assert len(ops.inodes) == start  # back to where it was: nothing browsed is kept
    listed = len(flow.lists)
    again = await kernel.lookup("projects/P/samples/s/f0007.txt")
    assert len(flow.lists) > listed  # the dropped listings are fetched again
    assert again.st_ino > max(numbers)  # a new node, a new number: never one reused
    assert again.st_size == first[7].st_size


async def test_a_file_the_kernel_holds_outlives_its_forgotten_directory(mount: Any) -> None:
    ops, _ = mount
    kernel = Kernel(ops)
    attr = await kernel.lookup("projects/P/samples/s/f0001.txt")
    sample = (await kernel.lookup("projects/P/samples/s")).st_ino
    # The directory alone is forgotten (an open file keeps its inode, not its dentry).
    await ops.forget([(sample, 2)])
    gc.collect()
    info = await ops.open(attr.st_ino, os.O_RDONLY, None)
    assert await ops.read(info.fh, 0, 5) == b"hello"
    await ops.release(info.fh)
    # Listed again, the name leads to the node the kernel still holds: one inode.
    assert (await kernel.lookup("projects/P/samples/s/f0001.txt")).st_ino == attr.st_ino


async def test_a_listing_being_read_survives_its_directory_being_forgotten(mount: Any) -> None:
    ops, _ = mount
    kernel = Kernel(ops)
    sample = await kernel.lookup("projects/P/samples/s")
    node = ops.tree.node(sample.st_ino)
    entries = await node.entries()
    await kernel.forget_all()
    assert len(entries) == FILES  # what a reader holds is not cleared under it
    assert all(n.size == 5 for n in entries.values())


async def test_names_of_a_forgotten_directory_leave_the_namebook_memory(mount: Any) -> None:
    ops, _ = mount
    kernel = Kernel(ops)
    await kernel.lookup("projects/P/samples/s/f0000.txt")
    names = ops.tree.names
    assert names.names_in_memory > FILES
    await kernel.forget_all()
    # Without a store, memory is the names' only copy: they stay, and stay stable.
    assert names.names_in_memory > FILES
    assert (await kernel.lookup("projects/P/samples/s/f0000.txt")).st_size == 5


async def test_made_and_removed_downloads_files_leave_the_node_count_flat(mount: Any) -> None:
    ops, _ = mount
    kernel = Kernel(ops)
    downloads = (await kernel.lookup(".downloads")).st_ino

    async def cycle(i: int) -> None:
        name = f"job{i % 3}"
        info, attr = await ops.create(downloads, f"{name}.manifest".encode(), 0o644,
                                      os.O_WRONLY, None)
        with pytest.raises(pyfuse3.FUSEError) as refused:
            await ops.write(info.fh, 0, b"no/such/file\n")
        assert refused.value.errno == errno.EINVAL
        await ops.release(info.fh)
        error = await ops.lookup(downloads, f"{name}.error".encode())
        await ops.unlink(downloads, f"{name}.manifest".encode(), None)
        await ops.unlink(downloads, f"{name}.error".encode(), None)
        # Unlinked and closed: the kernel forgets both inodes.
        await ops.forget([(attr.st_ino, 1), (error.st_ino, 1)])

    for i in range(5):
        await cycle(i)
    gc.collect()
    before = len(ops.inodes)
    for i in range(200):
        await cycle(i)
    gc.collect()
    assert len(ops.inodes) == before
    listing = await ops.tree.node(downloads).entries()
    assert sorted(listing) == ["README.txt"]
    assert json.dumps(sorted(listing))  # nothing but the README is left to show
