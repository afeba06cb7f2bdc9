"""The process harness's pure parts: polling with a deadline, the mount check."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flowfs import processes


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "ready"])
    assert processes.wait_for(lambda: next(values), 5, "a value") == "ready"


def test_wait_for_gives_up_at_its_deadline_naming_what_it_waited_for() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="the moon"):
        processes.wait_for(lambda: False, 0.2, "the moon")
    assert time.monotonic() - start < 2


def test_waiting_for_a_ready_file_stops_at_once_when_the_child_died(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(processes.ChildExited):
        processes.wait_ready(tmp_path / "ready.json", lambda: False, timeout=30)
    assert time.monotonic() - start < 2


def test_a_mount_point_is_found_through_a_symlinked_parent(tmp_path: Path) -> None:
    (tmp_path / "root").symlink_to("/")
    assert processes.is_mounted(tmp_path / "root" / "proc")
    assert not processes.is_mounted(tmp_path)


def test_the_mount_point_itself_is_never_resolved(tmp_path: Path) -> None:
    # Resolving it would stat the mount's root: a FUSE call without a deadline. So a
    # symlink named as the mount point is not the mount it points to.
    link = tmp_path / "proc"
    link.symlink_to("/proc")
    assert os.path.ismount("/proc")
    assert not processes.is_mounted(link)
