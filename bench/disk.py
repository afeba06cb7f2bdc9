"""The disk cache: what a first read costs with it, and what a read after a remount gives.

Three measurements per round, each contender in turn:

- ``disk_first_read``: the same cold ``cat`` with flowfs's disk cache off and on (an empty
  cache directory): what filling the cache costs a first read.
- ``disk_reread``: that file again after an unmount and a new mount on the same cache
  directory, the page cache dropped (so the cache's files come from the disk), against
  the current rclone with ``--vfs-cache-mode full`` doing the same, and against ``cat`` of
  the source file from the same disk, also cold. The file requests nginx answered during
  each re-read are counted: bytes already cached must not be asked for again.
- ``disk_bam``: the BAM region queries on a fresh cache, then again after a remount: the
  second set must need no file request at all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.data import Item, regions
from bench.procs import BenchError, drop_caches, run_timed, wait_for
from bench.services import CURRENT_RCLONE, MountView, Rclone, flowfs_mount, rclone_mount
from bench.workloads import (
    TIMEOUT,
    Ctx,
    Result,
    _cold,
    _mib_s,
    _query_all,
    _recorded,
    _samples,
    seq_item,
)
from flowfs.diskcache import Store

log = logging.getLogger(__name__)

FULL = Rclone(str(CURRENT_RCLONE))  # the current rclone, --vfs-cache-mode full (kept cache)
FULL_NAME = "rclone_current_full"
WRITES_DEADLINE = 120.0  # seconds for the daemon to finish writing what it fetched
BLOCK = 256 * 1024  # flowfs's block size


@contextmanager
def _flowfs(ctx: Ctx, cache: Path | None) -> Iterator[MountView]:
    """A flowfs mount, disk cache off (``cache`` None) or on in ``cache`` (kept)."""
    contender = ctx.contenders["flowfs"]
    mnt = ctx.ws.root / "mnt" / "flowfs-disk"
    with flowfs_mount(ctx.ws, mnt, contender.urls, ctx.cache_size, contender.trust,
                      disk_cache=cache is not None, keep=cache) as daemon:
        try:
            yield MountView(mnt, by_sample=True, daemon=daemon)
        finally:
            contender._record_peak(daemon)


@contextmanager
def _rclone_full(ctx: Ctx, cache: Path) -> Iterator[MountView]:
    contender = ctx.contenders["rclone_current"]
    mnt = ctx.ws.root / "mnt" / FULL_NAME
    with rclone_mount(ctx.ws, FULL_NAME, mnt, contender.urls.files, FULL, ctx.certs,
                      keep=cache) as daemon:
        yield MountView(mnt, by_sample=False, daemon=daemon)


def _disk_stats(view: MountView) -> dict[str, Any]:
    doc = json.loads((Path(view.root) / ".flowfs" / "stats").read_text())
    return {"cache": doc["cache"], **(doc.get("disk_cache") or {})}


def _written(view: MountView) -> dict[str, Any]:
    """Wait until the daemon has nothing in flight (read-ahead a closed file left to land
    included) and has written to disk everything it fetched (nothing queued or owed); its
    disk cache's counts then."""
    def idle() -> bool:
        disk = _disk_stats(view)
        return (disk["cache"]["inflight"] == 0 and disk["cache"]["readahead_requests"] == 0
                and disk.get("queued_bytes", 0) == 0 and disk.get("owed_bytes", 0) == 0)

    wait_for(idle, WRITES_DEADLINE, "the disk cache's writes")
    return _disk_stats(view)


def _empty(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _cold_read(ctx: Ctx, view: MountView, item: Item) -> tuple[float, int]:
    """MiB/s of a cold ``cat`` through ``view``; the file requests nginx answered meanwhile.

    The path is looked up before the clock starts: on a new mount that costs a few API
    round trips (about as many for rclone's listings), which over a 50 ms link would
    outweigh reading 256 MiB from a disk, and this measures how fast the bytes come.
    """
    urls = ctx.contenders["flowfs"].urls
    _cold(ctx, [item.source])
    os.stat(view.path(item))
    mark = urls.settled_file_requests()
    seconds = run_timed(view.read_cmd(item), TIMEOUT, env=view.env)
    return _mib_s(item.size, seconds), urls.settled_file_requests() - mark


def disk_cache(ctx: Ctx) -> dict[str, Result]:
    item = seq_item(ctx.data, ctx.link)
    first, first_errors = _samples(["flowfs", "flowfs_disk", FULL_NAME])
    again, again_errors = _samples(["flowfs_disk", FULL_NAME, "local"])
    requests: dict[str, list[int]] = {"flowfs_disk": [], FULL_NAME: []}
    # Per round: blocks the first read left on disk (of ``blocks``; counted there, as a
    # block fetched twice is written twice), and blocks the re-read did not find on disk.
    # The re-read asks the network only for those: any beyond the blocks left unwritten
    # would be requests for cached bytes.
    blocks = -(-item.size // BLOCK)
    cached: dict[str, list[int]] = {"written": [], "reread_misses": []}
    caches = ctx.ws.dir("disk-caches")
    rclone_ok = "rclone_current" in ctx.selected and shutil.which(FULL.binary)
    for rnd in range(ctx.rounds):
        log.info("%s disk: round %d", ctx.link.name, rnd + 1)
        with _recorded(first_errors, "flowfs", rnd), _flowfs(ctx, None) as view:
            first["flowfs"].append(_cold_read(ctx, view, item)[0])
        cache = _empty(caches / "flowfs")
        with _recorded(first_errors, "flowfs_disk", rnd):
            with _flowfs(ctx, cache) as view:
                first["flowfs_disk"].append(_cold_read(ctx, view, item)[0])
                _written(view)
            cached["written"].append(Store(cache).usage().blocks)
            with _flowfs(ctx, cache) as view:
                speed, asked = _cold_read(ctx, view, item)
                again["flowfs_disk"].append(speed)
                requests["flowfs_disk"].append(asked)
                cached["reread_misses"].append(_written(view)["misses"])
        if rclone_ok:
            cache = _empty(caches / "rclone")
            with _recorded(first_errors, FULL_NAME, rnd):
                with _rclone_full(ctx, cache) as view:
                    first[FULL_NAME].append(_cold_read(ctx, view, item)[0])
                with _rclone_full(ctx, cache) as view:
                    speed, asked = _cold_read(ctx, view, item)
                    again[FULL_NAME].append(speed)
                    requests[FULL_NAME].append(asked)
        with _recorded(again_errors, "local", rnd):
            if not drop_caches():
                raise BenchError("a cold local read needs root (drop_caches)")
            seconds = run_timed(["cat", str(item.source)], TIMEOUT)
            again["local"].append(_mib_s(item.size, seconds))
    shutil.rmtree(caches, ignore_errors=True)
    common = {"unit": "MiB/s", "higher_is_better": True, "bytes": item.size,
              "file": item.filename}
    return {
        "disk_first_read": {**common, "runs": first, "errors": first_errors},
        "disk_reread": {**common, "runs": again, "errors": again_errors,
                        "file_requests": requests, "blocks": blocks, "flowfs_blocks": cached},
        **_bam_twice(ctx, caches),
    }


def _bam_twice(ctx: Ctx, caches: Path) -> dict[str, Result]:
    """The BAM queries on an empty disk cache, then after a remount: no file request."""
    data = ctx.data
    regs = [str(r) for r in regions(ctx.bam_queries, seed=0)]
    runs, errors = _samples(["first", "after_remount"])
    requests: dict[str, list[int]] = {"first": [], "after_remount": []}
    scratch = ctx.ws.root / "samtools-cwd"
    urls = ctx.contenders["flowfs"].urls
    for rnd in range(ctx.rounds):
        cache = _empty(caches / "bam")
        for phase in ("first", "after_remount"):
            log.info("%s disk bam: round %d, %s", ctx.link.name, rnd + 1, phase)
            with _recorded(errors, phase, rnd), _flowfs(ctx, cache) as view:
                _cold(ctx, [data.bam.source, data.bai.source])
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(parents=True)
                mark = urls.settled_file_requests()
                times, _ = _query_all(view, data, regs, scratch)
                _written(view)  # read-ahead left to land is counted in this phase
                requests[phase].append(urls.settled_file_requests() - mark)
                runs[phase].append(sum(times))
    shutil.rmtree(caches, ignore_errors=True)
    return {"disk_bam": {"unit": "s", "higher_is_better": False, "queries": len(regs),
                         "runs": runs, "errors": errors, "file_requests": requests}}

