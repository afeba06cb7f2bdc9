"""Names through Operations (no kernel): what a path means as listings change."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyfuse3
import pytest
import trio

from flowfs.api import FlowAPI
from flowfs.auth import Credentials
from flowfs.downloads import Downloads
from flowfs.inodes import ROOT_INODE, InodeTable
from flowfs.namebook import NameBook, NameStore, store_path
from flowfs.nodes import Node
from flowfs.ops import Operations
from flowfs.reader import Reader, ReaderConfig
from flowfs.tree import Tree

API = "http://f/api"


@dataclass
class Flow:
    """Projects, samples and data files that a test changes between listings."""

    projects: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by project
    data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by sample
    content: dict[str, bytes] = field(default_factory=dict)  # by data id

    def add(self, project: str, pname: str, sample: str, sname: str,
            files: dict[str, tuple[str, bytes]]) -> None:
        if all(p["id"] != project for p in self.projects):
            self.projects.append({"id": project, "name": pname})
        self.samples.setdefault(project, []).append({"id": sample, "name": sname})
        for data_id, (filename, body) in files.items():
            self.data.setdefault(sample, []).append(
                {"id": data_id, "filename": filename, "size": len(body)})
            self.content[data_id] = body

    def __call__(self, req: httpx.Request) -> httpx.Response:
        parts = req.url.path.split("/")[2:]  # after /api or /downloads
        if req.url.path.startswith("/downloads/"):
            body = self.content[parts[0]]
            a, b = (int(x) for x in req.headers["range"].removeprefix("bytes=").split("-"))
            return httpx.Response(206, stream=httpx.ByteStream(body[a:b + 1]),
                                  headers={"Content-Range": f"bytes {a}-{b}/{len(body)}"})
        listing: tuple[str, list[dict[str, Any]]] | None = {
            ("projects", "owned"): ("projects", self.projects),
            ("projects", "shared"): ("projects", []),
            ("samples", "owned"): ("samples", [s for v in self.samples.values() for s in v]),
            ("samples", "shared"): ("samples", []),
        }.get((parts[0], parts[1]))
        if listing is None and parts[0] == "projects" and parts[2] == "samples":
            listing = ("samples", self.samples.get(parts[1], []))
        if listing is None and parts[0] == "projects" and parts[2] == "executions":
            listing = ("executions", [])
        if listing is None and parts[0] == "samples" and parts[2] == "data":
            listing = ("data", self.data.get(parts[1], []))
        if listing is None:
            return httpx.Response(404, json={"error": "Not found"})
        key, items = listing
        # ASCII JSON, as a server may send: "\ud800" escapes a lone surrogate.
        body = json.dumps({"count": len(items), "page": 1, key: items}, ensure_ascii=True)
        return httpx.Response(200, content=body.encode(),
                              headers={"Content-Type": "application/json"})


@pytest.fixture
async def mount() -> AsyncIterator[Any]:
    """make(flow, book=None) -> Operations over a tree that lists afresh every time."""
    async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
        def make(flow: Flow, book: NameBook | None = None) -> Operations:
            client = httpx.AsyncClient(transport=httpx.MockTransport(flow))
            stack.push_async_callback(client.aclose)
            api = FlowAPI(API, "http://f", Credentials("token", "test", token="t"), client)
            inodes: InodeTable[Node] = InodeTable()
            tree = Tree(api, inodes, ttl=0, invalidate=lambda ino, name: None, names=book)

            async def fetch(target: Any, start: int, end: int) -> Any:
                return await api.fetch_range(target.url, start, end)

            reader = Reader(fetch, nursery, ReaderConfig(cache_bytes=32 * 2**20))
            return Operations(tree, inodes, reader, Downloads(tree, "/mnt"), uid=os.getuid(),
                              gid=os.getgid(), ttl=0)

        yield make
        nursery.cancel_scope.cancel()


async def lookup(ops: Operations, path: str) -> pyfuse3.EntryAttributes:
    ino = ROOT_INODE
    attr = await ops.getattr(ino)
    for name in path.split("/"):
        attr = await ops.lookup(ino, os.fsencode(name))
        ino = attr.st_ino
    return attr


async def cat(ops: Operations, path: str) -> bytes:
    attr = await lookup(ops, path)
    info = await ops.open(attr.st_ino, os.O_RDONLY, None)
    try:
        return await ops.read(info.fh, 0, attr.st_size)
    finally:
        await ops.release(info.fh)


async def ls(ops: Operations, path: str) -> list[str]:
    attr = await lookup(ops, path)
    node = ops.tree.node(attr.st_ino)
    return sorted(await node.entries())  # type: ignore[attr-defined]


def alice_and_bob() -> tuple[Flow, str]:
    flow = Flow()
    flow.add("50", "Liver", "60", "rep1", {"600": ("reads.txt", b"alice's reads\n")})
    return flow, "Liver/samples/rep1/reads.txt"


def share_bobs_liver(flow: Flow) -> None:
    flow.add("5", "Liver", "6", "rep1", {"601": ("reads.txt", b"bob's reads, not alice's\n")})


async def test_a_lower_id_namesake_that_appears_does_not_take_the_path(mount: Any) -> None:
    flow, path = alice_and_bob()
    ops = mount(flow)
    assert await cat(ops, f"projects/{path}") == b"alice's reads\n"
    assert await cat(ops, "samples/rep1/reads.txt") == b"alice's reads\n"
    share_bobs_liver(flow)
    assert await cat(ops, f"projects/{path}") == b"alice's reads\n"
    assert await cat(ops, "samples/rep1/reads.txt") == b"alice's reads\n"
    assert await cat(ops, "projects/Liver~5/samples/rep1/reads.txt") == \
        b"bob's reads, not alice's\n"
    assert await ls(ops, "samples") == ["rep1", "rep1~6"]


async def test_the_path_keeps_its_item_after_a_remount(mount: Any, tmp_path: Path) -> None:
    flow, path = alice_and_bob()
    where = store_path(API, "alice", tmp_path)
    first = NameBook(NameStore(where))
    assert await cat(mount(flow, first), f"projects/{path}") == b"alice's reads\n"
    await first.close()
    share_bobs_liver(flow)
    second = NameBook(NameStore(where))
    ops = mount(flow, second)
    assert await cat(ops, f"projects/{path}") == b"alice's reads\n"
    assert await ls(ops, "projects") == ["Liver", "Liver~5"]
    # Without what the first mount remembered, the first-listing rule applies.
    assert await ls(mount(flow), "samples") == ["rep1", "rep1~60"]


HOSTILE = {
    "700": "bad\ud800name.txt",  # valid JSON ("\ud800"), not encodable as UTF-8
    "701": "c1\x85next\x9bline.txt",
    "702": "invoice\u202etxt.exe",
    "703": "para\u2028graph\u2029.txt",
    "704": "\u2066iso\u2069\u200e\u200f\u061c.txt",
    "705": "plain.txt",
}


async def test_hostile_names_are_listed_with_underscores_and_siblings_stay_readable(
        mount: Any) -> None:
    flow = Flow()
    flow.add("1", "P", "2", "s", {i: (n, f"body of {i}".encode()) for i, n in HOSTILE.items()})
    ops = mount(flow)
    names = await ls(ops, "projects/P/samples/s")
    assert names == sorted(["bad_name.txt", "c1_next_line.txt", "invoice_txt.exe",
                            "para_graph_.txt", "_iso____.txt", "plain.txt"])
    for name in names:
        name.encode("utf-8", "strict")
    assert await cat(ops, "projects/P/samples/s/plain.txt") == b"body of 705"
    assert await cat(ops, "projects/P/samples/s/bad_name.txt") == b"body of 700"
