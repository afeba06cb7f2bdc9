"""Real mounts for tests: the reference server and the daemon, each in its own process.

Everything that touches the mount runs in a child process with a timeout (a
hung FUSE request blocks its caller in the kernel; only a child can be killed
and the test failed). Every process started here is stopped in ``close()``,
and every mount is lazily unmounted, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEADLINE = 30.0


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    end = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def sh(*cmd: str, timeout: float = DEADLINE, check: bool = True,
       input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a real tool against the mount, with a deadline."""
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input, cwd=cwd,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


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
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "flowfs.server", "--catalog", str(self.catalog),
               "--port", str(self.port), "--state-dir", str(self.workdir / "state"),
               "--ready-file", str(ready), "--access-log", str(self.access_log), *self.args]
        log = open(self.workdir / "server.out", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"server exited: {(self.workdir / 'server.out').read_text()}")
            return ready.exists()

        wait_for(up, what="the reference server")
        info = json.loads(ready.read_text())
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

        def mounted() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"flowfs exited {self.proc.returncode}: {self.read_log()}")
            return is_mounted(self.path)

        wait_for(mounted, timeout, what=f"the mount at {self.path}")
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


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def user_env(username: str, password: str, **extra: str) -> dict[str, str]:
    """An environment with only what the daemon needs: no inherited credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(FLOW_USERNAME=username, FLOW_PASSWORD=password, **extra)
    env["XDG_CONFIG_HOME"] = env.get("XDG_CONFIG_HOME_TEST", "/nonexistent-flowfs-config")
    return env
