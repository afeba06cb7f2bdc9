"""Child processes for the demo, the tests and the benchmarks: the one way to start them.

The reference server (``python -m flowfs.server``) and a foreground mount are started as
children and waited for with a deadline: a server is ready once it has written its ready
file (its URLs, port 0 resolved), a mount once the kernel lists it in mountinfo. Both checks
fail at once, with the child's log, if the child exits first.

A leaf: it imports nothing of flowfs, and no server dependency (the server runs in the
child), so the daemon's install does not need the ``server`` extra to import it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEADLINE = 30.0


class ChildExited(RuntimeError):
    """A child process ended before it was ready."""


def wait_for(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "",
             interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; its value.

    The wait between polls starts at 10 ms and doubles up to ``interval``. Past ``timeout``
    seconds: ``TimeoutError``. Whatever ``predicate`` raises (e.g. :class:`ChildExited`)
    ends the wait at once.
    """
    end = time.monotonic() + timeout
    delay = min(0.01, interval)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, interval)


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
         timeout: float = 10.0) -> int | None:
    """Signal ``proc`` and wait for it, SIGKILL past ``timeout``; its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def is_mounted(path: Path) -> bool:
    """Whether a filesystem is mounted exactly at ``path``, without a call into it.

    Only the parent is resolved: ``realpath(path)`` would ``lstat`` the mount root, a FUSE
    request made from the caller's process without a deadline (a hung daemon hangs it).
    """
    target = os.path.join(os.path.realpath(path.parent), path.name)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def _tail(log: Path | None, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:] if log is not None else ""
    except OSError:
        return ""


def alive(proc: subprocess.Popen[bytes], what: str, log: Path | None = None) -> bool:
    """True while ``proc`` runs; :class:`ChildExited` with the tail of ``log`` once it ended."""
    if proc.poll() is not None:
        raise ChildExited(f"{what} exited {proc.returncode}: {_tail(log)}")
    return True


# -- the reference server -----------------------------------------------------------------------


def server_command(catalog: Path, ready_file: Path, state_dir: Path, *args: str,
                   port: int = 0, access_log: Path | None = None) -> list[str]:
    """The reference server's command line (``args``: more of its flags)."""
    cmd = [sys.executable, "-m", "flowfs.server", "--catalog", str(catalog),
           "--port", str(port), "--state-dir", str(state_dir), "--ready-file", str(ready_file)]
    if access_log is not None:
        cmd += ["--access-log", str(access_log)]
    return [*cmd, *args]


def wait_ready(ready_file: Path, running: Callable[[], bool], timeout: float = DEADLINE,
               what: str = "the reference server") -> dict[str, str]:
    """The server's ready file (``api``, ``files``), once written; ``running`` raises (or
    returns False: then :class:`ChildExited`) if the server died first."""

    def ready() -> bool:
        if not running():
            raise ChildExited(f"{what} exited before it was ready")
        return ready_file.exists()

    wait_for(ready, timeout, what)
    info: dict[str, str] = json.loads(ready_file.read_text())
    return info


def start_server(catalog: Path, workdir: Path, *args: str, port: int = 0,
                 state_dir: Path | None = None, access_log: Path | None = None,
                 stdout: Path | None = None, stderr: Path | None = None,
                 timeout: float = DEADLINE) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Start the reference server on ``port`` (0: a free one) and wait until it is ready.

    Its ready file is ``workdir/ready.json``, its state ``state_dir`` (``workdir/state``),
    its output appended to ``stdout``/``stderr`` (both ``workdir/server.out``). If it does
    not get ready, it is killed and :class:`ChildExited` or ``TimeoutError`` raised.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    out = stdout or workdir / "server.out"
    err = stderr or out
    cmd = server_command(catalog, ready, state_dir or workdir / "state", *args, port=port,
                         access_log=access_log)
    with open(out, "ab") as out_fh, open(err, "ab") as err_fh:
        proc = subprocess.Popen(cmd, stdout=out_fh, stderr=err_fh, stdin=subprocess.DEVNULL)
    try:
        info = wait_ready(ready, lambda: alive(proc, "the reference server", err), timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, info


# -- mounts -------------------------------------------------------------------------------------


def wait_mounted(path: Path, running: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Wait until a mount is at ``path`` (see :func:`is_mounted`); ``running`` raises (or
    returns False: then :class:`ChildExited`) if the daemon died first."""

    def mounted() -> bool:
        if not running():
            raise ChildExited(f"the daemon of {path} exited before it mounted")
        return is_mounted(path)

    wait_for(mounted, timeout, f"the mount at {path}")
