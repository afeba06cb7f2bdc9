"""`.flowfs/`: the mount's own state, as files anyone (and `flowfs status`) can `cat`.

``.flowfs/stats`` is JSON rendered anew on every open from the live objects of
the mount (counters only: never a token). It is ``volatile`` and ``direct_io``,
so neither the kernel's attribute cache nor its page cache ever serves an old
rendering.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowfs import __version__, tlsfill
from flowfs.api import FlowAPI
from flowfs.buffers import BufferPool
from flowfs.config import METRICS_FILE, REFRESH_FILE, STATS_FILE, MountConfig
from flowfs.diskfetch import DiskFetch
from flowfs.downloads import Downloads
from flowfs.failures import Failures
from flowfs.inodes import InodeTable
from flowfs.kernel import Tuning
from flowfs.metrics import exposition
from flowfs.nodes import Node, StaticDir, TextFile
from flowfs.reader import Reader
from flowfs.refresh import RefreshFile
from flowfs.tree import Tree

README = """\
This hidden directory shows the state of this flowfs mount.

stats   JSON: server, user, uptime, cache hits and misses, bytes from memory,
        disk and network, the disk cache, requests, errors, timeouts and the
        last failure, inodes, active bulk downloads. Fresh on every read.
        'flowfs status' shows it for every mount.
metrics the same counters in Prometheus's text format (for node_exporter's
        textfile collector: copy it into its directory, see docs/usage.md).
refresh write a path (relative to the mount, '.' for all) here to have its
        listings fetched again now: 'flowfs refresh [PATH]' does it for you.
"""


class StatsFile(TextFile):
    """``.flowfs/stats``: ``render()`` as JSON, computed for every open."""

    volatile = True
    direct_io = True

    def __init__(self, tree: Tree, render: Callable[[], dict[str, Any]]) -> None:
        super().__init__(tree, b"")
        self._render = render

    @property
    def content(self) -> bytes:
        return (json.dumps(self._render(), indent=2) + "\n").encode()


class MetricsFile(StatsFile):
    """``.flowfs/metrics``: the same document in Prometheus's text format."""

    @property
    def content(self) -> bytes:
        return exposition(self._render()).encode()


@dataclass(frozen=True)
class MountState:
    """The live objects of one mount that its stats are read from."""

    config: MountConfig
    api: FlowAPI
    reader: Reader
    inodes: InodeTable[Node]
    downloads: Downloads
    user: str | None = None
    credentials: str | None = None  # where they came from, e.g. "FLOW_API_TOKEN"
    buffers: BufferPool | None = None  # None: bodies are not received into recycled buffers
    kernel: Tuning = field(default_factory=Tuning)
    failures: Failures = field(default_factory=Failures)
    disk: DiskFetch | None = None  # None: no disk cache (off, or unusable)
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        """The stats document (documented in docs/usage.md)."""
        cache = self.reader.stats()
        return {
            "version": __version__,
            "api_url": self.config.api_url,
            "files_url": self.config.files_url,
            "mountpoint": str(self.config.mountpoint),
            "pid": os.getpid(),
            "user": self.user,
            "credentials": self.credentials,
            "started": round(self.started, 3),
            "uptime": round(time.monotonic() - self.started_monotonic, 3),
            "cache_size": self.config.cache_size,
            "cache": cache,
            "api": {"requests": self.api.requests, "bytes_fetched": self.api.bytes_fetched},
            "disk_cache": None if self.disk is None else self.disk.stats(),
            "bytes_from": self._origins(cache),
            "link": self.reader.link.as_json(),
            "tls_receive": tlsfill.kind(),  # c: flowfs._tlsfill; python: its fallback
            "buffers": None if self.buffers is None else {
                "spare": self.buffers.spare, "reused": self.buffers.reused,
                "allocated": self.buffers.allocated},
            "inodes": len(self.inodes),
            "failures": self.failures.as_json(),
            "kernel": self.kernel.as_json(),
            "downloads": self.downloads.stats(),
        }

    def _origins(self, cache: dict[str, int]) -> dict[str, int]:
        """Where the bytes of reads came from (documented in docs/usage.md).

        Disk and network count what was fetched from them (read-ahead included); memory
        is what reads took beyond that: re-reads the memory cache answered. The kernel's
        page cache answers re-reads of an open file before any of these.
        """
        disk = 0 if self.disk is None else self.disk.counts["bytes_read"]
        network = self.api.bytes_fetched
        return {"memory": max(0, cache["bytes_read"] - disk - network), "disk": disk,
                "network": network}


def stats_dir(tree: Tree, render: Callable[[], dict[str, Any]]) -> StaticDir:
    """The ``.flowfs/`` directory: README.txt, stats, metrics and refresh."""
    directory = StaticDir(tree, tree.started)
    directory.children = {"README.txt": TextFile(tree, README),
                          STATS_FILE: StatsFile(tree, render),
                          METRICS_FILE: MetricsFile(tree, render),
                          REFRESH_FILE: RefreshFile(tree)}
    return directory
