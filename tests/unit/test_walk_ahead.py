"""Walk-ahead: a walker's next listings are fetched before it asks, a plain ls starts none."""

from __future__ import annotations

import httpx
import pytest
import trio

from flowfs.api import FlowAPI
from flowfs.auth import Credentials
from flowfs.inodes import InodeTable
from flowfs.listing import ListingDir
from flowfs.nodes import Node
from flowfs.tree import WALK_AHEAD, Tree

SAMPLES = 40


class Flow:
    """One project of SAMPLES samples with one file each; counts list requests."""

    def __init__(self) -> None:
        self.project_lists = 0
        self.sample_lists: list[str] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path.endswith("/projects/owned"):
            self.project_lists += 1
            await trio.sleep(0.05)
            return _page("projects", [{"id": "1", "name": "p", "created": 0}])
        if path.endswith("/projects/shared"):
            return _page("projects", [])
        if path.endswith("/projects/1/samples"):
            return _page("samples", [{"id": str(100 + i), "name": f"s{i:02}", "created": 0}
                                     for i in range(SAMPLES)])
        if "/samples/" in path and path.endswith("/data"):
            self.sample_lists.append(path)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await trio.sleep(0.05)  # a distant link (virtual time)
            finally:
                self.in_flight -= 1
            sid = path.split("/")[-2]
            return _page("data", [{"id": f"9{sid}", "filename": "x.txt", "size": 1,
                                   "created": 0}])
        return httpx.Response(404, json={"error": "no"})


def _page(key: str, items: list[dict[str, object]]) -> httpx.Response:
    return httpx.Response(200, json={"count": len(items), "page": 1, key: items})


async def _samples_dir(tree: Tree) -> ListingDir:
    project = (await tree.root.children["projects"].entries())["p"]  # type: ignore[attr-defined]
    samples = project.children["samples"]
    assert isinstance(samples, ListingDir)
    return samples


def _tree(flow: Flow, nursery: trio.Nursery) -> Tree:
    client = httpx.AsyncClient(transport=httpx.MockTransport(flow))
    api = FlowAPI("http://flow.test/api", "http://flow.test", Credentials("token", "t",
                  token="t"), client)
    return Tree(api, InodeTable[Node](), ttl=60, invalidate=lambda ino, name: None,
                spawn=nursery.start_soon)


async def test_a_walker_gets_its_next_listings_fetched_ahead(autojump_clock: object) -> None:
    flow = Flow()
    async with trio.open_nursery() as nursery:
        tree = _tree(flow, nursery)
        samples = await _samples_dir(tree)
        children = await samples.entries()
        await children["s00"].entries()  # type: ignore[attr-defined]
        await children["s01"].entries()  # type: ignore[attr-defined]: a walk
        with trio.fail_after(10):
            while len(flow.sample_lists) < SAMPLES or flow.in_flight:
                await trio.sleep(0.01)
        began = trio.current_time()
        for name in sorted(children):  # the walker goes on: everything is there already
            await children[name].entries()  # type: ignore[attr-defined]
        assert trio.current_time() - began < 0.01
        nursery.cancel_scope.cancel()
    assert sorted(flow.sample_lists) == sorted(set(flow.sample_lists))  # each listed once
    assert 1 < flow.peak <= WALK_AHEAD + 1  # in parallel, but bounded
    assert tree.walk_ahead_listings == SAMPLES - 2


async def test_a_plain_ls_lists_one_directory_and_starts_nothing(
        autojump_clock: object) -> None:
    flow = Flow()
    async with trio.open_nursery() as nursery:
        tree = _tree(flow, nursery)
        samples = await _samples_dir(tree)
        children = await samples.entries()
        await children["s07"].entries()  # type: ignore[attr-defined]: one `ls`
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert len(flow.sample_lists) == 1 and tree.walk_ahead_listings == 0


async def test_a_fresh_mount_lists_its_projects_before_the_first_path_needs_them(
        autojump_clock: object) -> None:
    # A user's first `cat` goes through projects/: across the internet that listing is a
    # round trip the kernel's lookup need not wait for, and a lookup that comes while it
    # is under way joins it instead of asking again.
    flow = Flow()
    async with trio.open_nursery() as nursery:
        tree = _tree(flow, nursery)
        tree.warm()
        await trio.sleep(0.01)  # the user comes while the listing is under way
        projects = tree.root.children["projects"]
        began = trio.current_time()
        assert "p" in await projects.entries()  # type: ignore[attr-defined]
        assert trio.current_time() - began < 0.05
        nursery.cancel_scope.cancel()
    assert flow.project_lists == 1


async def test_a_listing_that_breaks_at_mount_start_does_not_end_the_mount(
        autojump_clock: object, caplog: pytest.LogCaptureFixture) -> None:
    # The mount lists projects/ as it starts. A reply httpx cannot decode (a proxy's broken
    # gzip) raises no domain error: it used to leave the background task, and the
    # nursery, which is the mount. The user's own `ls` meets the failure instead.
    def broken(req: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError("broken gzip", request=req)

    async with trio.open_nursery() as nursery:
        client = httpx.AsyncClient(transport=httpx.MockTransport(broken))
        api = FlowAPI("http://flow.test/api", "http://flow.test",
                      Credentials("token", "t", token="t"), client)
        tree = Tree(api, InodeTable[Node](), ttl=60, invalidate=lambda ino, name: None,
                    spawn=nursery.start_soon)
        tree.warm()
        with trio.fail_after(10):  # the listing fails, and the mount's nursery lives on
            while "walk-ahead listing failed" not in caplog.text:
                await trio.sleep(0.01)
        assert tree.walk_ahead_listings == 1
        nursery.cancel_scope.cancel()
