"""From far away, what one mount read is served by the disk cache on the next: region
queries run again make not one file request, even where the new mount reads ahead wider
than the first did; a whole file read again makes none either, even where the first
read's replies came in bursts larger than the disk cache's write queue.

The server is 30 ms away (the fault proxy's ``--delay``): a far link, whose read-ahead
windows follow the link's measured rate. The first mount has not timed a large reply
when it opens its first window; the second reads another file first, so it has, and its
windows open wider. What the wider window adds was never read: it must not be fetched.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Mount,
    Processes,
    Server,
    md5s,
    random_files_catalog,
    sh,
    user_env,
    wait_for,
)
from test_disk_cache import stats

SIZE = 48 * 2**20
NAMES = ("regions.bin", "other.bin")
# samtools' reads of one region, each query its own open: 36 KiB at the BGZF block, the
# 128 KiB after it, the next 256 KiB. Printed: the md5 of all the bytes read.
QUERIES = """
import hashlib, os, sys
digest = hashlib.md5()
for offset in map(int, sys.argv[2:]):
    fd = os.open(sys.argv[1], os.O_RDONLY)
    for size in (36 << 10, 128 << 10, 256 << 10):
        digest.update(os.pread(fd, size, offset))
        offset += size
    os.close(fd)
print(digest.hexdigest())
"""
OFFSETS = (5_000_000, 21_000_000, 37_000_000)


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_files_catalog(tmp_path_factory.mktemp("rerun-catalog"), NAMES, SIZE, 300)


@pytest.fixture(scope="module")
def server(catalog_path: Path, module_processes: Processes) -> Server:
    return module_processes.server(catalog_path)


def idle(m: Mount) -> None:
    """Wait until nothing is in flight and everything fetched is written to disk."""
    def done() -> bool:
        s = stats(m)
        return (s["cache"]["inflight"] == 0 and s["cache"]["readahead_requests"] == 0
                and s["disk_cache"]["queued_bytes"] == 0
                and s["disk_cache"]["owed_bytes"] == 0)
    wait_for(done, what="the mount's fetches and writes")


def requests_for(server: Server, mark: int, name: str) -> list[dict[str, Any]]:
    return [r for r in server.requests()[mark:]
            if not r["path"].startswith("/api") and r["path"].endswith(name)]


def test_region_queries_again_after_a_remount_ask_for_nothing(
        processes: Processes, server: Server, catalog_path: Path, tmp_path: Path) -> None:
    far = processes.proxy(server, "off", 0, "--delay", "0.03").endpoint()
    body = (catalog_path.parent / "files" / "regions.bin").read_bytes()
    expected = hashlib.md5(b"".join(body[o : o + 420 * 1024] for o in OFFSETS)).hexdigest()
    env = user_env("alice", "alice-pw")
    flags = ("--disk-cache", "--cache-dir", str(tmp_path / "cache"))

    def queries(m: Mount) -> str:
        return sh(sys.executable, "-c", QUERIES, m.p("data/regions.bin"),
                  *map(str, OFFSETS)).stdout.decode().strip()

    first = processes.mount(far, env, *flags)
    mark = len(server.requests())
    assert queries(first) == expected
    idle(first)
    assert requests_for(server, mark, "regions.bin")  # the first run used the network
    first.close()

    again = processes.mount(far, env, *flags)
    other = md5s([again.p("data/other.bin")], timeout=120)
    assert list(other.values()) == [hashlib.md5(
        (catalog_path.parent / "files" / "other.bin").read_bytes()).hexdigest()]
    assert stats(again)["link"]["rate_mib_s"] > 0  # a large reply was timed
    mark = len(server.requests())
    assert queries(again) == expected
    idle(again)
    assert requests_for(server, mark, "regions.bin") == []
    assert stats(again)["disk_cache"]["hits"] > 0


def test_a_file_read_in_bursts_is_read_again_from_disk_alone(
        processes: Processes, server: Server, catalog_path: Path, tmp_path: Path) -> None:
    """Replies landing together overflowed the disk cache's write queue and part of a
    first read was never written (wan100: 37-56%), so the re-read went to the network for
    it. A 128M memory cache makes a 16 MiB queue (four far requests' worth, so a 48 MiB
    read overflows it) and holds the whole file, so every run owed is still there when
    the queue has room."""
    far = processes.proxy(server, "off", 0, "--delay", "0.03").endpoint()
    path = catalog_path.parent / "files" / "other.bin"
    expected = hashlib.md5(path.read_bytes()).hexdigest()
    env = user_env("alice", "alice-pw")
    flags = ("--disk-cache", "--cache-dir", str(tmp_path / "cache"), "--cache-size", "128M")

    first = processes.mount(far, env, *flags)
    assert list(md5s([first.p("data/other.bin")], timeout=120).values()) == [expected]
    idle(first)
    written = stats(first)["disk_cache"]
    first.close()

    again = processes.mount(far, env, *flags)
    mark = len(server.requests())
    assert list(md5s([again.p("data/other.bin")], timeout=120).values()) == [expected]
    assert requests_for(server, mark, "other.bin") == []
    assert written["write_deferred"] > 0 and written["write_skipped"] == 0  # it overflowed
