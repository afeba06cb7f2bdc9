"""The processes a benchmark talks to: the reference server, nginx, flowfs and rclone mounts.

Each is a context manager that starts on entry and stops on exit, whatever happened;
``Contender``s turn them into fresh (cold) views of the same bytes for the workloads.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.data import PASSWORD, PROJECT, USER, Item
from bench.procs import DEADLINE, Child, free_port, is_mounted, port_open, unmount, wait_for

log = logging.getLogger(__name__)

MOUNT_DEADLINE = 90.0


@dataclass(frozen=True)
class Workspace:
    """Where the services keep their files: logs, configs, mount points, caches."""

    root: Path

    def dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def pidfile(self) -> Path:
        return self.dir("run") / "pids"

    def log(self, name: str) -> Path:
        return self.dir("logs") / f"{name}.log"


# -- the reference server --------------------------------------------------------------------

@contextlib.contextmanager
def reference_server(ws: Workspace, name: str, catalog: Path, *, files_url: str = "",
                     export_dir: Path | None = None) -> Iterator[RefServer]:
    """``python -m flowfs.server`` on a free port; yields its URLs and access log."""
    home = ws.dir("server", name)
    ready = home / "ready.json"
    ready.unlink(missing_ok=True)
    access_log = home / "access.log"
    argv = [sys.executable, "-m", "flowfs.server", "--catalog", str(catalog), "--port", "0",
            "--state-dir", str(home / "state"), "--ready-file", str(ready),
            "--access-log", str(access_log)]
    if files_url:
        argv += ["--files-url", files_url]
    if export_dir is not None:
        argv += ["--export-dir", str(export_dir)]
    child = Child(f"server-{name}", argv, ws.log(f"server-{name}"), pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and ready.exists(), DEADLINE * 2,
                 f"the reference server ({name})")
        info = json.loads(ready.read_text())
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


# -- nginx -----------------------------------------------------------------------------------

_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
{user}
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {home}/tmp/body;
    proxy_temp_path {home}/tmp/proxy;
    fastcgi_temp_path {home}/tmp/fastcgi;
    uwsgi_temp_path {home}/tmp/uwsgi;
    scgi_temp_path {home}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /downloads/ {{
            root {export};
            autoindex on;
            disable_symlinks off;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx, which lives in sbin: not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin") or "nginx"


def _nginx_user() -> str:
    # As root, nginx would run its workers as nobody, who may not read the work dir.
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


@contextlib.contextmanager
def nginx(ws: Workspace, export_dir: Path) -> Iterator[str]:
    """nginx serving ``export_dir`` on a free loopback port; yields its base URL."""
    home = ws.dir("nginx")
    ws.dir("nginx", "tmp")
    port = free_port()
    conf = home / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(user=_nginx_user(), home=home, port=port,
                                       export=export_dir))
    argv = [nginx_binary(), "-c", str(conf), "-p", str(home), "-e", str(home / "error.log")]
    child = Child("nginx", argv, ws.log("nginx"), pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and port_open(port), DEADLINE, "nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


# -- mounts ----------------------------------------------------------------------------------

def flowfs_env(root: Path) -> dict[str, str]:
    """The daemon's environment: alice's password and nothing else of the caller's Flow setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(FLOW_USERNAME=USER, FLOW_PASSWORD=PASSWORD,
               XDG_CONFIG_HOME=str(root / "no-config"), XDG_STATE_HOME=str(root / "state"))
    return env


@contextlib.contextmanager
def flowfs_mount(ws: Workspace, mountpoint: Path, api: str, files: str,
                 cache_size: str) -> Iterator[Child]:
    """``flowfs mount --foreground``; yields the daemon (its pid is the daemon's)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    unmount(mountpoint)
    argv = [sys.executable, "-m", "flowfs", "mount", str(mountpoint), "--foreground",
            "--api-url", api, "--files-url", files, "--cache-size", cache_size]
    child = Child("flowfs", argv, ws.log("flowfs"), env=flowfs_env(ws.dir("flowfs-home")),
                  pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and is_mounted(mountpoint), MOUNT_DEADLINE,
                 f"the flowfs mount at {mountpoint}")
        yield child
    finally:
        unmount(mountpoint, "fusermount3")
        child.stop()


def _rclone_path(ws: Workspace) -> str:
    """PATH for rclone: it calls ``fusermount``, which fuse3-only systems name fusermount3."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if shutil.which("fusermount") or not shutil.which("fusermount3"):
        return path
    shim = ws.dir("bin") / "fusermount"
    if not shim.is_symlink():
        shim.symlink_to(str(shutil.which("fusermount3")))
    return f"{shim.parent}:{path}"


@contextlib.contextmanager
def rclone_mount(ws: Workspace, mountpoint: Path, url: str, *, full: bool) -> Iterator[Child]:
    """``rclone mount :http:`` of nginx's ``/downloads/``; fresh (empty) VFS cache when full."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    unmount(mountpoint)
    conf = ws.dir("rclone") / "rclone.conf"
    conf.touch()
    argv = ["rclone", "mount", ":http:", str(mountpoint), "--http-url", f"{url}/downloads/",
            "--config", str(conf)]
    if full:
        cache = ws.root / "rclone" / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        argv += ["--vfs-cache-mode", "full", "--cache-dir", str(cache)]
    env = {**os.environ, "PATH": _rclone_path(ws)}
    name = "rclone-full" if full else "rclone"
    child = Child(name, argv, ws.log(name), env=env, pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and is_mounted(mountpoint), MOUNT_DEADLINE,
                 f"the rclone mount at {mountpoint}")
        yield child
    finally:
        unmount(mountpoint, "fusermount3")
        child.stop()


# -- contenders: the same bytes, named the way each one names them ----------------------------

class View(Protocol):
    """A cold view of the bench files: how to name them and how to read one."""

    daemon: Child | None

    def path(self, item: Item) -> str: ...

    def read_cmd(self, item: Item) -> list[str]: ...


@dataclass
class MountView:
    """Files in a mounted filesystem (flowfs lays them out by sample, rclone by id)."""

    root: Path
    by_sample: bool
    daemon: Child | None = None

    def path(self, item: Item) -> str:
        if self.by_sample:
            return str(self.root / "projects" / PROJECT / "samples" / item.sample / item.filename)
        return str(self.root / item.id / item.filename)

    def read_cmd(self, item: Item) -> list[str]:
        return ["cat", self.path(item)]


@dataclass
class UrlView:
    """Files at nginx's URLs, read with curl."""

    base: str
    daemon: Child | None = None

    def path(self, item: Item) -> str:
        return f"{self.base}/downloads/{item.id}/{item.filename}"

    def read_cmd(self, item: Item) -> list[str]:
        return ["curl", "-sSf", "-o", "/dev/null", self.path(item)]


@dataclass
class LocalView:
    """The source files on local disk, read from the page cache."""

    daemon: Child | None = None

    def path(self, item: Item) -> str:
        return str(item.source)

    def read_cmd(self, item: Item) -> list[str]:
        return ["cat", self.path(item)]


@dataclass
class Contender:
    """One way of reading the bench files; ``fresh()`` gives a cold view (a new mount)."""

    name: str
    ws: Workspace
    kind: str  # flowfs | rclone | rclone_full | curl | local
    nginx_url: str
    api: str = ""
    cache_size: str = "512M"

    @contextlib.contextmanager
    def fresh(self) -> Iterator[View]:
        mnt = self.ws.root / "mnt" / self.name
        if self.kind == "flowfs":
            with flowfs_mount(self.ws, mnt, self.api, self.nginx_url, self.cache_size) as d:
                yield MountView(mnt, by_sample=True, daemon=d)
        elif self.kind in ("rclone", "rclone_full"):
            with rclone_mount(self.ws, mnt, self.nginx_url, full=self.kind == "rclone_full") as d:
                yield MountView(mnt, by_sample=False, daemon=d)
        elif self.kind == "curl":
            yield UrlView(self.nginx_url)
        else:
            yield LocalView()
