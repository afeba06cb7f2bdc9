"""No secret reaches a mount's log, whatever it is asked to log.

A real mount logs in with a password (FLOW_USERNAME/FLOW_PASSWORD), the server's access
tokens last one second so the mount refreshes them with its refresh cookie, and the mount
lists, reads and makes a bulk job through `.downloads/`; then its log, on stderr and in its
log file, must hold no password, no token (Flow's tokens are JWTs: ``eyJ...``) and no
cookie value, while showing the operations it was asked to show.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import MountFactory, Processes, Server, md5s, sh, user_env, wait_for

PASSWORD = "alice-pw"  # the demo catalog's
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+")
COOKIE_VALUE = re.compile(r"flow_refresh_token=(?!<redacted>)[^\s;'\"]+")
OPERATION = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG flowfs\.ops: lookup\(",
                       re.MULTILINE)


@pytest.fixture(scope="module")
def short_tokens(demo: Path, module_processes: Processes) -> Server:
    """Access tokens good for one second: every few requests need a refresh."""
    return module_processes.server(demo, "--token-ttl", "1")


def refreshes(server: Server) -> int:
    return sum(1 for r in server.requests() if r["path"] == "/api/token")


def busy_mount(server: Server, mount_path: Path, job: str) -> None:
    """Listings and reads until the mount has refreshed its token, then a bulk job."""
    before = refreshes(server)

    def work() -> bool:
        sh("ls", str(mount_path / "samples"))  # --dir-ttl 0: a request every time
        return refreshes(server) > before

    wait_for(work, what="a token refresh by the mount")
    read = md5s([str(mount_path / "data" / "random.bin"), str(mount_path / "data" / "notes.txt")])
    assert not any(v.startswith("error") for v in read.values()), read
    sh("bash", "-c", 'echo samples/pilot_a > "$1"', "_",
       str(mount_path / ".downloads" / f"{job}.manifest"))
    wait_for(lambda: f"{job}.zip" in sh("ls", str(mount_path / ".downloads")).stdout.decode(),
             what="the bulk job's ZIP")
    zipped = md5s([str(mount_path / ".downloads" / f"{job}.zip")])
    assert not any(v.startswith("error") for v in zipped.values()), zipped


def assert_no_secret(text: str, where: str) -> None:
    assert PASSWORD not in text, f"the password is in {where}"
    assert not JWT.search(text), f"a token is in {where}: {JWT.search(text)}"
    assert not COOKIE_VALUE.search(text), f"a cookie value is in {where}"
    assert not re.search(r"(?i)bearer (?!<redacted>)\S", text), f"a bearer token is in {where}"


@pytest.mark.parametrize("flags", [
    ("--debug",),
    ("--debug", "--log-file", "LOGFILE", "--log-max-size", "64K"),
    ("-v", "--log-level", "debug,httpx=debug,httpcore=debug,h11=debug,fuse=debug"),
], ids=["debug-to-stderr", "debug-to-a-file", "http-libraries-asked-for"])
def test_a_busy_mount_logs_no_secret(flags: tuple[str, ...], short_tokens: Server,
                                     own_mounts: MountFactory, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    log_file = tmp_path / "logs" / "mount.log"
    args = [str(log_file) if flag == "LOGFILE" else flag for flag in flags]
    m = own_mounts(short_tokens, user_env("alice", PASSWORD), "--dir-ttl", "0", *args)
    busy_mount(short_tokens, m.path, job=request.node.callspec.id)
    m.close()
    stderr = m.log.read_text(errors="replace")
    assert_no_secret(stderr, "stderr")
    if "LOGFILE" in flags:
        logs = sorted(log_file.parent.iterdir())
        text = "".join(p.read_text(errors="replace") for p in logs)
        assert_no_secret(text, "the log file")
        assert OPERATION.search(text), "--debug shows our operations, with timestamps"
        assert not OPERATION.search(stderr), "with --log-file, the log is not on stderr"
        assert all(p.stat().st_mode & 0o077 == 0 for p in logs)
        return
    assert OPERATION.search(stderr), "--debug shows our operations, with timestamps"
    if "--debug" in flags:  # not asked for: no library internals, no libfuse dump
        assert "httpcore" not in stderr and "HTTP Request" not in stderr
        assert "unique:" not in stderr and "opcode:" not in stderr
    else:  # asked for by name: they log, redacted
        assert "httpcore.http11" in stderr and "set-cookie" in stderr
        assert "unique:" in stderr or "opcode:" in stderr, "fuse=debug: libfuse's own dump"
