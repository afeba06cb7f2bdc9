"""The daemon's memory while a big tree is browsed, and after the kernel forgets it.

Runs the reference server on a catalog of ``--files`` small files (one project, 100 per
sample), mounts it, and measures the daemon's RSS and the inode count of
``.flowfs/stats`` three times: at start, after ``find`` has walked every file, and
after the kernel has forgotten the inodes (``echo 2 > /proc/sys/vm/drop_caches``,
root only: the kernel sends FORGET for every inode nothing uses). docs/reliability.md
("Memory while browsing") reports its figures::

    .venv/bin/python -m bench.browse_memory --files 200000

Prints one JSON document; stops everything it started, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.nginx import Endpoints
from bench.procs import BenchError, proc_status, run_output, wait_for
from bench.services import Workspace, flowfs_mount, reference_server

log = logging.getLogger(__name__)

MiB = 1 << 20
FIND_TIMEOUT = 1800.0
SETTLE = 60.0  # seconds to wait for the inode count to settle after drop_caches
NAMES_WRITTEN = 3.0  # seconds: two of the namebook's write intervals, and some


def stats(mnt: Path) -> dict[str, Any]:
    """``.flowfs/stats`` as read through the mount (by a child with a deadline)."""
    _, out = run_output(["cat", str(mnt / ".flowfs" / "stats")], 30.0)
    return dict(json.loads(out))


def sample(mnt: Path, pid: int) -> dict[str, float]:
    return {"rss_mib": round(proc_status(pid)["VmRSS"] / MiB, 1),
            "inodes": stats(mnt)["inodes"]}


def forget_all() -> None:
    """Ask the kernel to drop unused dentries and inodes: it sends FORGET for each."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("2\n")


def settled(mnt: Path, pid: int) -> dict[str, float]:
    """The figures once the inode count has stopped falling (FORGETs arrive in batches)."""
    last: list[int] = []

    def steady() -> bool:
        forget_all()
        last.append(stats(mnt)["inodes"])
        return len(last) >= 3 and last[-1] == last[-2] == last[-3]

    wait_for(steady, SETTLE, "the inode count to settle after drop_caches")
    # The names of the directories forgotten leave memory once written, and names are
    # written at most once a second (namebook): wait for that write.
    time.sleep(NAMES_WRITTEN)
    return sample(mnt, pid)


def measure(work: Path, n_files: int) -> dict[str, Any]:
    from flowfs.server.demodata import many_files_catalog

    ws = Workspace(work)
    catalog = many_files_catalog(ws.dir("catalog"), n_files=n_files)
    mnt = ws.dir("mnt") / "flow"
    with reference_server(ws, "many", catalog) as server, \
            flowfs_mount(ws, mnt, Endpoints(server.files, server.api), "64M", {},
                         disk_cache=False) as daemon:
        result: dict[str, Any] = {"files": n_files, "start": sample(mnt, daemon.pid)}
        started = time.monotonic()
        _, out = run_output(["find", str(mnt / "projects"), "-type", "f"], FIND_TIMEOUT)
        result["find_seconds"] = round(time.monotonic() - started, 1)
        result["found"] = len(out.splitlines())
        result["after_find"] = sample(mnt, daemon.pid)
        result["after_forget"] = settled(mnt, daemon.pid)
        result["rss_growth_kept_mib"] = round(
            result["after_forget"]["rss_mib"] - result["start"]["rss_mib"], 1)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browse_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000, help="files in the catalog")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if os.geteuid() != 0:
        parser.error("needs root: only root may make the kernel forget (drop_caches)")
    try:
        if args.work is not None:
            result = measure(args.work.resolve(), args.files)
        else:
            with tempfile.TemporaryDirectory(prefix="flowfs-browse-") as tmp:
                result = measure(Path(tmp), args.files)
    except BenchError as exc:
        print(f"browse_memory: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
