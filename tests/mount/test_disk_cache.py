"""The disk cache through real mounts: a remount reads from disk, damage never reaches a
reader, a killed daemon leaves nothing wrong, two users share one directory without one
reading what Flow refuses them, the bound holds, and a full or read-only disk only costs
network reads.

The catalog has six 6 MiB files of random bytes (24 blocks of 256 KiB each, and not a
multiple of them), so every test reads real Range requests whose count the reference
server's access log shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    DEADLINE,
    MD5S,
    Mount,
    Processes,
    Server,
    flowfs,
    md5s,
    random_files_catalog,
    sh,
    user_env,
    wait_for,
)

from flowfs import directio
from flowfs.config import normalise_url
from flowfs.diskcache import Place, Store, filesystem_type, is_memory_fs, is_network_fs
from flowfs.diskfetch import disk_namespace
from flowfs.extentfile import HEADER_SIZE, entry

BLOCK = 256 * 1024
SIZE = 6 * 2**20 + 4321
NAMES = [f"big{i}.bin" for i in range(5)] + ["shared.bin"]
SECRET, SHARED = "big0.bin", "shared.bin"


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_files_catalog(tmp_path_factory.mktemp("diskcache-catalog"), NAMES, SIZE,
                                100, users=("alice", "bob"), shared_with={SHARED: ["bob"]})


@pytest.fixture(scope="module")
def records(catalog_path: Path, server: Server) -> dict[str, dict[str, Any]]:
    """The catalog's data by file name, each with the id its disk cache entry is named by
    (this server's, as a mount of it names them)."""
    namespace = disk_namespace(normalise_url(server.files))
    return {d["filename"]: {**d, "disk_id": namespace + d["id"]}
            for d in json.loads(catalog_path.read_text())["data"]}


@pytest.fixture(scope="module")
def sources(catalog_path: Path, records: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: record["md5"] for name, record in records.items()}


@pytest.fixture(scope="module")
def server(catalog_path: Path, module_processes: Processes) -> Server:
    return module_processes.server(catalog_path)


Start = Callable[..., Mount]


@pytest.fixture
def start(processes: Processes, server: Server) -> Start:
    """``start(cache_dir, *flags, user="alice", via=server)``: a mount with that cache."""
    def make(cache: Path, *flags: str, user: str = "alice", via: Server | None = None,
             **env: str) -> Mount:
        return processes.mount(via or server, user_env(user, f"{user}-pw", **env),
                               "--disk-cache", "--cache-dir", str(cache), *flags)
    return make


def test_by_default_it_is_on_under_xdg_cache_home_made_if_missing(
        processes: Processes, server: Server, sources: dict[str, str],
        tmp_path: Path) -> None:
    """On by default, even for a fresh account with no ~/.cache yet."""
    home = tmp_path / "xdg-cache"  # does not exist
    env = user_env("alice", "alice-pw", XDG_CACHE_HOME=str(home))
    del env["FLOWFS_DISK_CACHE"]  # the tests' harness turns it off: here, flowfs's default
    first = processes.mount(server, env)
    assert read(first, "big1.bin") == {"big1.bin": sources["big1.bin"]}
    settle(first, blocks_of(SIZE))
    first.close()
    assert os.stat(home / "flowfs").st_mode & 0o777 == 0o700  # the user's alone
    mark = len(server.requests())
    again = processes.mount(server, env)
    assert read(again, "big1.bin") == {"big1.bin": sources["big1.bin"]}
    assert file_requests(server, mark) == []
    assert stats(again)["disk_cache"]["hits"] == blocks_of(SIZE)


def stats(m: Mount) -> dict[str, Any]:
    return json.loads(sh("cat", m.p(".flowfs/stats")).stdout)


def blocks_of(size: int) -> int:
    return -(-size // BLOCK)


def settle(m: Mount, blocks: int) -> dict[str, Any]:
    """Wait until the mount has written (or given up writing) ``blocks`` blocks."""
    def done() -> dict[str, Any] | None:
        disk = stats(m)["disk_cache"]
        return disk if disk["blocks_written"] + disk["write_skipped"] >= blocks else None
    return wait_for(done, what=f"{blocks} blocks written to the disk cache")


def file_requests(server: Server, mark: int) -> list[dict[str, Any]]:
    return [r for r in server.requests()[mark:] if not r["path"].startswith("/api")]


def read(m: Mount, *names: str) -> dict[str, str]:
    got = md5s([m.p(f"data/{name}") for name in names], timeout=60)
    return {Path(path).name: digest for path, digest in got.items()}


def fill(start: Start, cache: Path, *names: str) -> None:
    """One mount reads ``names`` into ``cache`` and is unmounted."""
    m = start(cache)
    read(m, *names)
    settle(m, blocks_of(SIZE) * len(names))
    # It wrote past the page cache wherever the cache's filesystem is a disk that takes it.
    fstype = filesystem_type(cache)
    direct = not (is_network_fs(fstype) or is_memory_fs(fstype)) and directio.supported(cache)
    assert stats(m)["disk_cache"]["direct_writes"] is direct
    m.close()


def block_place(cache: Path, record: dict[str, Any], index: int) -> Place:
    item = entry(record["disk_id"], record["size"], record["md5"], BLOCK)
    return Store(cache).place(item, index)


def test_a_remount_reads_cached_bytes_without_one_file_request(
        start: Start, server: Server, tmp_path: Path, sources: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    fill(start, cache, "big1.bin")
    mark = len(server.requests())
    m = start(cache)
    assert read(m, "big1.bin") == {"big1.bin": sources["big1.bin"]}
    assert file_requests(server, mark) == []
    s = stats(m)
    assert s["bytes_from"] == {"memory": 0, "disk": SIZE, "network": 0}
    assert s["disk_cache"]["hits"] == blocks_of(SIZE)


def test_the_write_queue_comes_out_of_the_memory_budget(start: Start, processes: Processes,
                                                        server: Server, tmp_path: Path) -> None:
    """Blocks queued for the disk are memory too: the cache keeps that much less, so the
    daemon stays within --cache-size (64M: 16M of read-ahead, an 8M queue, 40M cached)."""
    on = stats(start(tmp_path / "cache", "--cache-size", "64M"))
    off = stats(processes.mount(server, user_env("alice", "alice-pw"), "--cache-size", "64M"))
    assert on["disk_cache"]["max_bytes"] and off["disk_cache"] is None
    assert off["cache"]["capacity_bytes"] == 48 * 2**20
    assert on["cache"]["capacity_bytes"] == 40 * 2**20


DAMAGED = (1, 5, 9)


def damage(place: Place, how: str, elsewhere: Place) -> None:
    """Damage one block where it lives, in its file (as the disk or a crash would)."""
    raw = bytearray(place.path.read_bytes())
    head = slice(place.header_at, place.header_at + HEADER_SIZE)
    if how == "flipped":
        raw[place.data_at + 1000] ^= 0x10
    elif how == "truncated":  # the file cut in the middle of this block
        raw = raw[: place.data_at + BLOCK // 2]
    elif how == "header-lost":  # a writer killed between the bytes and their header
        raw[head] = bytes(HEADER_SIZE)
    elif how == "half-written":  # a header torn by a crash of the machine
        raw[place.header_at + 8 : head.stop] = bytes(HEADER_SIZE - 8)
    elif how == "another-file's":  # the same block of another file, header and bytes
        other = elsewhere.path.read_bytes()
        raw[head] = other[head]
        raw[place.data_at : place.data_at + BLOCK] = other[
            elsewhere.data_at : elsewhere.data_at + BLOCK]
    place.path.write_bytes(bytes(raw))


def requested_blocks(requests: list[dict[str, Any]]) -> set[int]:
    out: set[int] = set()
    for r in requests:
        first, last = (int(n) for n in r["range"].removeprefix("bytes=").split("-"))
        out.update(range(first // BLOCK, last // BLOCK + 1))
    return out


@pytest.mark.parametrize("how", ["flipped", "truncated", "header-lost", "half-written",
                                 "another-file's", "file-deleted"])
def test_a_damaged_cache_never_yields_a_wrong_byte(
        start: Start, server: Server, tmp_path: Path, sources: dict[str, str],
        records: dict[str, dict[str, Any]], how: str) -> None:
    cache = tmp_path / "cache"
    fill(start, cache, "big2.bin", "big3.bin")
    if how == "file-deleted":
        block_place(cache, records["big2.bin"], 0).path.unlink()
        lost, damaged = set(range(blocks_of(SIZE))), 0
    elif how == "truncated":  # cut in the last damaged block: all blocks after it go too
        damage(block_place(cache, records["big2.bin"], DAMAGED[-1]), how,
               block_place(cache, records["big3.bin"], DAMAGED[-1]))
        lost = set(range(DAMAGED[-1], blocks_of(SIZE)))
        damaged = len(lost)
    else:
        for index in DAMAGED:
            damage(block_place(cache, records["big2.bin"], index), how,
                   block_place(cache, records["big3.bin"], index))
        lost, damaged = set(DAMAGED), (0 if how == "header-lost" else len(DAMAGED))
    mark = len(server.requests())
    m = start(cache)
    assert read(m, "big2.bin") == {"big2.bin": sources["big2.bin"]}
    assert requested_blocks(file_requests(server, mark)) == lost
    assert stats(m)["disk_cache"]["damaged"] == damaged


def test_a_daemon_killed_while_filling_leaves_a_cache_that_reads_right(
        processes: Processes, start: Start, server: Server, tmp_path: Path,
        sources: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    # 1 MiB/s: the 6 MiB read is still filling the cache when the daemon dies
    proxy = processes.proxy(server, "files:trickle=1", 0, "--trickle-rate", str(2**20))
    m = start(cache, via=proxy.endpoint())
    reading = subprocess.Popen([sys.executable, "-c", MD5S, m.p("data/big4.bin")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: stats(m)["disk_cache"]["blocks_written"] >= 2,
                 what="the first blocks on disk")
        assert m.proc is not None
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(DEADLINE)
        reading.wait(DEADLINE)  # its read fails: the daemon is gone
    finally:
        with contextlib.suppress(ProcessLookupError):
            reading.kill()
        reading.wait(DEADLINE)
        m.close()
    partly = Store(cache).usage().blocks
    assert 2 <= partly < blocks_of(SIZE)
    proxy.set_faults("off")  # the same server at the same URL: the cache's entries are its
    again = start(cache, via=proxy.endpoint())
    assert read(again, "big4.bin") == {"big4.bin": sources["big4.bin"]}
    assert stats(again)["disk_cache"]["hits"] >= 2


OTHER_UID = 4242
SHARED_GID = 4243


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside root's private pytest tree, group 4243's, setgid."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    path = Path(tempfile.mkdtemp(prefix="flowfs-shared-", dir="/tmp"))
    os.chmod(path, 0o755)
    cache = path / "cache"
    cache.mkdir()
    os.chown(cache, 0, SHARED_GID)
    os.chmod(cache, 0o2770)
    try:
        yield cache
    finally:
        shutil.rmtree(path, ignore_errors=True)


# Run as uid 4242 in group 4243: read alice's blocks, add blocks, prune, all through Store.
OTHER_USER = r"""
import hashlib, sys
from pathlib import Path
from flowfs.diskcache import Store, entry
root, data_id, size, md5 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = Store(Path(root), shared=True)
assert store.open(), "cannot write"
item = entry(data_id, size, md5, 256 * 1024)
digest = hashlib.md5(b"".join(store.get(item, i) for i in range(item.blocks))).hexdigest()
assert digest == md5, digest
mine = entry("999", 1000, None, 256 * 1024)
store.put(mine, 0, b"x" * 1000)
assert store.get(mine, 0) == b"x" * 1000
assert store.prune(10**12) is not None
print("ok")
"""


def test_two_mounts_share_one_cache_and_neither_reads_what_flow_refuses_it(
        start: Start, server: Server, shared_dir: Path, sources: dict[str, str],
        records: dict[str, dict[str, Any]]) -> None:
    """alice's and bob's mounts at once on one group cache; then another unix user.

    Both mounts run as root (a FUSE mount of another unix user needs /dev/fuse open to
    all, which this machine does not allow): the unix side of sharing is shown by uid 4242
    using the same directory through the store.
    """
    group = ("--disk-cache-mode", "group")
    alice = start(shared_dir, *group)
    assert read(alice, SHARED, SECRET) == {SHARED: sources[SHARED], SECRET: sources[SECRET]}
    settle(alice, 2 * blocks_of(SIZE))
    mark = len(server.requests())
    bob = start(shared_dir, *group, user="bob")

    def bob_reads(name: str) -> str:
        return md5s([bob.p(f"by-id/{records[name]['id']}")])[bob.p(
            f"by-id/{records[name]['id']}")]

    assert bob_reads(SHARED) == sources[SHARED]
    assert file_requests(server, mark) == []  # every byte from alice's blocks
    assert bob_reads(SECRET).startswith("error:")  # Flow refuses bob: so does the cache
    assert stats(bob)["disk_cache"]["bytes_read"] == SIZE  # the secret was never looked at
    assert read(alice, SECRET) == {SECRET: sources[SECRET]}  # alice's mount is unharmed

    shared = records[SHARED]
    aged = block_place(shared_dir, shared, 0).path
    os.utime(aged, (1e9, 1e9))  # long unread: the other user's read must make it recent
    out = sh("setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}",
             f"--groups={SHARED_GID}", sys.executable, "-c", OTHER_USER, str(shared_dir),
             shared["disk_id"], str(shared["size"]), shared["md5"],
             cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == b"ok"
    assert aged.stat().st_mtime > time.time() - 60
    extents = [p for p in shared_dir.rglob("*") if p.is_file() and p.parent.parent.parent.name
               == "v2"]
    assert {(p.stat().st_mode & 0o7777, p.stat().st_gid) for p in extents} == {
        (0o660, SHARED_GID)}
    assert {p.stat().st_mode & 0o7777 for p in shared_dir.rglob("*") if p.is_dir()} == {
        0o2770}


def test_the_size_bound_holds(start: Start, tmp_path: Path, sources: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    bound = 16 * 2**20
    m = start(cache, "--disk-cache-size", "16M")
    names = NAMES[:5]
    assert read(m, *names) == {name: sources[name] for name in names}
    settle(m, blocks_of(SIZE) * len(names))
    wait_for(lambda: stats(m)["disk_cache"]["pruned_bytes"] > 0
             and Store(cache).usage().bytes <= bound, what="pruning to 16M")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_a_cache_on_a_full_disk_only_costs_network_reads(
        start: Start, tmp_path: Path, sources: dict[str, str]) -> None:
    with tmpfs(tmp_path / "small", "16m") as cache:
        m = start(cache, "--disk-cache-size", "1G")
        assert read(m, "big1.bin") == {"big1.bin": sources["big1.bin"]}
        with open(cache / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:  # whatever room is left: the next writes meet ENOSPC
                fh.write(b"\0" * 2**20)
                fh.flush()
        names = NAMES[2:5]
        assert read(m, *names) == {name: sources[name] for name in names}
        settle(m, blocks_of(SIZE) * 4)
        log = m.read_log()
        assert log.count("is full") == 1, log
        assert stats(m)["disk_cache"]["errors"] >= 1


def test_a_read_only_cache_serves_what_it_holds(
        start: Start, server: Server, tmp_path: Path, sources: dict[str, str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    cache = tmp_path / "cache"
    fill(start, cache, "big1.bin")
    subprocess.run(["mount", "--bind", str(cache), str(cache)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(cache)], check=True)
        mark = len(server.requests())
        m = start(cache)
        assert read(m, "big1.bin") == {"big1.bin": sources["big1.bin"]}
        assert file_requests(server, mark) == []
        assert read(m, "big2.bin") == {"big2.bin": sources["big2.bin"]}
        settle(m, blocks_of(SIZE))  # big2's blocks: not written
        assert m.read_log().count("cannot write") == 1
    finally:
        subprocess.run(["umount", "-l", str(cache)], capture_output=True, check=False)


def test_flowfs_cache_status_prune_and_clear(start: Start, tmp_path: Path,
                                            sources: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    m = start(cache)
    read(m, "big1.bin", "big2.bin")
    settle(m, 2 * blocks_of(SIZE))
    read(m, "big1.bin")  # the kernel's page cache answers: no disk hits to count
    env = user_env("alice", "alice-pw")
    status = flowfs("cache", "status", "--cache-dir", str(cache), env=env)
    assert status.returncode == 0, status.stderr
    text = status.stdout.decode()
    assert f"{cache}: 12.0M in 50 blocks of 2 files; bound 10.0G" in text
    assert f"  {m.path}: 0 hits, 50 misses (0.0% hit rate)" in text

    pruned = flowfs("cache", "prune", "--cache-dir", str(cache), "--max-size", "7M", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert Store(cache).usage().bytes <= 7 * 2**20
    cleared = flowfs("cache", "clear", "--cache-dir", str(cache), env=env)
    assert cleared.returncode == 0 and b"removed" in cleared.stdout, cleared.stderr
    assert Store(cache).usage().blocks == 0
    assert read(m, "big1.bin") == {"big1.bin": sources["big1.bin"]}  # the mount carries on
