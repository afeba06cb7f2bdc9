"""Every `flowfs` command the documentation shows runs as shown, or says why it cannot here.

The commands are read from the Markdown code blocks of README.md and docs/*.md
(doccommands.py). Each one is either run by a test below (RUN names the test)
or listed in CANNOT_RUN with the reason; a command documented tomorrow that is
in neither fails `test_every_documented_command_is_run_or_excused`. Whatever
their table, the flags of every documented command must exist, and every
subcommand must answer `--help`.

The runs use the reference server on a free loopback port, with its demo data
(the data the examples are written against), and a HOME of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from doccommands import REPO, block_with, blocks, documented

from flowfs.cli import build_parser
from flowfs.config import derive_files_url
from flowfs.processes import start_server, stop

BIN = Path(sys.executable).parent
DEADLINE = 60.0

# documented command -> the test that runs it
RUN = {
    ".venv/bin/flowfs demo": "test_the_demo_runs_as_documented",
    "flowfs login": "test_the_quickstart_runs_as_documented",
    "flowfs whoami": "test_the_quickstart_runs_as_documented",
    "flowfs mount ~/flow": "test_the_quickstart_runs_as_documented",
    "flowfs status": "test_the_quickstart_runs_as_documented",
    "flowfs refresh ~/flow/projects": "test_the_quickstart_runs_as_documented",
    "flowfs umount ~/flow": "test_the_quickstart_runs_as_documented",
    "flowfs config": "test_the_configuration_examples_print_what_is_documented",
    "flowfs mount": "test_the_configuration_examples_print_what_is_documented",
    "FLOWFS_CACHE_SIZE=lots flowfs config":
        "test_the_configuration_examples_print_what_is_documented",
    "flowfs downloads create liver projects/Liver RNA-seq/samples":
        "test_the_quickstart_runs_as_documented",
    "flowfs downloads wait liver": "test_the_quickstart_runs_as_documented",
    "flowfs serve --catalog demo/catalog.json --port 8000":
        "test_the_reference_server_starts_as_documented",
}

# documented command -> why no test runs it (its flags are still checked)
CANNOT_RUN = {
    "flowfs downloads list": "a synopsis; tests/mount/test_downloads.py runs it",
    "flowfs downloads create NAME PATH...": "a synopsis with placeholders",
    "flowfs downloads wait NAME": "a synopsis with placeholders",
    "flowfs serve --catalog cat.json --export-dir /srv/flow-export --files-url "
    "http://127.0.0.1:8080": "writes to /srv and needs nginx; --export-dir is tested in "
                             "tests/server/test_server_cli.py",
    "flowfs mount ~/flow --api-url http://127.0.0.1:8000/api --files-url http://127.0.0.1:8080":
        "needs the nginx of the same recipe; bench/ mounts that way",
    "flowfs mount [MOUNTPOINT] [--api-url URL] [--files-url URL] [--foreground] [--mkdir]":
        "a synopsis",
    "flowfs umount [MOUNTPOINT]": "a synopsis",
    "flowfs login --api-url https://app.flow.bio/api --username alice":
        "example servers; tests/mount/test_daily.py::"
        "test_login_remembers_each_server_and_the_last_is_the_default runs the same steps "
        "against two reference servers",
    "flowfs login --api-url https://acme.flow.bio/api --username alice": "as above",
    "flowfs mount ~/acme --api-url https://acme.flow.bio/api": "as above",
    "flowfs cache status": "tests/mount/test_disk_cache.py runs it against a filled cache",
    "flowfs --help": "test_every_subcommand_answers_help runs it, and every subcommand's",
    "flowfs mount MNT --foreground --api-url https://127.0.0.1:<nginx>/api --files-url "
    "https://127.0.0.1:<nginx> --cache-size 256M": "a benchmark recipe with placeholders; "
                                                   "bench/run runs it",
    "flowfs SOURCE MOUNTPOINT -o NAME=VALUE,...": "a synopsis; tests/mount/test_conventions.py "
                                                 "mounts that way through mount -T",
    "flowfs mount --cache-dir /scratch/flowfs-cache --disk-cache-mode group":
        "an administrator's shared directory; tests/mount/test_disk_cache.py uses group mode",
    "flowfs rsync-filter": "tests/mount/test_conventions.py runs it and rsync with it",
    "flowfs rsync-filter > ~/.config/flowfs/rsync-filter": "as above",
}

needs_fuse = pytest.mark.skipif(not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")),
                                reason="needs /dev/fuse and fusermount3")


# -- the tables -----------------------------------------------------------------------------

def test_every_documented_command_is_run_or_excused() -> None:
    shown = documented()
    unknown = {cmd: where for cmd, where in shown.items() if cmd not in RUN | CANNOT_RUN}
    assert not unknown, ("documented flowfs commands that no test runs: add a test to RUN, "
                         f"or a reason to CANNOT_RUN: {unknown}")
    stale = sorted((set(RUN) | set(CANNOT_RUN)) - set(shown))
    assert not stale, f"no longer documented: {stale}"
    assert not set(RUN) & set(CANNOT_RUN)
    for test in set(RUN.values()):
        assert callable(globals().get(test)), test


Subcommand = tuple[tuple[str, ...], argparse.ArgumentParser]


def _subcommands(parser: argparse.ArgumentParser,
                 path: tuple[str, ...] = ()) -> Iterator[Subcommand]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))


def _parser_of(words: list[str]) -> tuple[tuple[str, ...], argparse.ArgumentParser]:
    """The deepest subcommand named by ``words`` (after `flowfs`)."""
    path: tuple[str, ...] = ()
    parsers = dict(_subcommands(build_parser()))
    for word in words:
        if (*path, word) in parsers:
            path = (*path, word)
    return path, parsers[path]


@pytest.mark.parametrize("command", sorted(documented()))
def test_the_flags_of_every_documented_command_exist(command: str) -> None:
    words = command.split()
    words = words[next(i for i, w in enumerate(words) if w.endswith("flowfs")) + 1:]
    path, parser = _parser_of(words)
    if words[2:3] == ["-o"]:
        return  # mount(8)'s form, `flowfs SOURCE MOUNTPOINT -o ...`: tests/unit/test_fstab.py
    assert path or words[:1] in (["--help"], ["--version"]), \
        f"{command!r} names no flowfs subcommand"
    known = {flag for action in parser._actions for flag in action.option_strings}
    flags = {w.strip("[]|").split("=")[0] for w in words if w.strip("[]|").startswith("-")}
    assert flags <= known, f"{command!r}: unknown to 'flowfs {' '.join(path)}': {flags - known}"


@pytest.mark.parametrize("path", [p for p, _ in _subcommands(build_parser())],
                         ids=lambda p: " ".join(p) or "flowfs")
def test_every_subcommand_answers_help(path: tuple[str, ...]) -> None:
    result = subprocess.run([str(BIN / "flowfs"), *path, "--help"], capture_output=True,
                            text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {' '.join(('flowfs', *path))}")


# -- configuration.md ---------------------------------------------------------------------------

def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home" / "alice"
    (home / ".config" / "flowfs").mkdir(parents=True)
    return home


def _env(home: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("FLOW_", "FLOWFS_", "XDG_"))}
    return {**keep, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{keep.get('PATH', '')}",
            **extra}


def _console(file: str, command: str) -> list[str]:
    """The output documented under ``$ command`` in a console block of ``file``."""
    lines = next(b.lines for b in blocks() if b.file == file and f"$ {command}" in b.lines)
    start = lines.index(f"$ {command}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("$ ")), len(lines))
    return list(lines[start:end])


def _aligned(lines: list[str]) -> list[str]:
    return [re.sub(r"\s+#", "  #", line) for line in lines]  # the width follows the paths


def _run(command: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=home,
                          env=_env(home, **env), timeout=DEADLINE, stdin=subprocess.DEVNULL)


def test_the_configuration_examples_print_what_is_documented(tmp_path: Path) -> None:
    home = _home(tmp_path)
    config = home / ".config" / "flowfs" / "config.toml"

    def shown(text: str) -> list[str]:
        # The documented user is alice, uid and gid 1000; the test may run as anyone.
        text = re.sub(rf"^(uid|gid) = {os.getuid()}\b", r"\1 = 1000", text, flags=re.M)
        return _aligned(text.replace(str(home), "/home/alice").splitlines())

    config.write_text('api_url = "https://acme.flow.bio/api"\n')
    result = _run("flowfs config", home, FLOWFS_CACHE_SIZE="2G")
    assert result.returncode == 0, result.stderr
    assert shown(result.stdout) == _aligned(_console("docs/configuration.md", "flowfs config"))

    config.write_text('cache_sise = "2G"\n')
    result = _run("flowfs mount", home)
    assert result.returncode == 1
    assert shown(result.stderr) == _console("docs/configuration.md", "flowfs mount")

    config.unlink()
    result = _run("FLOWFS_CACHE_SIZE=lots flowfs config", home)
    assert result.returncode == 1
    assert result.stderr.splitlines() == _console("docs/configuration.md",
                                                  "FLOWFS_CACHE_SIZE=lots flowfs config")


def test_the_example_config_file_is_accepted(tmp_path: Path) -> None:
    home = _home(tmp_path)
    text = (REPO / "docs" / "configuration.md").read_text()
    example = re.search(r"```toml\n(# ~/.config/flowfs/config.toml\n.*?)```", text, re.S)
    assert example
    (home / ".config" / "flowfs" / "config.toml").write_text(example.group(1))
    result = _run("flowfs config", home)
    assert result.returncode == 0, result.stderr
    assert 'dir_ttl = 300' in result.stdout and "# file " in result.stdout


def test_the_derived_files_urls_are_what_the_code_derives() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    pairs = re.findall(r"`(https?://[^`]+)` → `(https?://[^`]+)`", text)
    assert len(pairs) >= 3
    for api_url, files_url in pairs:
        assert derive_files_url(api_url) == files_url


# -- server.md ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_until(proc: subprocess.Popen[bytes], marker: str, deadline: float) -> str:
    """stdout of ``proc`` (unbuffered) up to ``marker``'s line; fail past ``deadline`` s."""
    assert proc.stdout is not None
    seen = b""
    end = time.monotonic() + deadline
    while marker.encode() not in seen or not seen.endswith(b"\n"):
        left = end - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {marker!r} (rc {proc.poll()}): {seen!r}"
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            seen += os.read(proc.stdout.fileno(), 65536)
    return seen.decode()


def test_the_reference_server_starts_as_documented(tmp_path: Path) -> None:
    home = _home(tmp_path)
    block = block_with("docs/server.md", "flowfs serve --catalog demo/catalog.json --port 8000")
    generate = next(x[2:] for x in block.lines if "flowfs.server.demodata" in x)
    made = _run(generate, home)  # `python` is this venv's: its bin/ comes first in PATH
    assert made.returncode == 0, made.stderr
    documented_out = _console("docs/server.md", generate)
    assert made.stdout.replace(str(home), "/home/alice").splitlines() == documented_out[-1:]
    assert made.stderr.replace(str(home), "/home/alice").splitlines() == documented_out[:-1]
    port = _free_port()  # the documented 8000 may be taken on a shared machine
    command = "flowfs serve --catalog demo/catalog.json --port 8000".replace("8000", str(port))
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=home, env=_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        out = _read_until(proc, "Files:", DEADLINE)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
    expected = _console("docs/server.md", "flowfs serve --catalog demo/catalog.json --port 8000")
    assert out.splitlines() == [line.replace("8000", str(port)) for line in expected]
    assert proc.returncode == 0, err


# -- sessions with a mount ------------------------------------------------------------------

@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[str]:
    """The reference server with the demo data; its API URL."""
    from flowfs.server.demodata import generate

    proc, info = start_server(generate(tmp_path / "demo"), tmp_path / "server")
    try:
        yield info["api"]
    finally:
        stop(proc)


def _unmount_all_below(root: Path) -> None:
    """Lazily unmount every mount under ``root`` (whatever a failed test left)."""
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    for point in points:
        if point.startswith(str(root)):
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True,
                           timeout=DEADLINE, check=False)


def _lines_after(block_lines: tuple[str, ...], first: str) -> list[str]:
    start = next(i for i, line in enumerate(block_lines) if first in line)
    return [line for line in block_lines[start:] if line.strip()]


@needs_fuse
@pytest.mark.mount
@pytest.mark.timeout(300)
def test_the_quickstart_runs_as_documented(tmp_path: Path, demo_server: str) -> None:
    """README's "Using it with Flow", index.md's quickstart and the troubleshooting and
    downloads blocks, each line run as written, one after the other, in a shell whose HOME
    is new and whose FLOW_API_URL is the reference server with the demo data."""
    home = _home(tmp_path)
    (home / "Desktop").mkdir()
    script = [
        *_lines_after(block_with("README.md", "flowfs login").lines, "flowfs login"),
        *_lines_after(block_with("docs/index.md", "flowfs login").lines, "flowfs login"),
        *_lines_after(block_with("docs/troubleshooting.md", "flowfs whoami").lines, "flowfs"),
        "mkdir -p ~/flow && flowfs mount ~/flow",
        *_lines_after(block_with("docs/downloads.md", "flowfs downloads wait liver").lines,
                      "cd ~/flow"),
        "cd ~",
        *_lines_after(block_with("docs/troubleshooting.md", "flowfs mount ~/flow").lines,
                      "flowfs umount"),
        "flowfs umount ~/flow",
    ]
    cwd = home
    try:
        for line in script:
            stdin = "alice\nalice-pw\n" if line.startswith("flowfs login") else ""
            result = subprocess.run(["bash", "-c", line], cwd=cwd, text=True, input=stdin,
                                    env=_env(home, FLOW_API_URL=demo_server),
                                    capture_output=True, timeout=120)
            assert result.returncode == 0 or _another_mounts_problem(line, result, home), (
                f"{line!r} exited {result.returncode}: {result.stdout}{result.stderr}")
            if line.startswith("cd "):  # each line runs in a shell of its own
                cwd = Path(line[3:].replace("~", str(home), 1))
            if line.startswith("flowfs whoami"):
                assert "alice" in result.stdout
            if line.startswith("ls ~/flow/projects"):
                assert "Liver RNA-seq" in result.stdout
        assert (home / "Desktop" / "liver.zip").read_bytes()[:2] == b"PK"
    finally:
        _unmount_all_below(tmp_path)


def _another_mounts_problem(line: str, result: subprocess.CompletedProcess[str],
                            home: Path) -> bool:
    """`flowfs status` exits 1 when any mount on the machine is in trouble: ours must not be."""
    if not line.startswith("flowfs status"):
        return False
    ours = [x for x in result.stdout.splitlines() if x.startswith(f"{home}/flow:")]
    return len(ours) == 1 and "http" in ours[0]


@needs_fuse
@pytest.mark.mount
@pytest.mark.timeout(300)
def test_the_demo_runs_as_documented(tmp_path: Path) -> None:
    """`flowfs demo`: the tour (a bulk ZIP included), the server's URL, login lines that work
    when pasted into another shell, and Ctrl-C stops everything."""
    home = _home(tmp_path)
    env = _env(home, TMPDIR=str(tmp_path))
    # A session of its own: if the test fails, the demo and everything it started (its
    # server, its mount's daemon) are killed together, not left behind.
    proc = subprocess.Popen([str(BIN / "flowfs"), "demo"], env=env, cwd=home, bufsize=0,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out = _read_until(proc, "Press Ctrl-C", 240)
        assert re.search(r"The demo Flow server: http://127\.0\.0\.1:\d+/api", out)
        assert "$ unzip -l .downloads/liver_1.zip" in out
        assert "liver_1/liver_1.bam\n" in out and "8 files" in out
        login = out.split("(a session of its own; your real Flow login stays):\n")[1]
        lines = [x.strip() for x in login.splitlines() if x.startswith("  ")]
        other = subprocess.run(["bash", "-c", "\n".join(["set -e", *lines])], env=_env(home),
                               cwd=home, capture_output=True, text=True, timeout=DEADLINE)
        assert other.returncode == 0, other.stderr
        assert "alice" in other.stdout  # whoami, through the session it stored...
        assert re.search(r"credentials: .*/flowfs-demo-\w+/config/flowfs/sessions.json",
                         other.stdout)  # ...in the demo's own config dir
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=DEADLINE)[0].decode()
        assert proc.returncode == 0, rest
        assert "unmounted; server stopped." in rest
        assert not (home / ".config" / "flowfs" / "session.json").exists()  # untouched
    finally:
        _unmount_all_below(tmp_path)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the demo's server too, if it is still up
        proc.wait(timeout=DEADLINE)


# -- links ----------------------------------------------------------------------------------------

def _mounts_readmes() -> str:
    from flowfs.readme import DOWNLOADS_README, ROOT_README

    return ROOT_README + DOWNLOADS_README


@pytest.mark.parametrize("page", ["downloads.md", "reliability.md"])
def test_the_guides_are_linked_from_readme_index_and_the_mount(page: str) -> None:
    assert f"(docs/{page})" in (REPO / "README.md").read_text()
    assert f"]({page})" in (REPO / "docs" / "index.md").read_text()
    assert f"docs/{page}" in _mounts_readmes()


def test_every_page_the_readmes_name_exists() -> None:
    texts = (REPO / "README.md").read_text() + _mounts_readmes()
    named = set(re.findall(r"docs/[\w-]+\.md", texts))
    named |= {f"docs/{p}" for p in re.findall(r"\]\(([\w-]+\.md)",
                                                 (REPO / "docs" / "index.md").read_text())}
    assert named and all((REPO / page).is_file() for page in named), named
