"""Child processes, mounts and the page cache: the small tools every benchmark part uses.

Every long-running child is started in its own session (a Ctrl-C reaches only the driver,
which then stops the children in order) and its pid is appended to a pid file, so that
``bench/run`` can stop, by pid, whatever a killed driver left behind.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# The one harness the tests and the demo use too: polls with a deadline (TimeoutError),
# and a mount check that never calls into the mount.
from flowfs.processes import is_mounted, wait_for

__all__ = ["BenchError", "Child", "Workspace", "is_mounted", "wait_for"]

log = logging.getLogger(__name__)

DEADLINE = 60.0
_READ_CHUNK = 8 << 20


class BenchError(Exception):
    """A benchmark step failed in a way worth reporting (a tool exited non-zero, a timeout)."""


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Child:
    """A long-running child process with its output in a log file."""

    name: str
    argv: Sequence[str]
    logfile: Path
    env: Mapping[str, str] | None = None
    pidfile: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Child:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        out: IO[bytes] = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(list(self.argv), stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        finally:
            out.close()
        if self.pidfile is not None:
            with open(self.pidfile, "a") as fh:
                fh.write(f"{self.proc.pid}\n")
        log.debug("started %s (pid %d)", self.name, self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} is not running")
        return self.proc.pid

    def check_alive(self) -> bool:
        """True while running; raises BenchError with the log's tail once it has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
        return True

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal the child, wait for it, and SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            proc.kill()
            proc.wait(timeout=timeout)


def unmount(path: Path, fusermount: str = "fusermount3") -> None:
    """Unmount a FUSE mount, lazily if it is busy; quiet if it is not mounted."""
    for args in ([fusermount, "-u"], [fusermount, "-u", "-z"]):
        if not is_mounted(path):
            return
        subprocess.run([*args, str(path)], capture_output=True, timeout=30, check=False)


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False when not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    except OSError:
        return False
    return True


def warm(paths: Sequence[Path]) -> None:
    """Read files into the page cache, so a files server serves them from memory."""
    buf = bytearray(_READ_CHUNK)
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    return {**os.environ, **extra} if extra else None


def run_timed(argv: Sequence[str], timeout: float, cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> float:
    """Wall-clock seconds of one command (stdout discarded); BenchError if it fails.

    ``env``: variables added to this process's environment for the command.
    """
    start = time.perf_counter()
    proc = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=cwd, env=_env(env),
                          check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def run_output(argv: Sequence[str], timeout: float, cwd: Path | None = None,
               env: Mapping[str, str] | None = None) -> tuple[float, str]:
    """Wall-clock seconds and stdout of one command; BenchError if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, cwd=cwd, env=_env(env), check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-500:]}")
    return elapsed, proc.stdout.decode(errors="replace")


def run_parallel(commands: Sequence[Sequence[str]], timeout: float,
                 env: Mapping[str, str] | None = None) -> float:
    """Start every command at once; wall-clock seconds until the last one ends."""
    start = time.perf_counter()
    procs = [subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=_env(env)) for argv in commands]
    failures = []
    try:
        for argv, proc in zip(commands, procs, strict=True):
            remaining = max(0.1, timeout - (time.perf_counter() - start))
            _, err = proc.communicate(timeout=remaining)
            if proc.returncode != 0:
                failures.append(f"{' '.join(argv)} exited {proc.returncode}: "
                                f"{err.decode(errors='replace')[-300:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    elapsed = time.perf_counter() - start
    if failures:
        raise BenchError("; ".join(failures))
    return elapsed


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/status (VmRSS, VmHWM...), in bytes."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[key] = int(parts[0]) * 1024
    return fields


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
