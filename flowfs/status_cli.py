"""`flowfs status`: every flowfs mount of this machine and what it is doing.

Mounts come from :mod:`flowfs.mounts`; each one's numbers from its own
``.flowfs/stats`` (written by :mod:`flowfs.stats`), read in a helper thread with a
deadline, because a hung daemon would block a plain ``open`` forever.
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowfs.config import STATS_DIR, STATS_FILE
from flowfs.mounts import Hung, InThread, flowfs_mounts
from flowfs.sizes import human_size

READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class MountStatus:
    """One mount: its stats document, or the problem that kept us from reading it."""

    mountpoint: Path
    stats: dict[str, Any] | None
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"mountpoint": str(self.mountpoint), "ok": self.problem is None,
                "problem": self.problem, "stats": self.stats}


def _problem(mountpoint: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOTCONN:
        return f"stale: its daemon is gone; run 'flowfs umount {mountpoint}'"
    if exc.errno == errno.EACCES:
        return "not readable by you (another user's mount without allow_other?)"
    if exc.errno == errno.ENOENT:
        return f"no {STATS_DIR}/{STATS_FILE} (a daemon from an older flowfs?)"
    return f"cannot read its stats: {exc.strerror}"


def _stats_of(mountpoint: Path) -> InThread[bytes]:
    return InThread((mountpoint / STATS_DIR / STATS_FILE).read_bytes, "flowfs-status")


def _finish(mountpoint: Path, read: InThread[bytes], timeout: float,
            deadline: float) -> MountStatus:
    try:
        data = read.result(deadline - time.monotonic())
    except Hung:
        return MountStatus(mountpoint, None, f"not answering within {timeout:g} s; if it "
                           f"stays so, 'flowfs umount {mountpoint}' and mount again")
    except OSError as exc:
        return MountStatus(mountpoint, None, _problem(mountpoint, exc))
    try:
        stats = json.loads(data)
    except ValueError:
        return MountStatus(mountpoint, None, "its stats are not JSON (a different flowfs?)")
    return MountStatus(mountpoint, stats if isinstance(stats, dict) else None)


def read_mount_statuses(mountpoints: list[Path],
                        timeout: float = READ_TIMEOUT) -> list[MountStatus]:
    """Read every mount's ``.flowfs/stats`` at once, giving up on each after ``timeout`` s."""
    reads = [(m, _stats_of(m)) for m in mountpoints]
    deadline = time.monotonic() + timeout
    return [_finish(m, read, timeout, deadline) for m, read in reads]


def read_mount_status(mountpoint: Path, timeout: float = READ_TIMEOUT) -> MountStatus:
    return read_mount_statuses([mountpoint], timeout)[0]


def human_duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s % 60:02d}s" if m else f"{s}s"


def render(status: MountStatus, now: float | None = None) -> str:
    """The human form of one mount's status (``now``: the time failures are aged from)."""
    now = time.time() if now is None else now
    if status.stats is None:
        return f"{status.mountpoint}: {status.problem}"
    s = status.stats
    cache, api, jobs = s.get("cache", {}), s.get("api", {}), s.get("downloads", {})
    who = f"{s.get('user')} at " if s.get("user") else ""
    lines = [
        f"{status.mountpoint}: {who}{s.get('api_url')} "
        f"(pid {s.get('pid')}, up {human_duration(s.get('uptime', 0))})",
        f"  cache    {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses; "
        f"{human_size(cache.get('cached_bytes', 0))} cached of "
        f"{human_size(s.get('cache_size', 0))}",
        f"  disk     {_disk_line(s.get('disk_cache'))}",
        f"  network  {human_size(api.get('bytes_fetched', 0))} fetched in "
        f"{api.get('requests', 0)} requests",
        f"  read     {_bytes_line(s.get('bytes_from'))}",
        f"  inodes   {s.get('inodes', 0)}",
        f"  bulk     {jobs.get('active', 0)} active of {jobs.get('jobs', 0)} jobs",
        f"  kernel   {_kernel_line(s.get('kernel'))}",
        f"  errors   {_errors_line(s.get('failures'), cache)}",
    ]
    last = (s.get("failures") or {}).get("last")
    if isinstance(last, dict):
        lines.append(f"  last     {_failure_line(last, now)}")
    return "\n".join(lines)


def _errors_line(failures: Any, cache: dict[str, Any]) -> str:
    """Failed requests by errno, and the reader's own failed fetches and timeouts."""
    by_error = failures.get("by_error") if isinstance(failures, dict) else None
    by_error = by_error if isinstance(by_error, dict) else {}
    count = sum(v for v in by_error.values() if isinstance(v, int))
    kinds = f" ({', '.join(f'{n} {name}' for name, n in sorted(by_error.items()))})" \
        if count else ""
    return (f"{count} failed requests{kinds}; {cache.get('fetch_errors', 0)} failed fetches, "
            f"{cache.get('timeouts', 0)} read timeouts")


def _failure_line(last: dict[str, Any], now: float) -> str:
    """The last failure: how long ago, which operation, what it said (path, data id)."""
    at = last.get("at")
    ago = f"{human_duration(max(0.0, now - at))} ago" if isinstance(at, int | float) else "?"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) \
        if isinstance(at, int | float) else "?"
    return (f"{when} ({ago}): {last.get('operation')} answered {last.get('error')}: "
            f"{last.get('message')}")


def _disk_line(disk: Any) -> str:
    """The disk cache's hits and state (None: off or unusable; see the mount's log)."""
    if not isinstance(disk, dict):
        return "cache off"
    hits, misses = disk.get("hits", 0), disk.get("misses", 0)
    line = (f"{hits} hits, {misses} misses; {human_size(disk.get('used_bytes', 0))} cached "
            f"of {human_size(disk.get('limit_bytes', 0))} in {disk.get('dir')}")
    trouble = [f"{disk[key]} {label}" for key, label in (
        ("write_skipped", "blocks not written (the next read fetches them)"),
        ("damaged", "damaged blocks refetched"), ("errors", "errors"))
        if disk.get(key)]
    if not disk.get("writable", True):
        trouble.append("not writable: serving what it holds")
    return line + "".join(f"; {item}" for item in trouble)


def _bytes_line(origin: Any) -> str:
    if not isinstance(origin, dict):
        return "origin unknown (a mount of an older flowfs)"
    return (f"{human_size(origin.get('memory', 0))} from memory, "
            f"{human_size(origin.get('disk', 0))} from disk, "
            f"{human_size(origin.get('network', 0))} from the network")


def _kernel_line(kernel: Any) -> str:
    """Whether the kernel's read-ahead and request limits were raised, and if not why."""
    if not isinstance(kernel, dict):
        return "limits unknown (a mount of an older flowfs)"
    applied, skipped = kernel.get("applied") or {}, kernel.get("skipped") or {}
    if kernel.get("complete"):
        return (f"limits raised: read-ahead {applied.get('read_ahead_kb')} KiB, "
                f"{applied.get('max_background')} requests in flight")
    if not applied and not skipped:
        return "limits not raised yet"
    why = "; ".join(f"{name}: {reason}" for name, reason in sorted(skipped.items()))
    return f"limits NOT raised, reads are slower ({why})"


def statuses(only: Path | None = None) -> list[MountStatus]:
    """The status of every flowfs mount (or of ``only``)."""
    mounts = flowfs_mounts()
    if only is not None:
        mounts = [m for m in mounts if m == only]
    return read_mount_statuses(mounts)
