"""The install routes of docs/install.md, from a clean copy of the checkout into a temporary
directory, as a user without root would take them (no .ci/setup, no apt-get): a venv,
``pip install --user`` and pipx. Each installed ``flowfs`` answers ``--help``, ``--version``
and ``config``; the venv's mounts the reference server for real.

Marked ``install``: it builds and installs the package three times, a minute or more (pyfuse3
compiles where pip has no wheel of it), so the default run leaves it out and ``.ci/run``
runs it on its own: ``.venv/bin/python -m pytest -m install``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import Server, login_token, sh

from flowfs import __version__

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 600.0  # pyfuse3 compiles from source where no wheel is cached


def run(*cmd: str | Path, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                          cwd=cwd, stdin=subprocess.DEVNULL, timeout=INSTALL_TIMEOUT,
                          check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of this checkout as they are now: no .venv, no build left-overs."""
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("needs a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.split(b"\0")
    copy = tmp_path_factory.mktemp("checkout") / "flowfs"
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = copy / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return copy


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment with a fresh home: nothing of the project's .venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOW_", "FLOWFS_", "XDG_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    env["HOME"] = str(home)
    env.update(extra)
    return env


def base_python() -> str:
    """The interpreter this test's venv was made from (a user's python3)."""
    return str(getattr(sys, "_base_executable", sys.executable))


def check_installed(flowfs: Path, home: Path) -> None:
    env = user_env(home)
    assert "mount" in run(flowfs, "--help", env=env).stdout
    assert run(flowfs, "--version", env=env).stdout.strip() == f"flowfs {__version__}"
    config = run(flowfs, "config", env=env).stdout
    assert f"# config file: {home}/.config/flowfs/config.toml" in config
    assert 'api_url = "https://app.flow.bio/api"' in config


def install_venv(checkout: Path, where: Path) -> Path:
    run(base_python(), "-m", "venv", where / "venv")
    run(where / "venv/bin/pip", "install", checkout, env=user_env(where))
    return where / "venv/bin/flowfs"


def install_user(checkout: Path, where: Path) -> Path:
    env = user_env(where)  # the user base is ~/.local: this fresh home's
    if subprocess.run([base_python(), "-m", "pip", "--version"], capture_output=True,
                      env=env, check=False).returncode != 0:
        pytest.skip("this Python has no pip for a --user install")
    run(base_python(), "-m", "pip", "install", "--user", checkout, env=env)
    return where / ".local/bin/flowfs"


def install_pipx(checkout: Path, where: Path) -> Path:
    run(base_python(), "-m", "venv", where / "tools")
    run(where / "tools/bin/pip", "install", "pipx", env=user_env(where))
    env = user_env(where, PIPX_HOME=str(where / "pipx"), PIPX_BIN_DIR=str(where / "bin"))
    run(where / "tools/bin/pipx", "install", checkout, env=env)
    return where / "bin/flowfs"


@pytest.fixture(scope="module")
def venv_flowfs(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_venv(checkout, tmp_path_factory.mktemp("venv-install"))


def test_a_venv_install_gives_a_working_flowfs(venv_flowfs: Path, tmp_path: Path) -> None:
    check_installed(venv_flowfs, tmp_path)


@pytest.mark.parametrize("install", [install_user, install_pipx], ids=["pip-user", "pipx"])
def test_a_user_install_gives_a_working_flowfs(checkout: Path, tmp_path: Path,
                                               install: object) -> None:
    flowfs = install(checkout, tmp_path)  # type: ignore[operator]
    check_installed(flowfs, tmp_path)


def test_a_venv_install_mounts_the_reference_server(
        venv_flowfs: Path, tmp_path: Path, server: Server, daemons: list[Path]) -> None:
    flowfs = venv_flowfs
    token = tmp_path / "token"
    token.write_text(login_token(server, "alice", "alice-pw"))
    token.chmod(0o600)
    mountpoint = tmp_path / "flow"
    env = user_env(tmp_path, FLOW_TOKEN_FILE=str(token))
    daemons.append(mountpoint)
    run(flowfs, "mount", "--mkdir", mountpoint, "--api-url", server.api, "--files-url",
        server.files, env=env)
    try:
        assert "liver_1" in sh("ls", str(mountpoint / "samples")).stdout.decode().split()
    finally:
        run(flowfs, "umount", mountpoint, env=env)
