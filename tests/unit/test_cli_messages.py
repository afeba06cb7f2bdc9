"""Messages that say what to do next, and `downloads wait`'s exit statuses, without a server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from flowfs import downloads_cli, mounts
from flowfs.cli import build_parser, main
from flowfs.errors import ConfigError, FlowError
from flowfs.mount import check_mountpoint

# -- umount --------------------------------------------------------------------------------

@pytest.fixture
def not_mounted(monkeypatch: pytest.MonkeyPatch) -> None:
    def unmount(path: Path) -> str:
        raise FlowError(f"{path} is not mounted")

    monkeypatch.setattr("flowfs.mount.unmount", unmount)


def test_umount_of_an_unmounted_dir_names_the_mounts_there_are(
        not_mounted: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(mounts, "flowfs_mounts", lambda: [Path("/home/a/flow")])
    assert main(["umount", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"flowfs umount: {tmp_path} is not mounted; flowfs mounts: /home/a/flow\n")


def test_umount_of_the_configured_dir_says_so_when_there_are_no_mounts(
        not_mounted: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(mounts, "flowfs_mounts", lambda: [])
    monkeypatch.setenv("FLOWFS_MOUNTPOINT", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert main(["umount"]) == 1
    err = capsys.readouterr().err
    assert err == (f"flowfs umount: {tmp_path} is not mounted (the configured mount point; "
                   "name another: flowfs umount DIR); there are no flowfs mounts\n")


# -- mount points ---------------------------------------------------------------------------

def test_a_non_empty_mount_point_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    target = tmp_path / "flow"
    target.mkdir()
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        (target / name).touch()
    with pytest.raises(ConfigError) as err:
        check_mountpoint(target)
    assert str(err.value) == (
        f"mount point {target} is not empty (it holds a, b, c, d, e and 2 more): mounting "
        f"would hide them; mount on an empty directory, or a new one with "
        f"'flowfs mount --mkdir {tmp_path / 'flow-2'}'")


# -- downloads ------------------------------------------------------------------------------

def test_mount_may_follow_the_downloads_action() -> None:
    parser = build_parser()
    assert parser.parse_args(["downloads", "wait", "x", "--mount", "/m"]).mount == "/m"
    assert parser.parse_args(["downloads", "--mount", "/m", "list"]).mount == "/m"
    assert parser.parse_args(["downloads", "create", "--mount", "/m", "n", "p"]).mount == "/m"
    assert parser.parse_args(["downloads", "list"]).mount is None


@pytest.fixture
def fake_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory laid out like a mount's .downloads/ (read only through files)."""
    (tmp_path / ".downloads").mkdir()
    monkeypatch.setattr(downloads_cli, "POLL", 0.01)
    return tmp_path


def job(mount: Path, name: str, state: str, **more: object) -> None:
    (mount / ".downloads" / f"{name}.status").write_text(
        json.dumps({"status": state, "progress": 50, **more}))


@pytest.mark.parametrize(("state", "code"), [("completed", 0), ("failed", 3), ("expired", 3)])
def test_wait_exits_with_what_became_of_the_job(fake_mount: Path, state: str,
                                                code: int) -> None:
    job(fake_mount, "liver", state, error="too big")
    assert main(["downloads", "wait", "liver", "--mount", str(fake_mount)]) == code


def test_wait_for_no_such_job_exits_1_and_says_where_to_look(
        fake_mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["downloads", "--mount", str(fake_mount), "wait", "nope"]) == 1
    assert "flowfs downloads list" in capsys.readouterr().err


def test_wait_that_runs_out_of_time_exits_124(fake_mount: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    job(fake_mount, "liver", "processing")
    assert main(["downloads", "wait", "liver", "--timeout", "0.2",
                 "--mount", str(fake_mount)]) == 124
    assert "still processing after 0 s" in capsys.readouterr().out


def test_wait_on_a_mount_that_hangs_gives_up_at_its_deadline(
        fake_mount: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A FIFO with no writer: open() blocks, as it would on a hung mount.
    os.mkfifo(fake_mount / ".downloads" / "liver.status")
    started = time.monotonic()
    assert main(["downloads", "wait", "liver", "--timeout", "1",
                 "--mount", str(fake_mount)]) == 124
    assert time.monotonic() - started < 10
    assert "is the mount hung?" in capsys.readouterr().err
    # unblock the abandoned reader thread so it does not outlive the test
    fd = os.open(fake_mount / ".downloads" / "liver.status", os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)


def test_the_exit_statuses_are_distinct() -> None:
    codes = (downloads_cli.READY, downloads_cli.ERROR, downloads_cli.JOB_FAILED,
             downloads_cli.TIMED_OUT)
    assert len(set(codes)) == 4 and 2 not in codes  # 2 is argparse's usage error
