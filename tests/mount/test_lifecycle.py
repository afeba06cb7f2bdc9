"""The life of a mount as a user lives it: mount, refusals, signals, stale mounts, unmount.

`flowfs mount` without --foreground daemonises; the daemon is found by its command line
(like `pgrep -f`) and, whatever happens, the `daemons` fixture unmounts and stops it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    DEADLINE,
    Mount,
    Server,
    alive,
    clean_env,
    closed_port,
    daemon_pids,
    flowfs,
    is_mounted,
    sh,
    user_env,
    wait_for,
)

PASSWORD = "alice-pw"  # the demo catalog's
ROOT = ["README.txt", "by-id", "data", "executions", "projects", "samples"]

MountFactory = Callable[..., Mount]


def mount_args(server: Server, mountpoint: Path, *extra: str) -> list[str]:
    return ["mount", str(mountpoint), "--api-url", server.api, "--files-url", server.files,
            *extra]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """alice's password credentials; daemon logs under this test's own state dir."""
    return user_env("alice", PASSWORD, XDG_STATE_HOME=str(tmp_path / "state"))


@pytest.fixture
def mountpoint(tmp_path: Path, daemons: list[Path]) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    daemons.append(path)
    return path


def daemon_log(env: dict[str, str]) -> str:
    logs = sorted(Path(env["XDG_STATE_HOME"]).glob("flowfs/mount-*.log"))
    return "".join(p.read_text(errors="replace") for p in logs)


def refused(proc: subprocess.CompletedProcess[bytes], mountpoint: Path) -> str:
    """The message of a refused mount; also checks nothing was mounted or left running."""
    message = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, message
    assert message.strip(), "a refusal must say why"
    assert not is_mounted(mountpoint)
    wait_for(lambda: not daemon_pids(mountpoint), 15, "the failed daemon to exit")
    return message


def test_daemon_mode_returns_once_mounted_and_umount_ends_it(
    server: Server, env: dict[str, str], mountpoint: Path
) -> None:
    proc = flowfs(*mount_args(server, mountpoint), env=env)
    assert proc.returncode == 0, proc.stderr
    assert sh("ls", str(mountpoint)).stdout.decode().split() == ROOT  # at once, no polling
    pids = daemon_pids(mountpoint)
    assert len(pids) == 1, pids
    out = flowfs("umount", str(mountpoint), env=env)
    assert out.returncode == 0, out.stderr
    assert not is_mounted(mountpoint)
    wait_for(lambda: not alive(pids[0]), 15, "the daemon to exit after umount")
    assert os.listdir(mountpoint) == []


def test_a_non_empty_mount_point_is_refused(server: Server, env: dict[str, str],
                                            mountpoint: Path) -> None:
    (mountpoint / "precious.txt").write_text("mine")
    message = refused(flowfs(*mount_args(server, mountpoint), env=env), mountpoint)
    assert str(mountpoint) in message and "not empty" in message
    assert (mountpoint / "precious.txt").read_text() == "mine"


def test_a_missing_mount_point_is_refused(server: Server, env: dict[str, str],
                                          tmp_path: Path, daemons: list[Path]) -> None:
    missing = tmp_path / "no" / "such"
    daemons.append(missing)
    message = refused(flowfs(*mount_args(server, missing), env=env), missing)
    assert str(missing) in message and "does not exist" in message


def test_a_wrong_password_is_refused_quickly(server: Server, tmp_path: Path,
                                             mountpoint: Path) -> None:
    env = user_env("alice", "not-the-password", XDG_STATE_HOME=str(tmp_path / "state"))
    began = time.monotonic()
    proc = flowfs(*mount_args(server, mountpoint), env=env)
    elapsed = time.monotonic() - began
    message = refused(proc, mountpoint)
    assert "credentials" in message, message
    assert elapsed < 15, f"refusing a wrong password took {elapsed:.1f} s"


def test_an_unreachable_server_is_reported(env: dict[str, str], mountpoint: Path) -> None:
    port = closed_port()
    began = time.monotonic()
    proc = flowfs("mount", str(mountpoint), "--api-url", f"http://127.0.0.1:{port}/api",
                  env=env, timeout=90)
    elapsed = time.monotonic() - began
    message = refused(proc, mountpoint)
    assert "cannot reach Flow" in message, message
    assert elapsed < 30, f"giving up on a closed port took {elapsed:.1f} s"


def test_no_credentials_names_flowfs_login(server: Server, tmp_path: Path,
                                           mountpoint: Path) -> None:
    env = clean_env(XDG_STATE_HOME=str(tmp_path / "state"))
    message = refused(flowfs(*mount_args(server, mountpoint), env=env), mountpoint)
    assert "flowfs login" in message, message


def test_sigterm_unmounts_a_foreground_daemon(server: Server,
                                              own_mounts: MountFactory) -> None:
    m = own_mounts(server, user_env("alice", PASSWORD))
    assert sh("ls", str(m.path)).stdout.decode().split() == ROOT
    assert m.proc is not None
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=DEADLINE) == 0, m.read_log()
    assert not is_mounted(m.path)
    assert os.listdir(m.path) == []


def test_kill_9_leaves_a_stale_mount_that_umount_cleans(
    server: Server, own_mounts: MountFactory, env: dict[str, str], daemons: list[Path]
) -> None:
    m = own_mounts(server, user_env("alice", PASSWORD))
    daemons.append(m.path)
    assert m.proc is not None
    m.proc.kill()
    m.proc.wait(timeout=DEADLINE)
    ls = sh("ls", str(m.path), check=False)
    assert ls.returncode != 0 and b"Transport endpoint is not connected" in ls.stderr
    for extra in ((), ("--mkdir",)):
        again = flowfs(*mount_args(server, m.path, *extra), env=env)
        message = again.stderr.decode()
        assert again.returncode != 0 and "stale mount" in message, message
        assert f"run 'flowfs umount {m.path}'" in message and "Traceback" not in message
        assert "already a mount point" not in message
    out = flowfs("umount", str(m.path), env=env)
    assert out.returncode == 0, out.stderr
    assert not is_mounted(m.path) and os.listdir(m.path) == []
    # and the mount point is usable again
    proc = flowfs(*mount_args(server, m.path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert sh("ls", str(m.path)).stdout.decode().split() == ROOT


# Opens a file, reads a little, says so, waits for a line on stdin, then reads the whole
# file through the same handle and prints its size.
HOLDER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.read(fd, 10)
print("open", flush=True)
sys.stdin.readline()
offset = 0
while chunk := os.pread(fd, 1 << 20, offset):
    offset += len(chunk)
print(offset, flush=True)
"""


def test_umount_with_an_open_file_is_lazy(server: Server, own_mounts: MountFactory,
                                          env: dict[str, str]) -> None:
    m = own_mounts(server, user_env("alice", PASSWORD))
    size = int(sh("stat", "-c", "%s", m.p("data/random.bin")).stdout)  # in a child: a deadline
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, m.p("data/random.bin")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        ready, _, _ = select.select([holder.stdout], [], [], DEADLINE)
        assert ready and holder.stdout.readline() == b"open\n"
        out = flowfs("umount", str(m.path), env=env)
        assert out.returncode == 0, out.stderr
        assert b"lazily" in out.stdout, out.stdout
        assert not is_mounted(m.path)
        # The holder still reads its open file to the end; then the daemon goes away.
        done, err = holder.communicate(b"go\n", timeout=DEADLINE)
        assert holder.returncode == 0, err
        assert int(done) == size
        assert m.proc is not None and m.proc.wait(timeout=DEADLINE) == 0, m.read_log()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=DEADLINE)


@pytest.fixture
def with_password(server: Server, env: dict[str, str], mountpoint: Path) -> int:
    """A daemon-mode mount with password credentials and --debug logging; its pid."""
    proc = flowfs(*mount_args(server, mountpoint, "--debug"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD.encode() not in proc.stdout + proc.stderr
    sh("md5sum", str(mountpoint / "data" / "random.bin"))  # some traffic for the log
    (pid,) = daemon_pids(mountpoint)
    return pid


def test_the_password_is_not_in_argv_nor_the_log(with_password: int,
                                                 env: dict[str, str]) -> None:
    assert PASSWORD.encode() not in Path(f"/proc/{with_password}/cmdline").read_bytes()
    log = daemon_log(env)
    assert "DEBUG" in log, "the daemon's --debug log should exist"
    assert PASSWORD not in log


def test_the_password_is_not_in_the_daemons_environment(with_password: int) -> None:
    environ = Path(f"/proc/{with_password}/environ").read_bytes().split(b"\0")
    leaked = [v.split(b"=", 1)[0].decode() for v in environ if PASSWORD.encode() in v]
    assert not leaked, f"readable in /proc/{with_password}/environ: {leaked}"
