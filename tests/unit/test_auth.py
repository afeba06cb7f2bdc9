"""Credentials: where they come from, how they are stored, that they do not leak."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flowfs.auth import discover, load_session, save_session
from flowfs.errors import ConfigError

API = "http://flow.test/api"


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def test_sources_in_the_documented_order(tmp_path: Path, config_home: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("file-token\n")
    save_session(config_home / "flowfs" / "session.json", API, "alice", "t", "r")
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
    (config_home / "flowfs" / "session.json").unlink()
    creds = discover(API, env)
    assert creds is not None and creds.kind == "password"
    assert discover(API, {}) is None


def test_a_session_for_another_server_is_not_used(config_home: Path) -> None:
    save_session(config_home / "flowfs" / "session.json", "http://other/api", "a", "t", "r")
    assert discover(API, {}) is None


def test_the_session_file_is_private(config_home: Path) -> None:
    path = config_home / "flowfs" / "session.json"
    save_session(path, API, "alice", "token", "refresh")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "password" not in path.read_text()


def test_a_session_file_others_can_read_is_refused(config_home: Path) -> None:
    path = config_home / "flowfs" / "session.json"
    save_session(path, API, "alice", "token", "refresh")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_session(path, API)


def test_credentials_never_print_their_secrets() -> None:
    creds = discover(API, {"FLOW_USERNAME": "u", "FLOW_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)


def test_an_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("")
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
