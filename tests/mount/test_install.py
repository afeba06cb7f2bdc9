"""docs/install.md's commands, run as written, in a fresh home, from a clean copy of the
checkout (its tracked files: no .venv, no .ci/setup, no apt-get): the prerequisites check,
then a venv, pipx and ``pip install --user``. Each gives a ``flowfs`` in ``~/.local/bin``
that answers ``--help``, ``--version`` and ``config``; the venv's mounts the reference
server for real.

Marked ``install``: it builds and installs the package three times, minutes on a busy
machine (pyfuse3 compiles where pip has no wheel of it); alone it runs with
``.venv/bin/python -m pytest -m install``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import Server, login_token, sh

from flowfs import __version__

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 600.0


def doc_block(marker: str) -> str:
    """The ```sh block of docs/install.md that contains ``marker``."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "docs/install.md").read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return str(block)


def run_block(script: str, home: Path, cwd: Path | None = None,
              extra_path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a documented block with bash -e, as a user whose home is ``home``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOW_", "FLOWFS_", "XDG_", "VIRTUAL_ENV", "PYTHONUSERBASE"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))]
    env.update(HOME=str(home), PATH=os.pathsep.join([*map(str, extra_path), *path]))
    return subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True,
                          env=env, cwd=cwd or home, stdin=subprocess.DEVNULL,
                          timeout=INSTALL_TIMEOUT, check=False)


def shell(script: str, home: Path, cwd: Path | None = None,
          extra_path: tuple[Path, ...] = ()) -> str:
    """:func:`run_block`, which must succeed; its output."""
    proc = run_block(script, home, cwd, extra_path)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of this checkout as they are now."""
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


def check_installed(home: Path) -> None:
    """The doc's closing block, and the flowfs it finds is the one just installed."""
    local_bin = home / ".local/bin"
    assert (local_bin / "flowfs").exists()
    out = shell(doc_block("flowfs config"), home, extra_path=(local_bin,))
    assert "usage: flowfs" in out and "mount" in out
    assert f"# config file: {home}/.config/flowfs/config.toml" in out
    version = shell("flowfs --version", home, extra_path=(local_bin,))
    assert version.strip() == f"flowfs {__version__}"


def test_the_prerequisites_check_runs_as_documented(tmp_path: Path) -> None:
    assert "with headers" in shell(doc_block("Python.h"), tmp_path)


@pytest.fixture(scope="module")
def venv_home(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv-home")
    shell(doc_block("python3 -m venv"), home, cwd=checkout)
    return home


def test_a_venv_install_gives_a_working_flowfs(venv_home: Path) -> None:
    check_installed(venv_home)


def externally_managed(home: Path) -> bool:
    """Whether the ``python3`` a user finds refuses ``pip install --user`` (PEP 668: Debian
    12's, Ubuntu 23.04's and later system Python)."""
    return shell("python3 -c 'import os, sysconfig; print(os.path.exists(os.path.join("
                 "sysconfig.get_path(\"stdlib\"), \"EXTERNALLY-MANAGED\")))'",
                 home).strip() == "True"


def test_a_pip_user_install_gives_a_working_flowfs_or_the_refusal_the_doc_names(
        checkout: Path, tmp_path: Path) -> None:
    """Where the system Python refuses it, the doc says so and what to use instead: then
    the refusal must be the one it names (a regular user on Debian 12 met it)."""
    block = doc_block("pip install --user")
    if externally_managed(tmp_path):
        proc = run_block(block, tmp_path, cwd=checkout)
        assert proc.returncode != 0 and "externally-managed-environment" in proc.stderr
        assert "externally-managed-environment" in (ROOT / "docs/install.md").read_text()
        return
    shell(block, tmp_path, cwd=checkout)
    check_installed(tmp_path)


def test_a_pipx_install_gives_a_working_flowfs(checkout: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"  # pipx itself, as a user would have it
    shell(f"python3 -m venv {tools} && {tools}/bin/pip install pipx", tmp_path)
    shell(doc_block("pipx install"), tmp_path, cwd=checkout, extra_path=(tools / "bin",))
    check_installed(tmp_path)


def test_a_venv_install_mounts_the_reference_server(
        venv_home: Path, tmp_path: Path, server: Server, daemons: list[Path]) -> None:
    token = tmp_path / "token"
    token.write_text(login_token(server, "alice", "alice-pw"))
    token.chmod(0o600)
    mountpoint = tmp_path / "flow"
    daemons.append(mountpoint)
    local_bin = (venv_home / ".local/bin",)
    shell(f"FLOW_TOKEN_FILE={token} flowfs mount --mkdir {mountpoint} --api-url {server.api}"
          f" --files-url {server.files}", venv_home, extra_path=local_bin)
    try:
        assert "liver_1" in sh("ls", str(mountpoint / "samples")).stdout.decode().split()
    finally:
        shell(f"flowfs umount {mountpoint}", venv_home, extra_path=local_bin)
