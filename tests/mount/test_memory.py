"""Memory bounded by what is in use: browsing a big tree, then letting the kernel forget it.

A `find` over 20,000 files, then `echo 2 > /proc/sys/vm/drop_caches` (root only): the
kernel sends FORGET for every inode nothing uses, and the daemon's node count and RSS
come back down. Files made and removed in `.downloads/` leave the node count flat.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Mount, Processes, Server, sh, user_env, wait_for

from flowfs.memory import SETTLE

N_FILES = 20_000
pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="only root can make the kernel forget (drop_caches)")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flowfs.server.demodata import many_files_catalog

    return many_files_catalog(tmp_path_factory.mktemp("many"), n_files=N_FILES)


@pytest.fixture(scope="module")
def many_server(many: Path, module_processes: Processes) -> Server:
    return module_processes.server(many)


@pytest.fixture
def mount(many_server: Server, processes: Processes) -> Mount:
    return processes.mount(many_server, user_env("alice", "alice-pw"))


def stats(m: Mount) -> dict[str, Any]:
    return dict(json.loads(sh("cat", m.p(".flowfs/stats")).stdout))


def rss(m: Mount) -> int:
    assert m.proc is not None
    with open(f"/proc/{m.proc.pid}/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def forget_all() -> None:
    """Make the kernel drop the dentries and inodes nothing uses: FORGET for each."""
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("2\n")


def nodes_back_to(m: Mount, count: int) -> bool:
    forget_all()
    return bool(stats(m)["inodes"] <= count)


def browse_and_forget(m: Mount, nodes: int) -> tuple[list[str], int]:
    """`find` every file, then the kernel forgets; the files found and the peak RSS."""
    found = sh("find", m.p("projects"), "-type", "f", timeout=60).stdout.splitlines()
    assert len(found) == N_FILES
    peak = rss(m)
    wait_for(lambda: nodes_back_to(m, nodes), what="the nodes to be freed")
    return found, peak


STEADY = 1 << 20  # RSS moves within this (a page or two of a background task) once settled


def settled_rss(m: Mount) -> int:
    """The daemon's RSS once it has stayed within ``STEADY`` for twice memory.SETTLE."""
    seen: list[tuple[float, int]] = []

    def steady() -> int | None:
        now, value = time.monotonic(), rss(m)
        if not seen or abs(seen[-1][1] - value) >= STEADY:
            seen.append((now, value))
        return value if now - seen[-1][0] >= 2 * SETTLE else None

    return int(wait_for(steady, what="the daemon's RSS to settle"))


def test_nodes_and_memory_come_back_once_the_kernel_forgets_a_find(mount: Mount) -> None:
    nodes = stats(mount)["inodes"]
    # A first round pays what is paid once (modules, threads, the requests' tasks).
    first, _ = browse_and_forget(mount, nodes)
    start = settled_rss(mount)
    for _ in range(2):  # and memory does not creep up, round after round
        again, peak = browse_and_forget(mount, nodes)
        assert sorted(again) == sorted(first)  # the same names, on new nodes
        assert peak - start > 8 << 20  # the daemon held the tree while the kernel did
        # Nearly all the growth goes back to the system once the kernel's forgetting has
        # settled (memory.Release): a give-back only at the first large batch of
        # FORGETs left from a third to two thirds of it held, by where that batch fell
        # (tests/unit/test_memory_release.py pins when memory is given back).
        wait_for(lambda bound=start + (peak - start) / 4: rss(mount) < bound,
                 what=f"the daemon's RSS to fall from {peak >> 20} MiB (at start "
                      f"{start >> 20} MiB, now {rss(mount) >> 20} MiB)")


CYCLES = r"""
import errno, os, sys
downloads, cycles = sys.argv[1], int(sys.argv[2])
for i in range(cycles):
    path = os.path.join(downloads, f"job{i % 7}.manifest")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for call in (lambda: os.write(fd, b"no/such/file\n"), lambda: os.close(fd)):
        try:  # the bad line is refused as written, and again at close
            call()
        except OSError as exc:
            assert exc.errno == errno.EINVAL, exc
    os.unlink(path)
    os.unlink(path[:-len(".manifest")] + ".error")
"""


def test_files_made_and_removed_in_downloads_leave_the_node_count_flat(mount: Mount) -> None:
    downloads = mount.p(".downloads")
    run = [sys.executable, "-c", textwrap.dedent(CYCLES), downloads]
    sh(*run, "50")
    wait_for(lambda: nodes_back_to(mount, stats(mount)["inodes"]), what="a first forget")
    before = stats(mount)["inodes"]
    sh(*run, "1000", timeout=60)
    wait_for(lambda: nodes_back_to(mount, before), what="the node count to come back")
    assert sorted(os.listdir(downloads)) == ["README.txt"]
