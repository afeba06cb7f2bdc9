"""The mount runs itself again with the C allocator, once, and only when it is the command."""

from __future__ import annotations

import os
import subprocess
import sys

from flowfs.memory import ALLOCATOR_ENV, give_back, system_allocator

SHOW = ("import os, sys; from flowfs.memory import system_allocator; "
        "print('started', flush=True); system_allocator(sys.argv[1:]); "
        f"print(os.environ.get({ALLOCATOR_ENV!r}), sys.argv[1:])")


def run(*args: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != ALLOCATOR_ENV}
    out = subprocess.run([sys.executable, "-c", SHOW, *args], env={**base, **env},
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.splitlines()


def test_the_command_runs_again_once_with_the_c_allocator_and_its_arguments() -> None:
    # "started" twice: the first process, then the one it became (same pid, same args).
    assert run("mount", "/mnt", "--foreground") == [
        "started", "started", "malloc ['mount', '/mnt', '--foreground']"]


def test_an_allocator_the_user_chose_is_kept() -> None:
    assert run("mount", PYTHONMALLOC="pymalloc") == ["started", "pymalloc ['mount']"]


def test_a_call_from_another_program_does_not_replace_it() -> None:
    system_allocator(["mount", "/not/this/process's/arguments"])  # would exec pytest
    give_back()  # and giving memory back is harmless at any time
