"""Real mounts for tests: the reference server and the daemon, each in its own process.

Everything that touches the mount runs in a child process with a timeout (a
hung FUSE request blocks its caller in the kernel; only a child can be killed
and the test failed). Every process started here is stopped in ``close()``,
and every mount is lazily unmounted, whatever happened. Fixtures start them
through :class:`Processes`, which owns that teardown.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowfs import processes
from flowfs.processes import DEADLINE, is_mounted, stop, wait_for

__all__ = ["DEADLINE", "MountFactory", "ServerFactory", "is_mounted", "stop", "wait_for"]


def sh(*cmd: str, timeout: float = DEADLINE, check: bool = True,
       input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a real tool against the mount, with a deadline."""
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input, cwd=cwd,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


@dataclass
class Server:
    """The reference server in a subprocess, restartable on the same port."""

    catalog: Path
    workdir: Path
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    api: str = ""
    files: str = ""
    port: int = 0

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def start(self) -> Server:
        # On a restart, the same port and state dir: the mounts reading from it stay valid.
        self.proc, info = processes.start_server(
            self.catalog, self.workdir, *self.args, port=self.port, access_log=self.access_log)
        self.api, self.files = info["api"], info["files"]
        self.port = int(self.files.rsplit(":", 1)[1].rstrip("/"))
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def requests(self) -> list[dict[str, Any]]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


@dataclass
class Mount:
    """One flowfs mount in a subprocess (`flowfs mount --foreground`)."""

    server: Server
    path: Path
    env: dict[str, str]
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.path.parent / f"{self.path.name}.log"

    def start(self, timeout: float = DEADLINE) -> Mount:
        self.path.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "flowfs", "mount", str(self.path), "--foreground",
               "--api-url", self.server.api, "--files-url", self.server.files, *self.args]
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                     env=self.env)
        out.close()

        proc = self.proc
        processes.wait_mounted(
            self.path, lambda: processes.alive(proc, "flowfs", self.log), timeout)
        return self

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def p(self, rel: str) -> str:
        return str(self.path / rel)

    def close(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True,
                       timeout=DEADLINE, check=False)
        stop(self.proc)
        self.proc = None


def _inherited() -> dict[str, str]:
    """This process's environment without Flow credentials and without its state dir (a
    mount's remembered names must not reach the user's own, nor one test's another's)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("FLOW_") and k != "XDG_STATE_HOME"}


NO_CACHE_HOME = "/nonexistent-flowfs-cache"


def user_env(username: str, password: str, **extra: str) -> dict[str, str]:
    """An environment with only what the daemon needs: no inherited credentials."""
    env = _inherited()
    env.update(FLOW_USERNAME=username, FLOW_PASSWORD=password, **extra)
    env["XDG_CONFIG_HOME"] = env.get("XDG_CONFIG_HOME_TEST", "/nonexistent-flowfs-config")
    # No disk cache in the invoking user's ~/.cache: none at all unless the test (or
    # Processes.mount) gives one.
    env["XDG_CACHE_HOME"] = extra.get("XDG_CACHE_HOME", NO_CACHE_HOME)
    # No disk cache, whatever the default: tests turn it on where they test it
    # (--disk-cache, or this variable given); the others count what crosses the network.
    env["FLOWFS_DISK_CACHE"] = extra.get("FLOWFS_DISK_CACHE", "false")
    return env


# -- helpers for the read, fault, lifecycle and listing-cost tests ----------------------------

FLOWFS = (sys.executable, "-m", "flowfs")

# Reads every path given and prints {path: md5 hex, or "error: <strerror>"} as JSON.
MD5S = r"""
import hashlib, json, sys
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb", buffering=0) as fh:
            h = hashlib.md5()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[path] = h.hexdigest()
    except OSError as exc:
        out[path] = "error: " + (exc.strerror or str(exc))
json.dump(out, sys.stdout)
"""


def md5s(paths: Sequence[str], timeout: float = DEADLINE) -> dict[str, str]:
    """md5 of each file read in one child process; failures as ``"error: <strerror>"``."""
    return json.loads(sh(sys.executable, "-c", MD5S, *paths, timeout=timeout).stdout)


def flowfs(*args: str, env: dict[str, str],
           timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """Run the ``flowfs`` command with a deadline; callers check the exit status."""
    return subprocess.run([*FLOWFS, *args], capture_output=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, check=False)


def clean_env(**extra: str) -> dict[str, str]:
    """An environment with no Flow credentials at all (and no stored session)."""
    env = _inherited()
    env["XDG_CONFIG_HOME"] = "/nonexistent-flowfs-config"
    env["XDG_CACHE_HOME"] = NO_CACHE_HOME
    env.update(extra)
    return env


def daemon_pids(mountpoint: Path) -> list[int]:
    """Live flowfs daemons serving ``mountpoint``, found by command line like ``pgrep -f``."""
    target = str(mountpoint)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "flowfs" in args and "mount" in args and target in args and alive(int(entry)):
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int) -> None:
    """SIGTERM a process that is not our child, then SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + 10
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        if not alive(pid):
            return


def login_token(server: Server, username: str, password: str) -> str:
    """An access token from the server's login endpoint (what an API key user would hold)."""
    import httpx

    resp = httpx.post(f"{server.api}/login", json={"username": username, "password": password},
                      timeout=10)
    resp.raise_for_status()
    return str(resp.json()["token"])


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_files_catalog(root: Path, names: Sequence[str], size: int, first_id: int,
                         users: Sequence[str] = ("alice",),
                         shared_with: Mapping[str, list[str]] | None = None) -> Path:
    """``root/catalog.json`` of one private file per name, ``size`` random bytes under
    ``root/files``, owned by the first of ``users`` (each one's password ``<name>-pw``),
    ids from ``first_id`` on; ``shared_with`` names the users a file is shared with."""
    (root / "files").mkdir(parents=True)
    data = []
    for n, name in enumerate(names):
        body = os.urandom(size)
        (root / "files" / name).write_bytes(body)
        record: dict[str, Any] = {
            "id": str(first_id + n), "path": f"files/{name}", "filename": name,
            "owner": users[0], "private": True, "size": size,
            "md5": hashlib.md5(body).hexdigest()}
        if shared_with and name in shared_with:
            record["shared_with"] = shared_with[name]
        data.append(record)
    catalog = {"users": [{"username": u, "password": f"{u}-pw", "name": u.title()}
                         for u in users],
               "projects": [], "samples": [], "executions": [], "data": data}
    path = root / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def data_source(catalog_path: Path, data_id: str) -> Path:
    """The file on disk behind a data id of a catalog."""
    catalog = json.loads(catalog_path.read_text())
    entry = next(d for d in catalog["data"] if d["id"] == data_id)
    path = Path(entry["path"])
    return path if path.is_absolute() else catalog_path.parent / path


# -- the fault-injection proxy (tests/faults/proxy.py) between a mount and its server -------

PROXY_SCRIPT = Path(__file__).resolve().parents[1] / "faults" / "proxy.py"


@dataclass
class FaultProxy:
    """tests/faults/proxy.py in a subprocess, in front of a running :class:`Server`.

    ``endpoint()`` is a ``Server`` whose URLs point at the proxy: give it to ``Mount``
    (or the ``own_mounts`` fixture) where a server is expected.
    """

    upstream: Server
    workdir: Path
    spec: str = "off"
    seed: int = 0
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> FaultProxy:
        ready = self.workdir / "proxy-ready.json"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, str(PROXY_SCRIPT), "--upstream", self.upstream.files,
               "--port", "0", "--ready-file", str(ready), "--faults", self.spec,
               "--seed", str(self.seed), *self.args]
        out = open(self.workdir / "proxy.out", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        out.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"proxy exited: {(self.workdir / 'proxy.out').read_text()}")
            return ready.exists()

        wait_for(up, what="the fault proxy")
        self.url = json.loads(ready.read_text())["url"]
        return self

    def endpoint(self) -> Server:
        """A stand-in server for ``Mount``: the proxy's URLs, the upstream's catalog."""
        return Server(self.upstream.catalog, self.workdir, api=f"{self.url}/api",
                      files=self.url)

    def set_faults(self, spec: str, seed: int | None = None) -> None:
        """Replace the fault spec (``"off"``: none); ``seed`` restarts the random draws."""
        import httpx

        params = {} if seed is None else {"seed": str(seed)}
        resp = httpx.put(f"{self.url}/__proxy__/faults", content=spec.encode(),
                         params=params, timeout=10)
        assert resp.status_code == 204, resp.text

    def stats(self) -> dict[str, int]:
        """Counters: ``requests.files``, ``requests.api``, ``fault.<kind>``, ``path./api/x``."""
        import httpx

        resp = httpx.get(f"{self.url}/__proxy__/stats", timeout=10)
        resp.raise_for_status()
        return {k: int(v) for k, v in resp.json().items()}

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


# -- the one place tests start servers, proxies and mounts -------------------------------------


class Processes:
    """Reference servers, fault proxies and mounts started for tests; all stopped on exit.

    Use as a context manager (``with Processes(tmp_path_factory.mktemp) as procs``). Each
    teardown is registered before its start, since a start that times out leaves its process
    running. Teardowns run in reverse order, so a mount is lazily unmounted and its daemon
    stopped before the proxy and server it reads from; each runs even if one before it fails.
    """

    def __init__(self, mktemp: Callable[[str], Path]) -> None:
        self._mktemp = mktemp
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def server(self, catalog: Path, *args: str) -> Server:
        """A reference server on ``catalog`` with extra flags; stop and ``start()`` it again
        as a test likes (same port and state dir)."""
        srv = Server(catalog, self._mktemp("server"), args)
        self._stack.callback(srv.stop)
        return srv.start()

    def proxy(self, server: Server, spec: str = "off", seed: int = 0, *args: str) -> FaultProxy:
        """A fault proxy in front of ``server``: mount ``proxy.endpoint()``."""
        proxy = FaultProxy(server, self._mktemp("proxy"), spec, seed, args)
        self._stack.callback(proxy.stop)
        return proxy.start()

    def mount(self, server: Server, env: dict[str, str], *args: str,
              path: Path | None = None) -> Mount:
        """A foreground mount of ``server`` (``path``: by default a fresh ``.../flow``).

        Its state dir (remembered names) is a fresh one unless ``env`` names one; unless
        ``--cache-dir`` is given or ``env`` names a cache home of its own, so is its disk
        cache: tests must not share blocks through the invoking user's ``~/.cache``.
        """
        env = {"XDG_STATE_HOME": str(self._mktemp("state")), **env}
        if "--cache-dir" not in args and env.get("XDG_CACHE_HOME") in (None, NO_CACHE_HOME):
            env = {**env, "XDG_CACHE_HOME": str(self._mktemp("cache"))}
        m = Mount(server, path or self._mktemp("mnt") / "flow", env, args)
        self._stack.callback(m.close)
        return m.start()


#: ``make(server, ...)`` -> a started mount (the ``mounts`` and ``own_mounts`` fixtures).
MountFactory = Callable[..., Mount]
#: ``make(catalog, *flags)`` -> a started reference server (the ``servers`` fixture).
ServerFactory = Callable[..., Server]
