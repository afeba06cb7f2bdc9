"""The command line without a server: --version, config, completion, errors, notify, status."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowfs import __version__
from flowfs.cli import build_parser, main
from flowfs.completion import bash_script
from flowfs.mounts import parse_mountinfo
from flowfs.notify import Notifier
from flowfs.status_cli import MountStatus, read_mount_status, render


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with no Flow credentials and no config file."""
    for name in list(os.environ):
        if name.startswith(("FLOW_", "FLOWFS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return tmp_path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"flowfs {__version__}"


def test_config_shows_each_value_and_its_source(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (home / "cfg" / "flowfs").mkdir(parents=True)
    (home / "cfg" / "flowfs" / "config.toml").write_text('cache_size = "1G"\n')
    monkeypatch.setenv("FLOW_API_URL", "http://flow.test/api")
    assert main(["config", "--dir-ttl", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 'api_url = "http://flow.test/api"  # env FLOW_API_URL' in [
        " ".join(line.split()[:3]) + "  " + " ".join(line.split()[3:]) for line in lines]
    by_key = {line.split()[0]: line for line in lines if not line.startswith("#")}
    assert by_key["cache_size"].endswith(f"# file {home}/cfg/flowfs/config.toml")
    assert by_key["dir_ttl"].endswith("# flag --dir-ttl")
    assert by_key["mountpoint"].endswith("# default")


def test_a_bad_config_file_is_one_line_on_stderr(home: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (home / "cfg" / "flowfs").mkdir(parents=True)
    (home / "cfg" / "flowfs" / "config.toml").write_text("color = 1\n")
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'color'" in err and "config.toml" in err


def test_mount_without_a_mount_point_uses_the_configured_one(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / "cfg" / "flowfs").mkdir(parents=True)
    (home / "cfg" / "flowfs" / "config.toml").write_text(f'mountpoint = "{home}/mnt/flow"\n')
    assert main(["mount"]) == 1
    assert f"mount point {home}/mnt/flow does not exist (mkdir -p {home}/mnt/flow)" in (
        capsys.readouterr().err)


def test_whoami_without_credentials_names_flowfs_login(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whoami", "--api-url", "http://127.0.0.1:9/api"]) == 1
    err = capsys.readouterr().err
    assert "not logged in" in err and "flowfs login" in err


def test_logout_when_not_logged_in(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logout"]) == 0
    assert capsys.readouterr().out.strip() == "not logged in to https://app.flow.bio/api"


def test_the_last_login_is_the_default_server_below_every_setting(
        home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from flowfs import sessions

    sessions.remember(sessions.Session("http://first.test/api", "alice", "t", "r"))
    sessions.remember(sessions.Session("http://second.test/api", "bob", "t", "r"))
    assert main(["config"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("api_url"))
    assert '"http://second.test/api"' in line and "# the last 'flowfs login'" in line
    monkeypatch.setenv("FLOW_API_URL", "http://env.test/api")
    assert main(["config"]) == 0
    assert 'api_url = "http://env.test/api"' in capsys.readouterr().out
    monkeypatch.delenv("FLOW_API_URL")
    assert main(["logout"]) == 0  # the default server's session
    assert capsys.readouterr().out.strip() == (
        "logged out of http://second.test/api; the default server is now http://first.test/api")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("words, expected", [
    (["flowfs", "mo"], {"mount"}),
    (["flowfs", "mount", "--ca"], {"--cache-size", "--cache-dir"}),
    (["flowfs", "mount", "--no-d"], {"--no-disk-cache"}),
    (["flowfs", "completion", ""], {"bash", "fish", "zsh"}),
    (["flowfs", "downloads", "w"], {"wait"}),
])
def test_bash_completion(words: list[str], expected: set[str], tmp_path: Path) -> None:
    script = bash_script(build_parser())
    driver = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
              f"COMP_CWORD={len(words) - 1}\n_flowfs\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, timeout=30,
                         check=True, cwd=tmp_path).stdout
    assert set(out.split()) == expected


# -- sd_notify ------------------------------------------------------------------

@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for the service manager (short path: AF_UNIX limit)."""
    folder = tempfile.mkdtemp(prefix="ffs-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder)


def test_notify_sends_ready_and_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "OTHER": "x"}
    notifier = Notifier.from_environment(env)
    assert "NOTIFY_SOCKET" not in env  # children must not inherit it
    assert notifier.ready("serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_notify_to_an_abstract_socket() -> None:
    name = f"flowfs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_notify_without_a_manager_does_nothing_and_never_raises(tmp_path: Path) -> None:
    assert not Notifier.from_environment({}).ready()
    assert not Notifier(str(tmp_path / "gone")).stopping()


# -- status ---------------------------------------------------------------------

MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
51 22 0:45 / /home/alice/flow rw,nosuid,nodev - fuse.flowfs flowfs rw,user_id=1000
52 22 0:46 / /home/alice/my\\040flow rw,nosuid,nodev - fuse.flowfs flowfs rw,user_id=1000
53 22 0:47 / /mnt/other rw - fuse.sshfs host: rw
"""


def test_flowfs_mounts_are_found_in_mountinfo() -> None:
    assert parse_mountinfo(MOUNTINFO) == [Path("/home/alice/flow"), Path("/home/alice/my flow")]


def test_status_of_a_directory_without_stats_says_so(tmp_path: Path) -> None:
    status = read_mount_status(tmp_path)
    assert status.stats is None and status.problem and ".flowfs/stats" in status.problem


def test_status_renders_the_numbers_a_user_looks_for() -> None:
    stats = {"api_url": "https://app.flow.bio/api", "user": "alice", "pid": 42, "uptime": 3725,
             "cache_size": 512 * 2**20, "cache": {"hits": 7, "misses": 3,
                                                  "cached_bytes": 3 * 2**20},
             "api": {"requests": 12, "bytes_fetched": 5 * 2**20}, "inodes": 99,
             "downloads": {"jobs": 2, "active": 1}}
    text = render(MountStatus(Path("/home/alice/flow"), stats))
    assert text.splitlines()[0] == (
        "/home/alice/flow: alice at https://app.flow.bio/api (pid 42, up 1h02m)")
    assert "7 hits, 3 misses; 3.0M cached of 512.0M" in text
    assert "5.0M fetched in 12 requests" in text
    assert "1 active of 2 jobs" in text
    assert "disk     cache off" in text


def test_status_shows_the_disk_cache_and_where_bytes_came_from() -> None:
    stats = {"api_url": "http://x/api", "uptime": 1,
             "disk_cache": {"dir": "/c", "hits": 30, "misses": 10, "used_bytes": 2**30,
                            "limit_bytes": 10 * 2**30, "damaged": 2, "errors": 0,
                            "write_skipped": 5, "writable": False},
             "bytes_from": {"memory": 2**20, "disk": 3 * 2**20, "network": 5 * 2**20}}
    text = render(MountStatus(Path("/m"), stats))
    assert ("disk     30 hits, 10 misses; 1.0G cached of 10.0G in /c; 5 blocks not written "
            "(the next read fetches them); 2 damaged blocks refetched; not writable: "
            "serving what it holds") in text
    assert "read     1.0M from memory, 3.0M from disk, 5.0M from the network" in text


def test_status_says_whether_the_kernel_limits_were_raised_and_why_not() -> None:
    base = {"api_url": "http://x/api", "uptime": 1}
    raised = {"complete": True, "skipped": {},
              "applied": {"read_ahead_kb": 1024, "max_background": 64}}
    text = render(MountStatus(Path("/m"), {**base, "kernel": raised}))
    assert "kernel   limits raised: read-ahead 1024 KiB, 64 requests in flight" in text
    missing = {"complete": False, "applied": {},
               "skipped": {"max_background": "only root may mount fusectl"}}
    text = render(MountStatus(Path("/m"), {**base, "kernel": missing}))
    assert "limits NOT raised, reads are slower (max_background: only root may mount" in text


def test_a_call_into_a_mount_gives_its_value_its_error_or_hung_by_its_deadline() -> None:
    from flowfs.mounts import Hung, InThread, within

    assert within(lambda: 42, 5, "t") == 42
    with pytest.raises(FileNotFoundError):
        within(lambda: Path("/nonexistent-flowfs/x").read_bytes(), 5, "t")
    blocked = threading.Event()
    stuck = InThread(blocked.wait, "t")  # a hung daemon: the call never returns by itself
    began = time.monotonic()
    with pytest.raises(Hung):
        stuck.result(0.2)
    assert time.monotonic() - began < 2
    blocked.set()
    assert stuck.result(5) is True  # and a late answer is still delivered
