"""The conventions of the ecosystem through a real mount: owners and modes as rclone has
them, /etc/fstab, index files beside a file opened by id, rsync and du over the views."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MountFactory
from harness import Processes, Server, sh, user_env

NOBODY = 65534


def as_nobody(*cmd: str, check: bool = True) -> tuple[int, str]:
    """Run ``cmd`` as uid/gid 65534 (root can read anything: only another uid tells)."""
    proc = sh("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd,
              check=check)
    return proc.returncode, proc.stderr.decode(errors="replace")


needs_root = pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as another user")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own temp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="flowfs-conventions-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stat_line(path: str) -> str:
    return sh("stat", "-c", "%a %u %g", path).stdout.decode().strip()


def test_uid_gid_and_umask_are_what_stat_shows(server: Server, mounts: MountFactory) -> None:
    m = mounts(server, "alice", "--uid", "1234", "--gid", "5678", "--umask", "027")
    assert stat_line(m.p("samples/liver_1/liver_1.bam")) == "640 1234 5678"
    assert stat_line(m.p("samples/liver_1")) == "750 1234 5678"
    assert stat_line(str(m.path)) == "750 1234 5678"


@needs_root
def test_a_cp_r_copy_is_ordinary_files_the_copier_can_delete(
        server: Server, processes: Processes, open_dir: Path) -> None:
    (open_dir / "mnt").mkdir()
    m = processes.mount(server, user_env("alice", "alice-pw"), "--allow-other",
                        "--uid", str(NOBODY), "--gid", str(NOBODY), path=open_dir / "mnt")
    copy = open_dir / "copy"
    as_nobody("cp", "-r", m.p("samples/liver_1"), str(copy))
    assert any(copy.iterdir())
    as_nobody("rm", "-r", str(copy))
    assert not copy.exists()


@needs_root
@pytest.mark.parametrize("umask, refused", [("022", False), ("077", True)])
def test_with_allow_other_the_kernel_enforces_the_umask(
        server: Server, processes: Processes, open_dir: Path, umask: str,
        refused: bool) -> None:
    (open_dir / "mnt").mkdir()
    m = processes.mount(server, user_env("alice", "alice-pw"), "--allow-other",
                        "--umask", umask, path=open_dir / "mnt")
    code, err = as_nobody("head", "-c", "1", m.p("samples/liver_1/liver_1.bam"),
                          check=False)
    assert (code != 0) is refused, err
    if refused:
        assert "Permission denied" in err
        code, err = as_nobody("ls", m.p("samples"), check=False)
        assert code != 0 and "Permission denied" in err
