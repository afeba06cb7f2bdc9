"""Completion scripts for bash, zsh and fish: accepted by each shell, and what they offer.

The words completed at the time of the TAB (mount points, job names) come from
`flowfs completion --words`; here a stand-in `flowfs` on PATH prints known ones, so
the scripts' wiring is checked apart from the machine's mounts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flowfs.cli import build_parser, main
from flowfs.completion import script, words

STAND_IN = """#!/bin/sh
[ "$1 $2" = "completion --words" ] || exit 1
case "$3" in
    mounts) echo /flowfs-test-mnt/alpha; echo /flowfs-test-mnt/beta ;;
    jobs) echo liver; echo lung ;;
esac
"""


def needs(shell: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(shell) is None, reason=f"needs {shell}")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "flowfs").write_text(STAND_IN)
    (bin_dir / "flowfs").chmod(0o755)
    (tmp_path / "work").mkdir()
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}


def run(shell: str, code: str, env: dict[str, str], cwd: Path) -> str:
    return subprocess.run([shell, "-c", code], capture_output=True, text=True, timeout=30,
                          check=True, env=env, cwd=cwd).stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_is_accepted_by_its_shell(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"needs {shell}")
    path = tmp_path / f"flowfs.{shell}"
    path.write_text(script(shell, build_parser()))
    subprocess.run([shell, "-n", str(path)], check=True, timeout=30)


CASES = [
    (["flowfs", "st"], {"status"}),
    (["flowfs", "refresh", "/flowfs-test-mnt/"],
     {"/flowfs-test-mnt/alpha", "/flowfs-test-mnt/beta"}),
    (["flowfs", "umount", "/flowfs-test-mnt/a"], {"/flowfs-test-mnt/alpha"}),
    (["flowfs", "downloads", "wait", "l"], {"liver", "lung"}),
    (["flowfs", "downloads", "wait", "--t"], {"--timeout"}),
    (["flowfs", "completion", "f"], {"fish"}),
]


def _bash_driver(words_: list[str]) -> str:
    return ("COMP_WORDS=(" + " ".join(f"'{w}'" for w in words_) + ")\n"
            f"COMP_CWORD={len(words_) - 1}\n_flowfs\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")


@needs("bash")
@pytest.mark.parametrize(("typed", "expected"), CASES)
def test_bash_offers(typed: list[str], expected: set[str], env: dict[str, str],
                     tmp_path: Path) -> None:
    out = run("bash", script("bash", build_parser()) + _bash_driver(typed), env,
              tmp_path / "work")
    assert set(out.split()) == expected


@needs("zsh")
@pytest.mark.parametrize(("typed", "expected"), CASES)
def test_zsh_offers(typed: list[str], expected: set[str], env: dict[str, str],
                    tmp_path: Path) -> None:
    # zsh's bashcompinit hands every candidate to compadd, which filters by what is typed
    # (only inside a real completion widget): the filter is applied here the same way.
    code = ("autoload -U +X compinit && compinit -u -d $HOME/.zcompdump\n"
            + script("zsh", build_parser()) + "\n"
            + "print -r -- ${_comps[flowfs]}\n" + _bash_driver(typed))
    out = run("zsh", code, env, tmp_path / "work").split("\n")
    assert out[0] == "_bash_complete -o filenames -F _flowfs"  # registered for flowfs
    offered = {w for w in out[1:] if w and w.startswith(typed[-1])}
    assert offered == expected


@needs("fish")
@pytest.mark.parametrize(("typed", "expected"), CASES)
def test_fish_offers(typed: list[str], expected: set[str], env: dict[str, str],
                     tmp_path: Path) -> None:
    path = tmp_path / "flowfs.fish"
    path.write_text(script("fish", build_parser()))
    out = run("fish", f"source {path}; complete -C '{' '.join(typed)}'", env, tmp_path / "work")
    assert {line.split("\t")[0] for line in out.splitlines()} == expected


def test_job_names_are_those_of_the_mount(tmp_path: Path) -> None:
    (tmp_path / ".downloads").mkdir()
    for name in ("liver.status", "liver.zip", "lung.status", "pilot.manifest"):
        (tmp_path / ".downloads" / name).touch()
    assert words("jobs", str(tmp_path)) == ["liver", "lung"]
    assert words("jobs", str(tmp_path / "not-a-mount")) == []


def test_completion_without_a_shell_says_which(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion"]) == 1
    assert "flowfs completion bash|zsh|fish" in capsys.readouterr().err
