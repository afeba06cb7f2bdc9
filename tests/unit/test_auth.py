"""Credentials: where they come from, how they are stored, that they do not leak."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowfs import sessions
from flowfs.auth import discover
from flowfs.errors import ConfigError
from flowfs.sessions import Session

API = "http://flow.test/api"


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def store(api: str = API, user: str = "alice", token: str = "t", refresh: str = "r") -> None:
    sessions.remember(Session(api, user, token, refresh))


def test_sources_in_the_documented_order(tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("file-token\n")
    token_file.chmod(0o600)
    store()
    env = {"FLOW_API_TOKEN": "env-token", "FLOW_TOKEN_FILE": str(token_file),
           "FLOW_USERNAME": "u", "FLOW_PASSWORD": "p"}
    creds = discover(API, env)
    assert creds is not None and creds.token == "env-token"
    del env["FLOW_API_TOKEN"]
    creds = discover(API, env)
    assert creds is not None and creds.token == "file-token"
    del env["FLOW_TOKEN_FILE"]
    creds = discover(API, env)
    assert creds is not None and creds.kind == "session" and creds.refresh_token == "r"
    sessions.forget(API)
    creds = discover(API, env)
    assert creds is not None and creds.kind == "password"
    assert discover(API, {}) is None


def test_a_session_for_another_server_is_not_used() -> None:
    store("http://other/api")
    assert discover(API, {}) is None


def test_each_server_keeps_its_session_and_the_last_login_is_the_default() -> None:
    store(API, "alice", refresh="r-first")
    store("http://other/api", "bob", refresh="r-other")
    first, other = discover(API, {}), discover("http://other/api", {})
    assert first is not None and first.refresh_token == "r-first"
    assert other is not None and other.refresh_token == "r-other"
    assert sessions.default_url() == "http://other/api"
    store(API, "alice", refresh="r-again")  # logging in again replaces only that server's
    assert sessions.default_url() == API
    assert list(sessions.load().sessions) == ["http://other/api", API]
    assert sessions.forget(API) is not None
    assert sessions.default_url() == "http://other/api"  # the one left becomes the default
    assert sessions.forget(API) is None


def test_a_single_legacy_session_is_migrated_without_loss(config_home: Path) -> None:
    legacy = config_home / "flowfs" / "session.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"api_url": API + "/", "username": "alice", "token": "t",
                                  "refresh_token": "r-legacy"}))
    legacy.chmod(0o600)
    creds = discover(API, {})
    assert creds is not None and creds.refresh_token == "r-legacy"
    assert creds.source == str(legacy) and sessions.default_url() == API
    store("http://other/api", "bob")  # the next login writes both into sessions.json
    assert not legacy.exists()
    kept = discover(API, {})
    assert kept is not None and kept.refresh_token == "r-legacy"
    assert kept.source == str(sessions.store_path())


def test_the_session_file_is_private(config_home: Path) -> None:
    store(API, "alice", "token", "refresh")
    path = sessions.store_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "password" not in path.read_text()


def test_writes_are_private_whatever_already_exists(config_home: Path) -> None:
    """Stale temporary files of mode 0644, a 0755 directory, a umask of 0: still 0600."""
    folder = config_home / "flowfs"
    folder.mkdir(parents=True, mode=0o755)
    for name in ("session.tmp", "sessions.tmp", "sessions.json.tmp", ".sessions.json.tmp"):
        (folder / name).write_text("{}")
        (folder / name).chmod(0o644)
    old = os.umask(0)
    try:
        store()
    finally:
        os.umask(old)
    assert stat.S_IMODE(sessions.store_path().stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert discover(API, {}) is not None


def refused(path: Path, mode: int, read: Any) -> str | None:
    path.chmod(mode)
    try:
        read()
    except ConfigError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("mode", range(0o400, 0o1000, 0o001))
def test_one_rule_for_every_secret_file(mode: int, tmp_path: Path) -> None:
    """FLOW_TOKEN_FILE and the stored sessions: refused exactly when others may use them,
    with the chmod that fixes it."""
    token_file = tmp_path / "token"
    token_file.write_text("a-token\n")
    store()
    for path, read in [
        (token_file, lambda: discover(API, {"FLOW_TOKEN_FILE": str(token_file)})),
        (sessions.store_path(), lambda: discover(API, {})),
    ]:
        message = refused(path, mode, read)
        if mode & 0o077:
            assert message is not None and f"run 'chmod 600 {path}'" in message, oct(mode)
        else:
            assert message is None, message
        path.chmod(0o600)


def test_credentials_never_print_their_secrets() -> None:
    creds = discover(API, {"FLOW_USERNAME": "u", "FLOW_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)


def test_an_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("")
    (tmp_path / "tok").chmod(0o600)
    with pytest.raises(ConfigError, match="empty"):
        discover(API, {"FLOW_TOKEN_FILE": str(tmp_path / "tok")})


def test_secrets_leave_the_process_environment() -> None:
    code = ("from flowfs.auth import scrub_environment; import os; scrub_environment(); "
            "print(open('/proc/self/environ','rb').read().count(b'hunter2'), "
            "'FLOW_PASSWORD' in os.environ)")
    env = {**os.environ, "FLOW_PASSWORD": "hunter2", "FLOW_API_TOKEN": "hunter2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == ["0", "False"]
