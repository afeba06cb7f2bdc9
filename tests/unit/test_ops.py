"""Operations called directly (no kernel): the FUSE answers a tool would get."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pyfuse3
import pytest
import trio

from flowfs.api import FlowAPI
from flowfs.auth import Credentials
from flowfs.byid import index_names
from flowfs.downloads import EXPIRED_KEPT, Downloads, DownloadsDir
from flowfs.inodes import ROOT_INODE, InodeTable
from flowfs.nodes import Node
from flowfs.ops import Listing, Operations
from flowfs.reader import Reader, ReaderConfig
from flowfs.readme import ROOT_README
from flowfs.tree import Tree

BYTES = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: crosses blocks, ends part-way
DATA = [
    {"id": "100", "filename": "reads.fastq.gz", "size": len(BYTES), "created": 1700000000,
     "md5": "m" * 32, "sample": {"id": "10"}, "execution": None},
    {"id": "101", "filename": "reads.fastq.gz", "size": 4, "created": 1700000001,
     "sample": {"id": "10"}, "execution": None},
]


class FakeFlow:
    """A tiny in-memory Flow: enough API for the tree, ranges and bulk jobs."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.jobs: list[dict[str, Any]] = []
        self.refuse_jobs = False
        self.refuse_reads = False

    def __call__(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        self.requests.append(f"{req.method} {path}")
        if path.startswith("/downloads/") and self.refuse_reads:
            return httpx.Response(403, json={"error": "Forbidden"})
        if path.startswith("/downloads/100/"):
            return self.ranged(req, BYTES)
        if path.startswith("/downloads/101/"):
            return self.ranged(req, b"abcd")
        if req.method == "POST" and path == "/api/downloads" and self.refuse_jobs:
            return httpx.Response(400, json={"error": "Too many files in one download"})
        if req.method == "POST" and path == "/api/downloads":
            body = json.loads(req.content)
            job = {"id": "job-1", "name": body["name"], "status": "pending", "progress": 0,
                   "data": body["data_ids"]}
            self.jobs.append(job)
            return httpx.Response(201, json=job)
        by_id = {f"/api/data/{d['id']}": d for d in DATA}
        if path in by_id:
            return httpx.Response(200, json=by_id[path])
        listing = self.listing(path)
        if listing is None:
            return httpx.Response(404, json={"error": "Not found"})
        key, items = listing
        return httpx.Response(200, json={"count": len(items), "page": 1, key: items})

    def listing(self, path: str) -> tuple[str, list[dict[str, Any]]] | None:
        table: dict[str, tuple[str, list[dict[str, Any]]]] = {
            "/api/projects/owned": ("projects", [{"id": "1", "name": "P", "created": 5}]),
            "/api/projects/shared": ("projects", []),
            "/api/projects/1/samples": ("samples", [{"id": "10", "name": "s/1"}]),
            "/api/projects/1/executions": ("executions", []),
            "/api/samples/10/data": ("data", DATA),
            "/api/downloads": ("jobs", self.jobs),
        }
        return table.get(path)

    @staticmethod
    def ranged(req: httpx.Request, data: bytes) -> httpx.Response:
        a, b = (int(x) for x in req.headers["range"].removeprefix("bytes=").split("-"))
        return httpx.Response(206, stream=httpx.ByteStream(data[a:b + 1]),
                              headers={"Content-Range": f"bytes {a}-{b}/{len(data)}"})


@asynccontextmanager
async def operations(flow: Callable[[httpx.Request], httpx.Response], *, ttl: float = 60,
                     cache_bytes: int = 32 * 2**20, uid: int | None = None,
                     gid: int | None = None,
                     more: Callable[[Tree], dict[str, Node]] | None = None,
                     ) -> AsyncIterator[Operations]:
    """``Operations`` over a mock Flow, built as ``mount`` builds them: the tree, the
    ``.downloads/`` wing and ``more(tree)`` at its root, a reader fetching through the API."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(flow))
    api = FlowAPI("http://f/api", "http://f", Credentials("token", "test", token="t"), client)
    inodes: InodeTable[Node] = InodeTable()
    tree = Tree(api, inodes, ttl=ttl, invalidate=lambda ino, name: None)
    downloads = Downloads(tree, "/mnt")
    tree.add_root_entries({".downloads": downloads.directory, **(more(tree) if more else {})})
    async with client, trio.open_nursery() as nursery:
        reader = Reader(api_fetch(api), nursery, ReaderConfig(cache_bytes=cache_bytes))
        yield Operations(tree, inodes, reader, downloads, ttl=ttl,
                         uid=os.getuid() if uid is None else uid,
                         gid=os.getgid() if gid is None else gid)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def ops() -> AsyncIterator[tuple[Operations, FakeFlow]]:
    flow = FakeFlow()
    async with operations(flow) as o:
        yield o, flow


@pytest.mark.parametrize("umask, file_mode, dir_mode", [
    (0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775), (0o777, 0, 0),
])
async def test_modes_are_rclones_0666_and_0777_less_the_umask_with_the_given_owner(
        ops: Any, umask: int, file_mode: int, dir_mode: int) -> None:
    o, _ = ops
    o.uid, o.gid, o.umask = 4321, 8765, umask
    for names, mode in ((("projects", "P", "samples", "s_1", "reads.fastq.gz"), file_mode),
                        (("projects", "P", "samples"), dir_mode), (("README.txt",), file_mode),
                        ((".downloads",), dir_mode), ((), dir_mode)):
        attr = await walk(o, *names)
        assert stat.S_IMODE(attr.st_mode) == mode, names
        assert (attr.st_uid, attr.st_gid) == (4321, 8765), names


async def test_a_data_file_counts_two_links_so_du_and_rsync_take_it_once(ops: Any) -> None:
    o, _ = ops
    one = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    assert one.st_nlink == 2  # its place and by-id/<id>, at least
    assert (await walk(o, "README.txt")).st_nlink == 1
    assert (await walk(o, "samples")).st_nlink == 2


async def test_by_id_dir_holds_the_file_under_its_name(ops: Any) -> None:
    o, flow = ops
    by_id = await walk(o, "by-id", "100")
    folder = await walk(o, "by-id", "100.d")
    assert stat.S_ISDIR(folder.st_mode) and stat.S_ISREG(by_id.st_mode)
    fh = await o.opendir(folder.st_ino, None)
    names = [name for name, _ in o._handles[fh].entries]
    assert names == ["reads.fastq.gz"]  # 101 shares the name but is no index of it
    inside = await walk(o, "by-id", "100.d", "reads.fastq.gz")
    assert inside.st_ino == by_id.st_ino and inside.st_size == len(BYTES)
    assert "GET /api/samples/10/data" in flow.requests
    for name in ("100.x", "x.d", ".d", "100.d.d"):
        with pytest.raises(pyfuse3.FUSEError) as err:
            await walk(o, "by-id", name)
        assert err.value.errno == errno.ENOENT


@pytest.mark.parametrize("filename, index, found", [
    ("x.bam", "x.bam.bai", True), ("x.bam", "x.bai", True), ("x.bam", "x.bam.csi", True),
    ("x.cram", "x.crai", True), ("x.cram", "x.cram.crai", True),
    ("x.vcf.gz", "x.vcf.gz.tbi", True), ("x.vcf.gz", "x.vcf.gz.csi", True),
    ("ref.fa", "ref.fa.fai", True), ("x.vcf.gz", "x.vcf.tbi", False),
    ("x.bam", "y.bam.bai", False), ("x.bam", "x.bam", False),
])
def test_index_names_are_those_tools_look_for(filename: str, index: str, found: bool) -> None:
    assert (index in index_names(filename)) is found


async def test_write_bits_shown_do_not_make_a_data_file_writable(ops: Any) -> None:
    o, _ = ops
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    assert attr.st_mode & 0o200
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.open(attr.st_ino, os.O_WRONLY, None)
    assert err.value.errno == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.access(attr.st_ino, os.W_OK, None)
    assert err.value.errno == errno.EROFS


def api_fetch(api: FlowAPI) -> Any:
    async def fetch(target: Any, start: int, end: int) -> Any:
        return await api.fetch_range(target.url, start, end)
    return fetch


async def walk(ops: Operations, *names: str) -> pyfuse3.EntryAttributes:
    ino = ROOT_INODE
    attr = await ops.getattr(ino)
    for name in names:
        attr = await ops.lookup(ino, name.encode())
        ino = attr.st_ino
    return attr


async def test_a_file_has_exact_attributes_and_xattrs(ops: Any) -> None:
    o, _ = ops
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    assert stat.S_ISREG(attr.st_mode) and attr.st_mode & 0o777 == 0o644
    assert attr.st_size == len(BYTES)
    assert attr.st_mtime_ns == 1700000000 * 10**9
    assert await o.getxattr(attr.st_ino, b"user.flow.id", None) == b"100"
    names = set(await o.listxattr(attr.st_ino, None))
    assert {b"user.flow.id", b"user.flow.md5", b"user.flow.url", b"user.flow.kind"} <= names
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.getxattr(attr.st_ino, b"user.other", None)
    assert err.value.errno == pyfuse3.ENOATTR


async def test_collisions_keep_the_lowest_id_bare(ops: Any) -> None:
    o, _ = ops
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads~101.fastq.gz")
    assert attr.st_size == 4


async def test_reads_return_exact_bytes_across_blocks(ops: Any) -> None:
    o, _ = ops
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    info = await o.open(attr.st_ino, os.O_RDONLY, None)
    assert info.keep_cache
    for off, size in [(0, 10), (262140, 10), (len(BYTES) - 3, 100), (len(BYTES), 10)]:
        assert await o.read(info.fh, off, size) == BYTES[off:off + size]
    await o.release(info.fh)


async def test_a_failed_read_is_logged_with_its_path_and_data_id(
        ops: Any, caplog: pytest.LogCaptureFixture) -> None:
    o, flow = ops
    caplog.set_level(logging.DEBUG, logger="flowfs")
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    info = await o.open(attr.st_ino, os.O_RDONLY, None)
    flow.refuse_reads = True
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.read(info.fh, 4096, 100)
    assert err.value.errno == errno.EACCES  # the same errno as without the path
    assert ("read: projects/P/samples/s_1/reads.fastq.gz (data id 100) at 4096+100: "
            in caplog.text), caplog.text


async def test_a_failed_read_is_recorded_for_status_with_its_path(ops: Any) -> None:
    o, flow = ops
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    with pytest.raises(pyfuse3.FUSEError):
        await o.lookup(attr.st_ino - 1, b"no-such-name", None)  # an answer, not a failure
    assert o.failures.count == 0
    info = await o.open(attr.st_ino, os.O_RDONLY, None)
    flow.refuse_reads = True
    with pytest.raises(pyfuse3.FUSEError):
        await o.read(info.fh, 4096, 100)
    assert o.failures.as_json()["by_error"] == {"EACCES": 1}
    last = o.failures.last
    assert last is not None and last.operation == "read" and last.error == "EACCES"
    assert last.message.startswith(
        "projects/P/samples/s_1/reads.fastq.gz (data id 100) at 4096+100: ")
    assert abs(last.at - time.time()) < 60


async def test_paths_come_from_listings_too(ops: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    o, _ = ops
    monkeypatch.setattr(pyfuse3, "readdir_reply", lambda *args: True)  # no kernel to reply to
    samples = await walk(o, "projects", "P", "samples")
    fh = await o.opendir(samples.st_ino, None)
    await o.readdir(fh, 0, None)  # type: ignore[arg-type]
    [(name, node)] = o._handle(fh, Listing).entries
    assert o.inodes.path(node.inode) == "projects/P/samples/s_1"


async def test_every_operation_is_logged_at_debug_without_its_data(
        ops: Any, caplog: pytest.LogCaptureFixture) -> None:
    o, _ = ops
    caplog.set_level(logging.DEBUG, logger="flowfs.ops")
    with pytest.raises(pyfuse3.FUSEError):
        await walk(o, "projects", "nope")
    downloads = await walk(o, ".downloads")
    info, _ = await o.create(downloads.st_ino, b"job.manifest", 0o644, os.O_WRONLY, None)
    with pytest.raises(pyfuse3.FUSEError):  # not a path: refused, but logged all the same
        await o.write(info.fh, 0, b"secret-looking-line\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "flowfs.ops"]
    assert any(line.startswith("lookup(1, 'projects') ok ") for line in lines), lines
    assert any(line.startswith("lookup(") and "'nope') ENOENT" in line for line in lines), lines
    assert any(line.startswith(f"write({info.fh}, 0, <20 bytes>) EINVAL") for line in lines), lines
    assert "secret-looking-line" not in caplog.text


async def test_getattr_and_a_second_lookup_send_no_request(ops: Any) -> None:
    o, flow = ops
    attr = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    before = len(flow.requests)
    await o.getattr(attr.st_ino)
    await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
    assert len(flow.requests) == before


async def test_unknown_names_are_enoent(ops: Any) -> None:
    o, _ = ops
    with pytest.raises(pyfuse3.FUSEError) as err:
        await walk(o, "projects", "nope")
    assert err.value.errno == errno.ENOENT


@pytest.mark.parametrize("call", ["mkdir", "unlink", "create", "open_write", "setattr"])
async def test_changes_outside_downloads_are_erofs(ops: Any, call: str) -> None:
    o, _ = ops
    parent = await walk(o, "projects")
    with pytest.raises(pyfuse3.FUSEError) as err:
        if call == "mkdir":
            await o.mkdir(parent.st_ino, b"x", 0o755, None)
        elif call == "unlink":
            await o.unlink(parent.st_ino, b"P", None)
        elif call == "create":
            await o.create(parent.st_ino, b"x", 0o644, os.O_WRONLY, None)
        elif call == "open_write":
            await o.open(ROOT_INODE + 1, os.O_WRONLY, None)
        else:
            await o.setattr(ROOT_INODE + 1, pyfuse3.EntryAttributes(), pyfuse3.SetattrFields(),
                            None, None)
    assert err.value.errno == errno.EROFS


async def test_a_manifest_becomes_a_job_on_close(ops: Any) -> None:
    o, flow = ops
    dl = await walk(o, ".downloads")
    assert dl.st_mode & 0o777 == 0o755
    info, attr = await o.create(dl.st_ino, b"x.manifest", 0o644, os.O_WRONLY, None)
    text = b"# a comment\nprojects/P/samples\n"
    assert await o.write(info.fh, 0, text) == len(text)
    await o.flush(info.fh)
    await o.release(info.fh)
    assert flow.jobs and sorted(flow.jobs[0]["data"]) == ["100", "101"]
    status = await o.lookup(dl.st_ino, b"x.status")
    sinfo = await o.open(status.st_ino, os.O_RDONLY, None)
    assert sinfo.direct_io
    assert json.loads(await o.read(sinfo.fh, 0, 65536))["status"] == "pending"


async def test_a_bad_line_fails_the_write_and_creates_no_job(ops: Any) -> None:
    o, flow = ops
    dl = await walk(o, ".downloads")
    info, _ = await o.create(dl.st_ino, b"bad.manifest", 0o644, os.O_WRONLY, None)
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.write(info.fh, 0, b"projects/nope\n")
    assert err.value.errno == errno.EINVAL
    with pytest.raises(pyfuse3.FUSEError):
        await o.flush(info.fh)
    assert flow.jobs == []
    error = await o.lookup(dl.st_ino, b"bad.error")
    einfo = await o.open(error.st_ino, os.O_RDONLY, None)
    assert b"line 1: projects/nope" in await o.read(einfo.fh, 0, 4096)


@pytest.mark.parametrize(("name", "code"), [(b".x.manifest", errno.EINVAL),
                                            (b"x.txt", errno.EINVAL)])
async def test_bad_names_in_downloads(ops: Any, name: bytes, code: int) -> None:
    o, _ = ops
    dl = await walk(o, ".downloads")
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.create(dl.st_ino, name, 0o644, os.O_WRONLY, None)
    assert err.value.errno == code


async def test_an_unexpected_bug_is_eio_not_a_crash(ops: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    o, _ = ops

    def boom(ino: int) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(o.tree, "node", boom)
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.getattr(ROOT_INODE)
    assert err.value.errno == errno.EIO


async def test_a_refresh_keeps_inodes_and_invalidates_changed_names() -> None:
    flow = FakeFlow()
    client = httpx.AsyncClient(transport=httpx.MockTransport(flow))
    api = FlowAPI("http://f/api", "http://f", Credentials("token", "test", token="t"), client)
    inodes: InodeTable[Node] = InodeTable()
    invalidated: list[str] = []
    tree = Tree(api, inodes, ttl=0, invalidate=lambda ino, name: invalidated.append(name))
    async with client, trio.open_nursery() as nursery:
        reader = Reader(api_fetch(api), nursery, ReaderConfig(cache_bytes=32 * 2**20))
        o = Operations(tree, inodes, reader, Downloads(tree, "/mnt"), uid=0, gid=0, ttl=0)
        kept = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
        gone = await walk(o, "projects", "P", "samples", "s_1", "reads~101.fastq.gz")
        DATA.append({"id": "102", "filename": "new.bam", "size": 1, "created": 1})
        removed = DATA.pop(1)
        try:
            again = await walk(o, "projects", "P", "samples", "s_1", "reads.fastq.gz")
            new = await walk(o, "projects", "P", "samples", "s_1", "new.bam")
            with pytest.raises(pyfuse3.FUSEError):
                await walk(o, "projects", "P", "samples", "s_1", "reads~101.fastq.gz")
        finally:
            DATA.pop()
            DATA.insert(1, removed)
        assert again.st_ino == kept.st_ino
        assert new.st_ino not in (kept.st_ino, gone.st_ino)
        assert "reads~101.fastq.gz" in invalidated and "new.bam" in invalidated
        assert "reads.fastq.gz" not in invalidated
        nursery.cancel_scope.cancel()


async def test_a_whole_project_with_an_empty_part_can_be_archived(ops: Any) -> None:
    o, flow = ops  # the project has samples with data but no executions at all
    dl = await walk(o, ".downloads")
    info, _ = await o.create(dl.st_ino, b"p.manifest", 0o644, os.O_WRONLY, None)
    await o.write(info.fh, 0, b"projects/P\n")
    await o.flush(info.fh)
    await o.release(info.fh)
    assert flow.jobs and sorted(flow.jobs[0]["data"]) == ["100", "101"]


async def test_lines_written_after_an_early_submission_fail_instead_of_vanishing(
    ops: Any,
) -> None:
    o, flow = ops  # e.g. `{ echo a; cmd; echo b; } > m`: cmd's exit flushes the shared file
    dl = await walk(o, ".downloads")
    info, _ = await o.create(dl.st_ino, b"e.manifest", 0o644, os.O_WRONLY, None)
    await o.write(info.fh, 0, b"id:100\n")
    await o.flush(info.fh)
    assert len(flow.jobs) == 1
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.write(info.fh, 7, b"id:101\n")
    assert err.value.errno == errno.EIO
    await o.release(info.fh)
    assert len(flow.jobs) == 1


async def test_a_second_writer_is_busy_and_each_close_tells_its_own_fate(ops: Any) -> None:
    o, flow = ops
    dl = await walk(o, ".downloads")
    first, attr = await o.create(dl.st_ino, b"two.manifest", 0o644, os.O_WRONLY, None)
    with pytest.raises(pyfuse3.FUSEError) as err:  # it would truncate or mix first's lines
        await o.open(attr.st_ino, os.O_WRONLY | os.O_TRUNC, None)
    assert err.value.errno == errno.EBUSY
    await o.write(first.fh, 0, b"id:100\n")
    await o.flush(first.fh)  # close(2): submitted, and close says so
    assert len(flow.jobs) == 1 and flow.jobs[0]["data"] == ["100"]
    await o.release(first.fh)
    assert len(flow.jobs) == 1


async def test_a_writer_may_start_once_the_other_closed_before_its_release(ops: Any) -> None:
    o, flow = ops  # the kernel sends release after close(2) returns: it may come late
    dl = await walk(o, ".downloads")
    first, attr = await o.create(dl.st_ino, b"late.manifest", 0o644, os.O_WRONLY, None)
    await o.flush(first.fh)  # `touch`: nothing written, nothing submitted
    second = await o.open(attr.st_ino, os.O_WRONLY | os.O_TRUNC, None)
    await o.write(second.fh, 0, b"id:101\n")
    await o.flush(second.fh)
    await o.release(first.fh)
    await o.release(second.fh)
    assert [job["data"] for job in flow.jobs] == [["101"]]


async def test_expired_jobs_say_so_then_vanish_after_an_hour(ops: Any) -> None:
    o, flow = ops
    now = time.time()

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    flow.jobs += [
        {"id": "j-recent", "name": "recent.zip", "status": "expired", "size": 10,
         "created": iso(now - 7200), "expires": iso(now - 60)},
        {"id": "j-old", "name": "old.zip", "status": "expired", "size": 10,
         "created": iso(now - 90000), "expires": iso(now - 2 * EXPIRED_KEPT)},
        {"id": "j-done", "name": "done.zip", "status": "completed", "size": 10,
         "created": iso(now - 60), "expires": iso(now + 3600)},
    ]
    dl = await walk(o, ".downloads")
    node = o.inodes.get(dl.st_ino)
    assert isinstance(node, DownloadsDir)
    names = set(await node.entries())
    assert {"recent.status", "done.status", "done.zip"} <= names
    assert not {"recent.zip", "old.status", "old.zip"} & names
    status = await o.lookup(dl.st_ino, b"recent.status")
    fh = await o.open(status.st_ino, os.O_RDONLY, None)
    assert json.loads(await o.read(fh.fh, 0, 65536))["status"] == "expired"
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.lookup(dl.st_ino, b"old.status")
    assert err.value.errno == errno.ENOENT
    # An hour after its expiry the recent one vanishes too, and its name is free again.
    flow.jobs[0]["expires"] = iso(now - EXPIRED_KEPT - 1)
    o.downloads.jobs._listed_at = 0.0
    assert "recent.status" not in await node.entries()
    await o.create(dl.st_ino, b"recent.manifest", 0o644, os.O_WRONLY, None)  # no EEXIST


async def test_a_long_expired_job_costs_no_inode_however_often_listed(ops: Any) -> None:
    o, flow = ops
    expired = datetime.fromtimestamp(time.time() - 2 * EXPIRED_KEPT, UTC).isoformat()
    flow.jobs.append({"id": "j-old", "name": "old.zip", "status": "expired", "size": 10,
                      "created": expired, "expires": expired})
    dl = await walk(o, ".downloads")
    node = o.inodes.get(dl.st_ino)
    assert isinstance(node, DownloadsDir)
    assert "old.status" not in await node.entries()
    known = len(o.inodes)
    for _ in range(5):
        o.downloads.jobs._listed_at = 0.0  # the next listing asks the server again
        assert "old.status" not in await node.entries()
    assert len(o.inodes) == known


async def test_a_manifest_refused_at_close_is_not_sent_again_on_release(ops: Any) -> None:
    o, flow = ops
    flow.refuse_jobs = True
    dl = await walk(o, ".downloads")
    info, _ = await o.create(dl.st_ino, b"big.manifest", 0o644, os.O_WRONLY, None)
    await o.write(info.fh, 0, b"id:100\n")
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.flush(info.fh)  # close(2) reports the refusal
    assert err.value.errno == errno.EINVAL
    await o.release(info.fh)
    assert flow.requests.count("POST /api/downloads") == 1
    assert flow.jobs == []


async def test_a_directory_handle_is_no_file_handle_and_the_reverse(ops: Any) -> None:
    o, _ = ops
    folder = await walk(o, "projects")
    listing = await o.opendir(folder.st_ino, None)
    readme = await o.open((await walk(o, "README.txt")).st_ino, os.O_RDONLY, None)
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.read(listing, 0, 10)
    assert err.value.errno == errno.EBADF
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.flush(listing)
    assert err.value.errno == errno.EBADF
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.readdir(readme.fh, 0, None)  # type: ignore[arg-type]
    assert err.value.errno == errno.EBADF
    assert await o.read(readme.fh, 0, 10) == ROOT_README.encode()[:10]  # still its own


async def test_no_part_of_the_mount_takes_a_root_name_another_has(ops: Any) -> None:
    o, _ = ops
    projects = await walk(o, "projects")
    with pytest.raises(ValueError, match="projects"):
        o.tree.add_root_entries({"projects": o.downloads.directory, "new": o.tree.root})
    assert (await walk(o, "projects")).st_ino == projects.st_ino
    with pytest.raises(pyfuse3.FUSEError):
        await walk(o, "new")  # nothing of a refused batch is added


@pytest.mark.parametrize(("where", "flags", "code"), [
    ("out of .downloads", 0, errno.EROFS),
    ("into .downloads", 0, errno.EROFS),
    ("elsewhere, exchanging", 2, errno.EROFS),  # RENAME_EXCHANGE: read-only first
    ("in .downloads, exchanging", 2, errno.EPERM),
    ("in .downloads, whiteout", 4, errno.EPERM),
])
async def test_only_plain_renames_within_downloads_are_accepted(
        ops: Any, where: str, flags: int, code: int) -> None:
    o, _ = ops
    dl = (await walk(o, ".downloads")).st_ino
    root = ROOT_INODE
    info, _ = await o.create(dl, b"a.part", 0o644, os.O_WRONLY, None)
    await o.release(info.fh)
    old, new = {"out of .downloads": (dl, root), "into .downloads": (root, dl),
                "elsewhere, exchanging": (root, root)}.get(where, (dl, dl))
    name = b"a.part" if old == dl else b"README.txt"
    with pytest.raises(pyfuse3.FUSEError) as err:
        await o.rename(old, name, new, b"b.part", flags, None)
    assert err.value.errno == code
    assert "a.part" in await o.downloads.directory.entries()  # nothing moved
