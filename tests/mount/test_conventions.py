"""The conventions of the ecosystem through a real mount: owners and modes as rclone has
them, /etc/fstab, index files beside a file opened by id, rsync and du over the views."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from expect import shown_data_ids
from harness import (
    Mount,
    MountFactory,
    Processes,
    Server,
    daemon_pids,
    data_source,
    is_mounted,
    login_token,
    md5s,
    sh,
    user_env,
    wait_for,
)

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


def data_id(catalog: dict[str, Any], sample: str, filename: str) -> str:
    sid = next(s["id"] for s in catalog["samples"] if s["name"] == sample)
    return str(next(d["id"] for d in catalog["data"]
                    if d.get("sample") == sid and Path(d["path"]).name == filename))


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


# -- /etc/fstab ---------------------------------------------------------------------------

# Where mount(8)'s helpers find programs: it runs mount.fuse3 with no PATH of its own, so
# /bin/sh's built-in default applies, which holds /usr/local/bin (the documented symlink).
HELPER_LINK = Path("/usr/local/bin/flowfs")


@pytest.fixture
def flowfs_on_system_path() -> Iterator[Path]:
    """``flowfs`` where mount(8) looks for it: this checkout's, linked for the test only."""
    ours = Path(sys.executable).with_name("flowfs")
    if HELPER_LINK.is_symlink() or HELPER_LINK.exists():
        if HELPER_LINK.resolve() != ours.resolve():
            pytest.skip(f"{HELPER_LINK} is another flowfs: not replaced by a test")
        yield HELPER_LINK
        return
    HELPER_LINK.symlink_to(ours)
    try:
        yield HELPER_LINK
    finally:
        HELPER_LINK.unlink(missing_ok=True)


def plain_mount(fstab: Path, mountpoint: Path, home: Path) -> subprocess.CompletedProcess[bytes]:
    """``mount -T FSTAB MOUNTPOINT`` as a boot script would run it: an environment of a
    system PATH and a HOME only (a HOME of the test's own, not root's real one)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home)}
    return subprocess.run(["mount", "-T", str(fstab), str(mountpoint)], capture_output=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120, check=False)


def token_file(server: Server, path: Path, mode: int = 0o600) -> Path:
    path.write_text(login_token(server, "alice", "alice-pw") + "\n")
    path.chmod(mode)
    return path


@needs_root
def test_an_fstab_line_mounts_with_plain_mount(
        server: Server, tmp_path: Path, daemons: list[Path], flowfs_on_system_path: Path,
        demo: Path, catalog: dict[str, Any]) -> None:
    mountpoint = tmp_path / "flow"
    mountpoint.mkdir()
    secret = token_file(server, tmp_path / "token")
    options = (f"noauto,_netdev,nofail,x-systemd.automount,api_url={server.api},"
               f"files_url={server.files},token_file={secret},uid=1234,gid=5678,umask=027,"
               "allow_other,dir_ttl=30")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"flow {mountpoint} fuse.flowfs {options} 0 0\n")
    daemons.append(mountpoint)
    done = plain_mount(fstab, mountpoint, tmp_path / "home")
    try:
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert is_mounted(mountpoint)  # mount returned once the mount was ready: no polling
        line = next(ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                    if ln.split()[4] == str(mountpoint))
        assert " - fuse.flowfs flowfs " in line and "allow_other" in line
        bam = mountpoint / "samples/liver_1/liver_1.bam"
        assert stat_line(str(bam)) == "640 1234 5678"
        local = data_source(demo, data_id(catalog, "liver_1", "liver_1.bam"))
        assert md5s([str(bam)])[str(bam)] == hashlib.md5(local.read_bytes()).hexdigest()
        status = sh(sys.executable, "-m", "flowfs", "status", str(mountpoint), check=False)
        assert status.returncode == 0 and server.api in status.stdout.decode(), status
    finally:
        umounted = sh("umount", str(mountpoint), check=False)
    assert umounted.returncode == 0, umounted.stderr
    wait_for(lambda: not daemon_pids(mountpoint), 15, "the daemon to exit after umount")


@needs_root
def test_an_fstab_token_file_others_may_read_is_refused(
        server: Server, tmp_path: Path, daemons: list[Path],
        flowfs_on_system_path: Path) -> None:
    mountpoint = tmp_path / "flow"
    mountpoint.mkdir()
    secret = token_file(server, tmp_path / "token", 0o644)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"flow {mountpoint} fuse.flowfs api_url={server.api},"
                     f"files_url={server.files},token_file={secret} 0 0\n")
    daemons.append(mountpoint)
    done = plain_mount(fstab, mountpoint, tmp_path / "home")
    assert done.returncode != 0 and not is_mounted(mountpoint)
    assert f"chmod 600 {secret}" in done.stderr.decode(errors="replace")


# -- rsync and du over the views ------------------------------------------------------------

def du_bytes(*paths: str, apparent: bool = True) -> int:
    """``du``'s total in bytes over all ``paths`` together (``du -sc``)."""
    size = ["--apparent-size"] if apparent else []
    # .flowfs/stats and metrics are rendered afresh on every read: their sizes move
    out = sh("du", "-s", "-c", "-B1", "--exclude=.flowfs", *size, *paths).stdout.decode()
    return int(out.splitlines()[-1].split()[0])


@pytest.mark.parametrize("apparent", [True, False], ids=["apparent", "blocks"])
def test_du_of_the_mount_counts_a_file_shown_in_two_views_once(alice: Mount,
                                                               apparent: bool) -> None:
    """samples/ and projects/<p>/samples/ show the same files. Given several arguments, du
    counts every inode once whatever its link count: that total is the one to match."""
    whole = du_bytes(str(alice.path), apparent=apparent)
    entries = [e for e in sh("ls", "-A", str(alice.path)).stdout.decode().split()
               if e != ".flowfs"]
    assert whole == du_bytes(*(alice.p(name) for name in entries), apparent=apparent)
    views = (alice.p("samples"), alice.p("projects"))
    assert du_bytes(*views, apparent=apparent) < sum(du_bytes(view, apparent=apparent)
                                                     for view in views)  # they share files


def test_rsync_with_the_filter_copies_data_once_and_nothing_the_second_time(
        alice: Mount, tmp_path: Path, catalog: dict[str, Any]) -> None:
    backup = tmp_path / "backup"
    command = ('"$0" -m flowfs rsync-filter | rsync -aH --stats --exclude-from=- '
               '"$1"/ "$2"/')
    first = sh("sh", "-c", command, sys.executable, str(alice.path), str(backup),
               timeout=120).stdout.decode()
    assert not (backup / ".flowfs").exists() and not (backup / ".downloads").exists()
    assert (backup / "samples").is_dir() and (backup / "projects").is_dir()
    by_inode: dict[int, list[Path]] = {}
    for path in backup.rglob("*"):
        if path.is_file():
            by_inode.setdefault(path.stat().st_ino, []).append(path)
    assert any(len(paths) > 1 for paths in by_inode.values()), "no file was shared"
    once = len(shown_data_ids(catalog, "alice")) + 1  # and README.txt
    assert len(by_inode) == once
    assert stat_count(first, "Number of regular files transferred") == once
    again = sh("sh", "-c", command, sys.executable, str(alice.path), str(backup),
               timeout=120).stdout.decode()
    assert stat_count(again, "Number of regular files transferred") == 0


def stat_count(stats: str, label: str) -> int:
    line = next(ln for ln in stats.splitlines() if ln.startswith(label + ":"))
    return int(line.split(":", 1)[1].split()[0].replace(",", ""))


# -- by-id/<id>.d/: index files beside a file opened by id ----------------------------------

def execution_output(catalog: dict[str, Any], suffix: str) -> dict[str, Any]:
    return next(d for d in catalog["data"] if d.get("execution") and d["path"].endswith(suffix))


@pytest.mark.skipif(not shutil.which("samtools"), reason="needs samtools")
def test_samtools_finds_the_index_of_a_bam_opened_by_id(alice: Mount, demo: Path,
                                                        catalog: dict[str, Any]) -> None:
    bam_id = data_id(catalog, "liver_1", "liver_1.bam")
    local = data_source(demo, bam_id)
    folder = alice.p(f"by-id/{bam_id}.d")
    assert sh("ls", folder).stdout.decode().split() == ["liver_1.bam", "liver_1.bam.bai"]
    region = "chr1:1-20000"
    theirs = sh("samtools", "view", "-c", str(local), region).stdout
    assert int(theirs) > 0
    assert sh("samtools", "view", "-c", f"{folder}/liver_1.bam", region).stdout == theirs
    bare = sh("samtools", "view", "-c", alice.p(f"by-id/{bam_id}"), region, check=False)
    assert bare.returncode != 0  # the file by id alone has no index beside it


@pytest.mark.skipif(not shutil.which("tabix"), reason="needs tabix")
def test_tabix_finds_the_index_of_an_execution_vcf_opened_by_id(
        alice: Mount, demo: Path, catalog: dict[str, Any]) -> None:
    vcf = execution_output(catalog, ".vcf.gz")
    name = Path(vcf["path"]).name
    folder = alice.p(f"by-id/{vcf['id']}.d")
    assert sh("ls", folder).stdout.decode().split() == [name, name + ".tbi"]
    local = data_source(demo, vcf["id"])
    theirs = sh("tabix", str(local), "chr1").stdout
    assert theirs and sh("tabix", f"{folder}/{name}", "chr1").stdout == theirs
