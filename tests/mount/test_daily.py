"""flowfs as a daily tool, against the reference server: the README's commands, login and
whoami, the configured mount point, `.flowfs/stats` and `flowfs status`, the systemd unit and
its readiness protocol, and `flowfs demo --no-wait`."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DEADLINE, Server, ServerFactory, is_mounted, sh, stop, wait_for

pytestmark = pytest.mark.mount

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def person(home: Path, server: Server, **extra: str) -> dict[str, str]:
    """The environment of a user whose home is ``home``: no Flow variables but the server's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOW_", "FLOWFS_", "XDG_", "NOTIFY_SOCKET"))}
    env.update(HOME=str(home), PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
               FLOW_API_URL=server.api, FLOW_FILES_URL=server.files, **extra)
    return env


def run(cmd: str, env: dict[str, str], cwd: Path, stdin: str = "",
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], env=env, cwd=cwd, input=stdin, text=True,
                          capture_output=True, timeout=timeout, check=False)


def code_blocks(markdown: str) -> list[list[str]]:
    return [block.strip("\n").splitlines()
            for block in re.findall(r"```sh\n(.*?)```", markdown, re.S)]


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


# -- the README -----------------------------------------------------------------------------

def test_the_readme_commands_work_against_the_reference_server(
        server: Server, tmp_path: Path, daemons: list[Path]) -> None:
    """Every line of README's "Using it with Flow" block, run as written, in a fresh home."""
    home = tmp_path / "home"
    home.mkdir()
    env = person(home, server)
    (block,) = code_blocks(section((ROOT / "README.md").read_text(), "Using it with Flow"))
    daemons.append(home / "flow")
    outputs = {}
    for line in block:
        command = line.split("  #", 1)[0].strip()
        stdin = "alice\nalice-pw\n" if command.startswith("flowfs login") else ""
        proc = run(command, env, home, stdin)
        status_ok = command == "flowfs status" and proc.returncode in (0, 1)  # others' mounts
        assert proc.returncode == 0 or status_ok, f"{command}: {proc.stdout}{proc.stderr}"
        outputs[command.split()[1] if command.startswith("flowfs") else command] = proc.stdout
    assert "alice" in outputs["whoami"] and "sessions.json" in outputs["whoami"]
    assert "Liver RNA-seq" in outputs["ls ~/flow/projects"]
    ours = [chunk for chunk in outputs["status"].split("\n/")
            if chunk.lstrip("/").startswith(str(home / "flow").lstrip("/") + ":")]
    assert ours and "hits" in ours[0] and "requests" in ours[0], outputs["status"]
    assert not is_mounted(home / "flow")


def test_the_demo_runs_and_cleans_up(tmp_path: Path) -> None:
    (block, *_) = code_blocks((ROOT / "README.md").read_text())
    assert ".ci/setup && .venv/bin/flowfs demo" in block
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOW_", "FLOWFS_"))}
    mountpoint = tmp_path / "demo"
    try:
        proc = subprocess.run([str(VENV_BIN / "flowfs"), "demo", "--no-wait", str(mountpoint)],
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "liver_1.bam" in proc.stdout and "unmounted; server stopped" in proc.stdout
        assert not is_mounted(mountpoint)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True,
                       timeout=DEADLINE, check=False)


# -- credentials ----------------------------------------------------------------------------

def test_login_whoami_logout(server: Server, tmp_path: Path) -> None:
    env = person(tmp_path, server)
    login = f"flowfs login --api-url {server.api} --username alice --password-stdin"
    bad = run(login, env, tmp_path, "wrong\n")
    assert bad.returncode == 1 and "flowfs login" in bad.stderr
    assert not (tmp_path / ".config" / "flowfs" / "sessions.json").exists()

    good = run(login, env, tmp_path, "alice-pw\n")
    assert good.returncode == 0, good.stderr
    session = tmp_path / ".config" / "flowfs" / "sessions.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert stat.S_IMODE(session.parent.stat().st_mode) == 0o700
    assert "alice-pw" not in session.read_text()

    who = run("flowfs whoami", env, tmp_path)
    assert who.returncode == 0, who.stderr
    assert who.stdout.startswith("alice (") and f"credentials: {session}" in who.stdout
    token = json.loads(session.read_text())["sessions"][server.api]["token"]
    assert token not in who.stdout + who.stderr

    with_token = run("flowfs whoami", {**env, "FLOW_API_TOKEN": token}, tmp_path)
    assert "credentials: FLOW_API_TOKEN" in with_token.stdout
    assert token not in with_token.stdout + with_token.stderr

    assert run("flowfs logout", env, tmp_path).stdout.strip() == f"logged out of {server.api}"
    gone = run("flowfs whoami", env, tmp_path)
    assert gone.returncode == 1 and "flowfs login" in gone.stderr


def test_login_remembers_each_server_and_the_last_is_the_default(
        server: Server, servers: ServerFactory, demo: Path, tmp_path: Path,
        daemons: list[Path]) -> None:
    """Like rclone's remotes: a second login keeps the first; no --api-url needed after."""
    other = servers(demo)
    env = person(tmp_path, server)
    del env["FLOW_API_URL"], env["FLOW_FILES_URL"]  # only what login remembers
    first = run(f"flowfs login --api-url {server.api} --username alice --password-stdin",
                env, tmp_path, "alice-pw\n")
    assert first.returncode == 0, first.stderr
    who = run("flowfs whoami", env, tmp_path)
    assert who.returncode == 0 and who.stdout.startswith("alice (") and server.api in who.stdout
    second = run(f"flowfs login --api-url {other.api} --username bob --password-stdin",
                 env, tmp_path, "bob-pw\n")
    assert second.returncode == 0, second.stderr
    assert f"{other.api} is now the default server" in second.stdout
    assert f"kept for: {server.api} (use one with --api-url URL)" in second.stdout
    now = run("flowfs whoami", env, tmp_path)
    assert now.stdout.startswith("bob (") and other.api in now.stdout, now.stdout + now.stderr
    assert f"stored sessions: {server.api}, {other.api} (default)" in now.stdout
    before = run(f"flowfs whoami --api-url {server.api}", env, tmp_path)
    assert before.returncode == 0 and before.stdout.startswith("alice ("), before.stderr
    mnt = tmp_path / "flow"
    mnt.mkdir()
    daemons.append(mnt)
    mounted = run(f"flowfs mount {mnt}", env, tmp_path)  # the default server, bob's
    assert mounted.returncode == 0, mounted.stderr
    stats = json.loads(sh("cat", str(mnt / ".flowfs" / "stats")).stdout)
    assert stats["user"] == "bob" and stats["api_url"] == other.api


# -- configuration, stats, status -----------------------------------------------------------

def test_configured_mount_point_stats_and_status(server: Server, tmp_path: Path,
                                                 daemons: list[Path]) -> None:
    home = tmp_path / "home"
    mountpoint = tmp_path / "configured"
    config = home / ".config" / "flowfs" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'mountpoint = "{mountpoint}"\napi_url = "{server.api}"\n'
                      f'files_url = "{server.files}"\ncache_size = "64M"\n')
    env = person(home, server, FLOW_USERNAME="alice", FLOW_PASSWORD="alice-pw")
    del env["FLOW_API_URL"], env["FLOW_FILES_URL"]  # the file is the only source
    shown = run("flowfs config", env, home).stdout
    assert re.search(rf'^cache_size = "64M" +# file {re.escape(str(config))}$', shown, re.M), shown

    daemons.append(mountpoint)
    mounted = run("flowfs mount --mkdir", env, home)
    assert mounted.returncode == 0, mounted.stderr
    assert is_mounted(mountpoint)

    assert ".flowfs" in sh("ls", "-a", str(mountpoint)).stdout.decode().split()
    first = json.loads(sh("cat", str(mountpoint / ".flowfs" / "stats")).stdout)
    assert first["api_url"] == server.api and first["mountpoint"] == str(mountpoint)
    assert first["user"] == "alice" and first["cache_size"] == 64 * 2**20
    assert first["credentials"] == "FLOW_USERNAME/FLOW_PASSWORD"
    bam = mountpoint / "projects" / "Liver RNA-seq" / "samples" / "liver_1" / "liver_1.bam"
    size = len(sh("cat", str(bam)).stdout)
    second = json.loads(sh("cat", str(mountpoint / ".flowfs" / "stats")).stdout)
    assert second["uptime"] > first["uptime"]  # rendered afresh, not cached
    assert second["api"]["bytes_fetched"] - first["api"]["bytes_fetched"] >= size
    assert second["api"]["requests"] > first["api"]["requests"]
    assert second["cache"]["misses"] > first["cache"]["misses"]
    assert second["inodes"] > first["inodes"] and second["downloads"]["active"] == 0

    status = run(f"flowfs status --json {mountpoint}", env, home)
    assert status.returncode == 0, status.stderr
    (entry,) = json.loads(status.stdout)
    assert entry["ok"] and entry["stats"]["pid"] == first["pid"]
    assert entry["stats"]["api"]["bytes_fetched"] >= second["api"]["bytes_fetched"]

    unmounted = run("flowfs umount", env, home)
    assert unmounted.returncode == 0 and "unmounted" in unmounted.stdout, unmounted.stderr
    assert not is_mounted(mountpoint)
    after = run(f"flowfs status {mountpoint}", env, home)
    assert after.returncode == 1 and "not a flowfs mount" in after.stdout


# -- systemd ----------------------------------------------------------------------------------

def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / "flowfs.service")
    return parser


def test_the_unit_is_a_notify_service_that_mounts_and_unmounts() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert "flowfs mount --foreground" in service["ExecStart"]
    assert service["ExecStop"].endswith("flowfs umount")
    assert unit()["Install"]["WantedBy"] == "default.target"


def systemd_analyze() -> str | None:
    found = shutil.which("systemd-analyze")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "systemd"], capture_output=True,
                   timeout=300, check=False, env={**os.environ,
                                                  "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("systemd-analyze")


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    tool = systemd_analyze()
    if tool is None:
        pytest.skip("systemd-analyze is not installed and cannot be")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}  # a user manager needs one
    proc = subprocess.run([tool, "verify", "--user", str(ROOT / "systemd" / "flowfs.service")],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    if proc.returncode != 0 and "Failed to initialize manager" in proc.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()}")
    assert proc.returncode == 0 and "flowfs.service" not in proc.stdout + proc.stderr, (
        proc.stdout + proc.stderr)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """The service manager's end of NOTIFY_SOCKET (a short path: AF_UNIX's limit)."""
    folder = tempfile.mkdtemp(prefix="ffs-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(0.2)
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder)


def receive(sock: socket.socket, want: str, timeout: float = 60) -> list[str]:
    """Lines of datagrams until one is ``want`` (``""``: all that are already there)."""
    end = time.monotonic() + timeout
    lines: list[str] = []
    while True:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            if not want:
                return lines
            if time.monotonic() > end:
                raise AssertionError(f"no {want} within {timeout:.0f} s; got {lines}") from None
            continue
        lines += message.splitlines()
        if want and want in message.splitlines():
            return lines


def test_the_daemon_notifies_ready_only_once_the_mount_answers(
        server: Server, tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    mountpoint = tmp_path / "svc"
    mountpoint.mkdir()
    env = person(tmp_path, server, FLOW_USERNAME="alice", FLOW_PASSWORD="alice-pw",
                 NOTIFY_SOCKET=address)
    proc = subprocess.Popen([str(VENV_BIN / "flowfs"), "mount", "--foreground", str(mountpoint)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        lines = receive(sock, "READY=1")
        # The moment READY=1 arrives the mount must already be there and answering.
        assert is_mounted(mountpoint)
        assert "README.txt" in sh("ls", str(mountpoint)).stdout.decode().split()
        assert not any(line.startswith("STOPPING") for line in lines)
        proc.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1")
        assert proc.wait(timeout=DEADLINE) == 0
        wait_for(lambda: not is_mounted(mountpoint), what="the unmount")
    finally:
        stop(proc)
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True,
                       timeout=DEADLINE, check=False)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_failed_start_never_says_ready(server: Server, tmp_path: Path,
                                         notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    mountpoint = tmp_path / "svc"
    mountpoint.mkdir()
    env = person(tmp_path, server, FLOW_USERNAME="alice", FLOW_PASSWORD="nope",
                 NOTIFY_SOCKET=address)
    proc = subprocess.run([str(VENV_BIN / "flowfs"), "mount", "--foreground", str(mountpoint)],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=90, check=False)
    assert proc.returncode == 1 and "flowfs login" in proc.stderr
    lines = receive(sock, "", timeout=0)  # what was sent before the daemon exited
    assert "READY=1" not in lines
    assert any(line.startswith("STATUS=failed: ") for line in lines), lines
