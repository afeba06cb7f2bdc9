"""`.flowfs/refresh` called through Operations: what is fetched again, and what is not."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyfuse3
import pytest
from test_ops import FakeFlow, operations, walk

from flowfs import refresh
from flowfs.api import FlowAPI
from flowfs.inodes import InodeTable
from flowfs.listing import ListingDir
from flowfs.nodes import Node, StaticDir
from flowfs.ops import Operations
from flowfs.refresh import RefreshFile, mount_of, outdate
from flowfs.tree import Tree


@pytest.fixture
async def ops() -> AsyncIterator[tuple[Operations, FakeFlow]]:
    flow = FakeFlow()

    def control(tree: Tree) -> dict[str, Node]:
        flowfs = StaticDir(tree, tree.started)
        flowfs.children = {"refresh": RefreshFile(tree)}
        return {".flowfs": flowfs}

    async with operations(flow, ttl=3600, more=control) as o:
        yield o, flow


async def ask(o: Operations, text: bytes) -> None:
    """What `echo PATH > .flowfs/refresh` does: open for writing (truncating), write, close."""
    attr = await walk(o, ".flowfs", "refresh")
    assert attr.st_mode & 0o777 == 0o666  # any user of the mount may ask
    info = await o.open(attr.st_ino, os.O_WRONLY | os.O_TRUNC, None)
    try:
        assert await o.write(info.fh, 0, text) == len(text)
    finally:
        await o.release(info.fh)


def listed(flow: FakeFlow, path: str) -> int:
    return flow.requests.count(f"GET /api{path}")


@pytest.fixture
def aged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refresh, "MIN_AGE", 0.0)  # every listing counts as old enough


async def test_a_refresh_fetches_the_listing_again_before_its_ttl(ops: Any, aged: None) -> None:
    o, flow = ops
    await walk(o, "projects", "P", "samples", "s_1")
    assert listed(flow, "/projects/1/samples") == 1
    await walk(o, "projects", "P", "samples", "s_1")  # within the TTL: from memory
    assert listed(flow, "/projects/1/samples") == 1
    await ask(o, b"projects/P/samples\n")
    assert listed(flow, "/projects/1/samples") == 2  # fetched now, by the write itself


async def test_a_refresh_marks_the_listings_below_and_leaves_the_rest(
        ops: Any, aged: None) -> None:
    o, flow = ops
    await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    await ask(o, b"projects/P\n")
    # below: fetched again on next use, not all at once
    assert listed(flow, "/samples/10/data") == 1
    await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    assert listed(flow, "/samples/10/data") == 2
    assert listed(flow, "/projects/owned") == 1  # above PATH: untouched
    assert listed(flow, "/projects/1/executions") == 0  # never listed: not fetched by refresh


async def test_the_whole_mount_is_refreshed_by_dot(ops: Any, aged: None) -> None:
    o, flow = ops
    await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    await ask(o, b".\n")
    assert listed(flow, "/projects/owned") == 2  # a listed child of the root: now
    assert listed(flow, "/samples") == 0  # never listed: still not
    await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    assert listed(flow, "/samples/10/data") == 2


async def test_repeated_refreshes_coalesce(ops: Any) -> None:
    o, flow = ops
    await walk(o, "projects", "P", "samples", "s_1")
    for _ in range(20):
        await ask(o, b"projects/P/samples\nprojects/P/samples\n")
    assert listed(flow, "/projects/1/samples") == 1  # all within MIN_AGE of the fetch


async def test_a_missing_path_fails_the_write_with_enoent(ops: Any) -> None:
    o, _ = ops
    with pytest.raises(pyfuse3.FUSEError) as err:
        await ask(o, b"projects/no such project\n")
    assert err.value.errno == errno.ENOENT


async def test_refresh_is_the_only_writable_file_of_its_kind(ops: Any) -> None:
    o, _ = ops
    attr = await walk(o, "README.txt")
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.open(attr.st_ino, os.O_WRONLY, None)
    assert err.value.errno == errno.EROFS


def test_the_walk_is_bounded_in_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    class Deep(ListingDir):
        async def _fetch(self) -> list[Any]:
            return []

    tree = Tree(FlowAPI("http://f/api", "http://f", None, httpx.AsyncClient()), InodeTable(),
                ttl=60, invalidate=lambda ino, name: None)
    top = node = Deep(tree, 0)
    for depth in range(100):
        node._fetched_at = -1e9  # listed long ago
        child = Deep(tree, 0)
        node._children = {f"d{depth}": child}
        node = child
    monkeypatch.setattr(refresh, "MAX_DEPTH", 10)
    assert outdate(top) == 10


def test_the_innermost_mount_holds_a_path() -> None:
    from pathlib import Path

    mounts = [Path("/a"), Path("/a/b"), Path("/c")]
    assert mount_of(Path("/a/b/x"), mounts) == Path("/a/b")
    assert mount_of(Path("/a/bb"), mounts) == Path("/a")
    assert mount_of(Path("/c"), mounts) == Path("/c")
    assert mount_of(Path("/d"), mounts) is None
