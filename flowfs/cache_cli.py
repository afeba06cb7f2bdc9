"""`flowfs cache status|clear|prune`: the disk cache directory, with or without mounts.

These work on the directory itself (no credentials, no mount needed) and are safe while
mounts use it: a mount that finds a block gone fetches it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowfs.diskcache import Store, Usage, filesystem_type, is_network_fs
from flowfs.errors import FlowError
from flowfs.sizes import human_size
from flowfs.status_cli import MountStatus, statuses


def _store(root: Path) -> Store:
    if not root.is_dir():
        raise FlowError(f"no disk cache at {root}")
    return Store(root)


def describe(usage: Usage) -> str:
    return (f"{human_size(usage.bytes)} in {usage.blocks} blocks of {usage.entries} "
            f"file{'s' if usage.entries != 1 else ''}")


def _users(root: Path, found: list[MountStatus]) -> list[tuple[str, dict[str, Any]]]:
    """The mounts using ``root``, with their disk cache stats."""
    out = []
    for status in found:
        disk = (status.stats or {}).get("disk_cache")
        if isinstance(disk, dict) and disk.get("dir") == str(root):
            out.append((str(status.mountpoint), disk))
    return out


def hit_rate(disk: dict[str, Any]) -> str:
    hits, misses = int(disk.get("hits", 0)), int(disk.get("misses", 0))
    if not hits + misses:
        return "no reads yet"
    return f"{hits} hits, {misses} misses ({100 * hits / (hits + misses):.1f}% hit rate)"


def cmd_status(root: Path, bound: int, as_json: bool) -> int:
    usage = Store(root).usage()  # nothing there yet: empty
    users = _users(root, statuses())
    fstype = filesystem_type(root)
    if as_json:
        print(json.dumps({"dir": str(root), "bytes": usage.bytes, "blocks": usage.blocks,
                          "entries": usage.entries, "max_bytes": bound,
                          "filesystem": fstype,
                          "mounts": [{"mountpoint": m, **disk} for m, disk in users]},
                         indent=2))
        return 0
    network = " (a network filesystem)" if is_network_fs(fstype) else ""
    print(f"{root}{network}: {describe(usage)}; bound {human_size(bound)}")
    for mountpoint, disk in users:
        print(f"  {mountpoint}: {hit_rate(disk)}; {human_size(disk.get('bytes_read', 0))} "
              f"read from disk, {disk.get('damaged', 0)} damaged blocks, "
              f"{disk.get('errors', 0)} errors")
    if not users:
        print("  no mount uses it now")
    return 0


def cmd_clear(root: Path) -> int:
    removed = _store(root).clear()
    print(f"{root}: removed {describe(removed)}")
    return 0


def cmd_prune(root: Path, max_size: int) -> int:
    left = _store(root).prune(max_size)
    if left is None:
        raise FlowError(f"{root}: a mount is pruning it right now; try again")
    print(f"{root}: {describe(left)} left")
    return 0
