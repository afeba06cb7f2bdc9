"""The kernel's limits for one mount: read-ahead size and FUSE requests in flight.

FUSE cannot ask for more than the kernel's default read-ahead (128 KiB) when it mounts,
and the kernel keeps at most 12 background (read-ahead) requests in flight per
connection. Both can be raised afterwards through sysfs, by root: the mount's backing
device (``/sys/class/bdi/MAJOR:MINOR``) and the FUSE connection's directory in the
fusectl filesystem (``/sys/fs/fuse/connections/N``).

systemd mounts fusectl at boot; containers and minimal VMs often do not. As root we
mount it ourselves, as systemd's ``sys-fs-fuse-connections.mount`` would. What was
applied, and why not where it was not, is recorded in :class:`Tuning` for
``.flowfs/stats`` and ``flowfs status``: a mount never silently runs untuned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FUSECTL = "/sys/fs/fuse/connections"
READAHEAD_KB = 1024  # 4 and 16 MiB were measured too: no faster
# Read-ahead requests the kernel keeps in flight per mount (its default: 12, and it stops
# reading ahead beyond 9). Eight streams want more: 8 x 256 MiB at once +35%, CPU -16%.
MAX_BACKGROUND = 64
CONGESTION_THRESHOLD = MAX_BACKGROUND * 3 // 4


@dataclass
class Tuning:
    """What the kernel was told for this mount: each limit's value, or why it stayed."""

    applied: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fusectl_mounted_by_us: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.applied) and not self.skipped

    def as_json(self) -> dict[str, object]:
        return {"complete": self.complete, "applied": dict(self.applied),
                "skipped": dict(self.skipped), "fusectl_mounted_by_us": self.fusectl_mounted_by_us}


def fuse_connection(dev: int) -> int:
    """The kernel's number of the FUSE connection behind ``st_dev`` ``dev``."""
    return (os.major(dev) << 20) | os.minor(dev)


def tune(dev: int, tuning: Tuning) -> None:
    """Raise the read-ahead and the connection's limits of the mount with ``st_dev`` ``dev``.

    Eight times fewer, larger read requests cut the daemon's CPU per byte by a tenth to a
    fifth; more requests in flight keep concurrent streams from waiting on each other.
    """
    bdi = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}"
    _write(tuning, "read_ahead_kb", f"{bdi}/read_ahead_kb", READAHEAD_KB)
    why = ensure_fusectl(tuning)
    connection = f"{FUSECTL}/{fuse_connection(dev)}"
    for name, value in (("max_background", MAX_BACKGROUND),
                        ("congestion_threshold", CONGESTION_THRESHOLD)):
        if why:
            tuning.skipped[name] = why
        else:
            _write(tuning, name, f"{connection}/{name}", value)
    if tuning.skipped:
        # Expected for a user's mount; for root's it is worth a warning.
        log.log(logging.WARNING if os.geteuid() == 0 else logging.INFO,
                "kernel limits not raised (%s): reads are slower than they could be; "
                "see docs/troubleshooting.md",
                "; ".join(f"{k}: {v}" for k, v in sorted(tuning.skipped.items())))


def ensure_fusectl(tuning: Tuning) -> str:
    """Make the fusectl filesystem available; '' when it is, else why not."""
    if os.path.ismount(FUSECTL):
        return ""
    if not os.path.isdir(FUSECTL):
        return f"{FUSECTL} does not exist (no fuse module?)"
    if os.geteuid() != 0:
        return f"fusectl is not mounted on {FUSECTL} and only root may mount it"
    error = _mount_fusectl()
    if error:
        return f"mounting fusectl on {FUSECTL}: {error}"
    tuning.fusectl_mounted_by_us = True
    log.info("mounted fusectl on %s (as systemd does at boot)", FUSECTL)
    return ""


def _mount_fusectl() -> str:
    """mount(2) of fusectl, as ``mount -t fusectl fusectl /sys/fs/fuse/connections``."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    result = libc.mount(b"fusectl", FUSECTL.encode(), b"fusectl", 0, None)
    if result == 0:
        return ""
    err = ctypes.get_errno()
    if err == errno.EBUSY:  # mounted by someone else just now
        return ""
    return os.strerror(err)


def _write(tuning: Tuning, name: str, path: str, value: int) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(str(value))
    except OSError as exc:
        tuning.skipped[name] = f"{path}: {exc.strerror}"
        log.debug("%s stays at the kernel default (%s)", path, exc.strerror)
    else:
        tuning.applied[name] = value
