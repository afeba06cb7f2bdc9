"""`.downloads/` under abuse, through Operations: lost replies, hostile sizes, drafts.

Each test is what a user (or a broken program) does, and what its system calls get.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pyfuse3
import pytest
import trio
from test_ops import FakeFlow, api_fetch, walk

from flowfs.api import FlowAPI
from flowfs.auth import Credentials
from flowfs.downloads import MANIFEST_SPACE, MAX_JOB_FILES, Downloads
from flowfs.inodes import InodeTable
from flowfs.model import DataFile
from flowfs.nodes import FileNode, Node, StaticDir
from flowfs.ops import Operations
from flowfs.reader import Reader, ReaderConfig
from flowfs.tree import Tree


class Flow(FakeFlow):
    """FakeFlow with the ways a real one loses or ignores things.

    ``lose``: how many job requests are carried out but their reply lost (a reset after
    the server made the job). ``keys``: whether Idempotency-Key is honoured. ``listable``:
    whether ``GET /downloads`` exists; ``down``: whether it fails (503) for now.
    """

    def __init__(self, *, lose: int = 0, keys: bool = True, listable: bool = True) -> None:
        super().__init__()
        self.lose, self.keys, self.listable = lose, keys, listable
        self.by_key: dict[str, dict[str, Any]] = {}
        self.posts: list[str | None] = []  # the key of every job request
        self.down = False

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.method == "GET" and req.url.path == "/api/downloads" and not self.listable:
            self.requests.append("GET /api/downloads")
            return httpx.Response(404, json={"error": "Not found"})
        if req.method == "GET" and req.url.path == "/api/downloads" and self.down:
            return httpx.Response(503, json={"error": "down"})
        if req.method != "POST" or req.url.path != "/api/downloads":
            return super().__call__(req)
        key = req.headers.get("idempotency-key")
        self.posts.append(key)
        if self.keys and key in self.by_key:
            reply = httpx.Response(201, json=self.by_key[key])
        else:
            reply = super().__call__(req)
            if reply.status_code != 201:
                return reply
            job = self.jobs[-1]
            job["id"] = f"job-{len(self.jobs)}"
            if key:
                self.by_key[key] = job
            reply = httpx.Response(201, json=job)
        if self.lose > 0:
            self.lose -= 1
            raise httpx.ReadError("connection reset by peer", request=req)
        return reply


async def mounted(flow: Flow, nursery: trio.Nursery, *, space: int = MANIFEST_SPACE
                  ) -> Operations:
    client = httpx.AsyncClient(transport=httpx.MockTransport(flow))
    api = FlowAPI("http://f/api", "http://f", Credentials("token", "test", token="t"), client)
    inodes: InodeTable[Node] = InodeTable()
    tree = Tree(api, inodes, ttl=60, invalidate=lambda ino, name: None, io_timeout=10)
    downloads = Downloads(tree, "/mnt", space=space)
    tree.add_root_entries({".downloads": downloads.directory})
    reader = Reader(api_fetch(api), nursery, ReaderConfig(cache_bytes=32 * 2**20))
    return Operations(tree, inodes, reader, downloads, uid=os.getuid(), gid=os.getgid(), ttl=60)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def write_manifest(o: Operations, name: bytes, text: bytes) -> int:
    """create, write, close as `cp` does: 0, or the errno of the first refused call."""
    dl = await walk(o, ".downloads")
    try:
        info, _ = await o.create(dl.st_ino, name, 0o644, os.O_WRONLY | os.O_TRUNC, None)
    except pyfuse3.FUSEError as exc:
        return exc.errno
    try:
        await o.write(info.fh, 0, text)
        await o.flush(info.fh)
    except pyfuse3.FUSEError as exc:
        return exc.errno
    finally:
        await o.release(info.fh)
    return 0


async def names(o: Operations) -> dict[str, Node]:
    o.downloads.jobs._listed_at = 0.0  # list the server's jobs again
    return await o.downloads.directory.entries()


async def cat(o: Operations, name: str) -> bytes:
    dl = await walk(o, ".downloads")
    attr = await o.lookup(dl.st_ino, name.encode())
    info = await o.open(attr.st_ino, os.O_RDONLY, None)
    try:
        return await o.read(info.fh, 0, 1 << 20)
    finally:
        await o.release(info.fh)


def downloads(o: Operations) -> Downloads:
    return o.downloads


# -- item: a lost reply to the job request ----------------------------------------------------


@pytest.mark.parametrize(("keys", "listable"), [(True, False), (False, True), (True, True)],
                         ids=["key-honoured-no-list", "key-ignored-list", "key-and-list"])
async def test_a_lost_reply_to_the_job_request_makes_one_job_and_close_succeeds(
    nursery: trio.Nursery, keys: bool, listable: bool
) -> None:
    flow = Flow(lose=1, keys=keys, listable=listable)
    o = await mounted(flow, nursery)
    assert await write_manifest(o, b"lost.manifest", b"id:100\n") == 0
    assert len(flow.jobs) == 1, flow.jobs
    shown = await names(o)
    assert "lost.status" in shown and "lost.manifest" not in shown
    assert json.loads(await cat(o, "lost.status"))["job_id"] == flow.jobs[0]["id"]
    assert len(set(flow.posts)) == 1 and None not in flow.posts  # one key, every time


async def test_a_flow_ignoring_the_key_is_searched_before_asking_again(
    nursery: trio.Nursery,
) -> None:
    flow = Flow(lose=1, keys=False, listable=True)
    o = await mounted(flow, nursery)
    assert await write_manifest(o, b"once.manifest", b"id:100\n") == 0
    assert len(flow.posts) == 1  # found in the job list: not asked a second time


async def test_when_every_reply_is_lost_close_fails_and_the_job_shows_up_later(
    nursery: trio.Nursery,
) -> None:
    flow = Flow(lose=99, keys=True, listable=True)
    flow.listable = False  # the list fails too for now: nothing can be known
    o = await mounted(flow, nursery)
    assert await write_manifest(o, b"ghost.manifest", b"id:100\n") == errno.EIO
    assert len(flow.jobs) == 1  # Flow honoured the key on every request
    flow.listable = True
    downloads(o).jobs._can_list = True
    shown = await names(o)  # the next `ls` finds the job the lost replies made
    assert "ghost.status" in shown and "ghost.manifest" not in shown
    # Writing it again, as the docs say after an EIO, makes no second job.
    assert await write_manifest(o, b"ghost.manifest", b"id:100\n") == errno.EEXIST
    assert len(flow.jobs) == 1


@pytest.mark.parametrize("retry", ["close-again", "write-again", "rename-a-draft"])
@pytest.mark.parametrize("keys", [True, False], ids=["key-honoured", "key-ignored"])
async def test_retrying_after_an_eio_makes_no_second_job_however_it_is_done(
    nursery: trio.Nursery, retry: str, keys: bool
) -> None:
    # Nothing can be known: every reply is lost, and the job list is missing (a Flow that
    # honours the key: asked again with it) or failing (one that does not: not asked again).
    flow = Flow(lose=99, keys=keys, listable=not keys)
    flow.down = True
    o = await mounted(flow, nursery)
    dl = await walk(o, ".downloads")
    info, attr = await o.create(dl.st_ino, b"again.manifest", 0o644, os.O_WRONLY, None)
    await o.write(info.fh, 0, b"id:100\n")
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.flush(info.fh)
    assert err.value.errno == errno.EIO
    await o.release(info.fh)
    assert len(flow.jobs) == 1  # one job, though its answer never arrived
    flow.lose, flow.down = 0, False  # the network is back
    downloads(o).jobs._listed_at = float("inf")  # no `ls` meanwhile: the retry must look itself
    if retry == "close-again":  # e.g. `touch again.manifest`
        again = await o.open(attr.st_ino, os.O_WRONLY | os.O_APPEND, None)
        await o.flush(again.fh)
        await o.release(again.fh)
    elif retry == "write-again":
        assert await write_manifest(o, b"again.manifest", b"id:100\n") == 0
    else:
        assert await write_manifest(o, b"again.part", b"id:100\n") == 0
        assert await rename(o, b"again.part", b"again.manifest") == 0
    assert len(flow.jobs) == 1
    shown = await downloads(o).directory.entries()
    assert "again.status" in shown and "again.manifest" not in shown


# -- item: Flow refuses the job ----------------------------------------------------------------


async def test_a_job_flow_refuses_is_einval_with_flows_answer_in_error_and_log(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Flow()
    flow.refuse_jobs = True
    o = await mounted(flow, nursery)
    with caplog.at_level(logging.WARNING, logger="flowfs.downloads"):
        assert await write_manifest(o, b"no.manifest", b"id:100\n") == errno.EINVAL
    assert b"Too many files in one download" in await cat(o, "no.error")
    assert any("Too many files in one download" in r.getMessage() for r in caplog.records)


# -- item: memory of manifests being written ---------------------------------------------------


def comments(size: int) -> bytes:
    line = b"# " + b"x" * 1021 + b"\n"
    return line * (size // len(line))


async def test_manifests_being_written_share_one_budget_and_give_it_back(
    nursery: trio.Nursery,
) -> None:
    o = await mounted(Flow(), nursery, space=4 * 2**20)
    space = downloads(o).space
    for i in range(3):  # three open writers of 1 MiB of comments: 3 MiB
        assert await write_manifest(o, b"m%d.manifest" % i, comments(2**20)) == 0
    assert space.used == 3 * 2**20  # kept: nothing to submit yet, still being composed
    assert await write_manifest(o, b"m3.manifest", comments(2 * 2**20)) == errno.ENOSPC
    error = (await cat(o, "m3.error")).decode()
    assert "sets aside" in error and "finish or remove some" in error
    assert space.used <= space.limit
    dl = await walk(o, ".downloads")
    for i in range(3):
        await o.unlink(dl.st_ino, b"m%d.manifest" % i, None)
    assert space.used == 0  # the refused write stored nothing
    assert await write_manifest(o, b"m4.manifest", comments(2 * 2**20) + b"id:100\n") == 0


async def test_a_manifest_refused_at_close_gives_its_memory_back_but_stays_unsubmittable(
    nursery: trio.Nursery,
) -> None:
    flow = Flow()
    o = await mounted(flow, nursery)
    space = downloads(o).space
    text = comments(2**20) + b"id:100\nsamples/nope"  # the last line: checked on close
    assert await write_manifest(o, b"r.manifest", text) == errno.EINVAL
    assert space.used == 0
    assert "r.manifest" in await names(o)
    dl = await walk(o, ".downloads")
    attr = await o.lookup(dl.st_ino, b"r.manifest")
    info = await o.open(attr.st_ino, os.O_WRONLY | os.O_APPEND, None)  # `>>` cannot rescue it
    await o.write(info.fh, 0, b"id:101\n")
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.flush(info.fh)
    assert err.value.errno == errno.EINVAL
    await o.release(info.fh)
    assert flow.jobs == []


async def test_a_removed_manifest_gives_its_memory_back_even_while_open(
    nursery: trio.Nursery,
) -> None:
    o = await mounted(Flow(), nursery)
    dl = await walk(o, ".downloads")
    info, attr = await o.create(dl.st_ino, b"u.manifest", 0o644, os.O_WRONLY, None)
    await o.write(info.fh, 0, comments(2**20))
    await o.unlink(dl.st_ino, b"u.manifest", None)
    assert downloads(o).space.used == 0
    with pytest.raises(pyfuse3.FUSEError):  # writing on would hold memory nobody can free
        await o.write(info.fh, 2**20, comments(2**20))
    grow = pyfuse3.EntryAttributes()
    grow.st_size = 2**20
    with pytest.raises(pyfuse3.FUSEError):  # and so would ftruncate
        await o.setattr(attr.st_ino, grow, SimpleNamespace(update_size=True),  # type: ignore[arg-type]
                        info.fh, None)
    await o.flush(info.fh)
    await o.release(info.fh)
    assert downloads(o).space.used == 0


# -- item: one very long line ------------------------------------------------------------------


@pytest.mark.timeout(60)  # quadratic re-scanning took minutes here; linear, a fraction of 1 s
async def test_a_line_is_refused_once_it_passes_the_limit_and_never_rescanned(
    nursery: trio.Nursery,
) -> None:
    o = await mounted(Flow(), nursery)
    dl = await walk(o, ".downloads")
    info, _ = await o.create(dl.st_ino, b"long.manifest", 0o644, os.O_WRONLY, None)
    piece = b"x" * 1024
    offset, refused = 0, []
    for _ in range(10 * 1024):  # 10 MiB, no newline, 1 KiB a write; a writer going on
        try:
            offset += await o.write(info.fh, offset, piece)
        except pyfuse3.FUSEError as exc:
            refused.append(exc.errno)
    assert offset == 4096  # the line's first 4 KiB; the write passing the limit is refused
    assert set(refused) == {errno.EINVAL} and len(refused) == 10 * 1024 - 4
    with pytest.raises(pyfuse3.FUSEError):
        await o.flush(info.fh)
    await o.release(info.fh)
    assert (await cat(o, "long.error")).count(b"line 1: line longer than 4096 bytes") == 1


# -- item: a manifest that names too many files -------------------------------------------------


def big_directory(o: Operations, n: int) -> None:
    """A cached directory `big/` of ``n`` data files at the mount root."""
    big = StaticDir(o.tree, 0)
    big.children = {f"f{i}": FileNode(o.tree, DataFile(id=str(10**6 + i), filename=f"f{i}",
                                                        size=1, created=0.0))
                    for i in range(n)}
    o.tree.root.children["big"] = big


async def test_a_manifest_naming_too_many_files_is_refused_by_line_and_never_posted(
    nursery: trio.Nursery,
) -> None:
    flow = Flow()
    o = await mounted(flow, nursery)
    big_directory(o, 20_000)
    text = b"".join(b"big/\n" if i % 2 else b"./big\n" for i in range(4000))
    with trio.fail_after(20):  # walked once, not 4,000 times
        assert await write_manifest(o, b"huge.manifest", text) == errno.EINVAL
    error = (await cat(o, "huge.error")).decode()
    assert f"line 1: by this line the manifest names more than {MAX_JOB_FILES:,}" in error
    assert "timed out" not in error and "in time" not in error
    assert not [r for r in flow.requests if r.startswith("POST")]


async def test_checking_a_long_manifest_lets_other_requests_in(nursery: trio.Nursery) -> None:
    o = await mounted(Flow(), nursery)
    big_directory(o, 9_000)  # within the limit: it is walked to the end
    turns = 0
    done = trio.Event()

    async def other_requests() -> None:
        nonlocal turns
        while not done.is_set():
            await o.getattr(pyfuse3.ROOT_INODE)
            turns += 1
            await trio.lowlevel.checkpoint()

    async def check() -> None:
        try:
            assert await write_manifest(o, b"walk.manifest", b"big\n") == 0
        finally:
            done.set()

    async with trio.open_nursery() as n:
        n.start_soon(other_requests)
        n.start_soon(check)
    assert turns >= 10  # every CHECKPOINT_EVERY files, a turn for the others


# -- item: killed writers and drafts ---------------------------------------------------------


async def test_a_last_line_without_newline_is_refused_as_a_possibly_cut_write(
    nursery: trio.Nursery,
) -> None:
    flow = Flow()
    o = await mounted(flow, nursery)
    assert await write_manifest(o, b"cut.manifest", b"id:100\nid:10") == errno.EINVAL
    assert b"line 2: no newline at its end" in await cat(o, "cut.error")
    assert flow.jobs == []


async def rename(o: Operations, old: bytes, new: bytes, flags: int = 0) -> int:
    dl = await walk(o, ".downloads")
    try:
        await o.rename(dl.st_ino, old, dl.st_ino, new, flags, None)
    except pyfuse3.FUSEError as exc:
        return exc.errno
    return 0


async def test_a_draft_is_never_submitted_and_its_rename_submits_it(
    nursery: trio.Nursery,
) -> None:
    flow = Flow()
    o = await mounted(flow, nursery)
    assert await write_manifest(o, b"liver.manifest.part", b"id:100\nid:10") == 0  # killed
    assert flow.jobs == [] and "liver.manifest.part" in await names(o)
    assert await rename(o, b"liver.manifest.part", b"liver.manifest") == errno.EPERM
    assert "liver.manifest.part" in await names(o)  # all or nothing: the draft stays
    assert b"no newline" in await cat(o, "liver.error")
    assert await write_manifest(o, b"liver.manifest.part", b"id:100\nid:101\n") == 0
    assert await rename(o, b"liver.manifest.part", b"liver.manifest") == 0
    shown = await names(o)
    assert "liver.status" in shown and "liver.error" not in shown
    assert not {"liver.manifest", "liver.manifest.part"} & set(shown)
    assert [sorted(job["data"]) for job in flow.jobs] == [["100", "101"]]
    assert downloads(o).space.used == 0


async def test_renames_that_are_not_a_draft_becoming_a_manifest_are_refused(
    nursery: trio.Nursery,
) -> None:
    o = await mounted(Flow(), nursery)
    dl = await walk(o, ".downloads")
    info, _ = await o.create(dl.st_ino, b"open.tmp", 0o644, os.O_WRONLY, None)
    await o.write(info.fh, 0, b"id:100\n")
    assert await rename(o, b"open.tmp", b"open.manifest") == errno.EBUSY  # still written
    await o.flush(info.fh)
    await o.release(info.fh)
    assert await rename(o, b"open.tmp", b"other.tmp") == 0
    assert await rename(o, b"README.txt", b"x.manifest") == errno.EPERM
    assert await rename(o, b"other.tmp", b"x.txt") == errno.EPERM
    assert await rename(o, b"nothing.tmp", b"x.manifest") == errno.ENOENT
    assert await write_manifest(o, b"taken.manifest", b"") == 0
    assert await rename(o, b"other.tmp", b"taken.manifest", 1) == errno.EEXIST  # NOREPLACE
    samples = await walk(o, "projects")
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.rename(samples.st_ino, b"P", samples.st_ino, b"Q", 0, None)
    assert err.value.errno == errno.EROFS


async def test_draft_names(nursery: trio.Nursery) -> None:
    o = await mounted(Flow(), nursery)
    for good in (b"x.manifest.part", b".x.manifest.tmp", b"a.tmp"):
        assert await write_manifest(o, good, b"id:100\n") == 0, good
    for bad in (b"x.manifest~", b".x.swp", b"x.part.txt", b".part"):
        assert await write_manifest(o, bad, b"id:100\n") == errno.EINVAL, bad


def test_an_archive_is_cached_apart_from_a_data_file_and_from_its_other_sizes() -> None:
    """Job and data ids are separate sequences, so job 7's ZIP and data file 7 may share a
    number (and a size): their blocks must never be taken for each other's, in memory or
    on disk; nor may the blocks of an archive whose size Flow changes mix with the new."""
    from flowfs.downloads.jobs import Job
    from flowfs.inodes import InodeTable

    api = SimpleNamespace(job_url=lambda i: f"https://files/downloads/{i}",
                          data_url=lambda i, name: f"https://files/downloads/{i}/{name}")
    tree = SimpleNamespace(inodes=InodeTable(), started=0.0, api=api)
    job = Job(tree, "x", {"id": "7", "status": "completed", "size": 100})  # type: ignore[arg-type]
    archive = job.zip_node()
    data = FileNode(tree, DataFile(id="7", filename="x.zip", size=100, created=0.0))
    assert archive is not None
    assert archive.cache_key != data.cache_key and archive.disk_id != data.disk_id
    job.info["size"] = 200
    resized = job.zip_node()
    assert resized is not None and resized.cache_key != archive.cache_key
