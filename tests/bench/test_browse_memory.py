"""`python -m bench.browse_memory`, the command docs/reliability.md shows, runs as shown
(on a small catalog): it walks every file of a mount, then sees the kernel forget them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_documented_browse_memory_command_runs_and_reports(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: only root may make the kernel forget (drop_caches)")
    if not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")):
        pytest.skip("needs /dev/fuse and fusermount3")
    proc = subprocess.run([sys.executable, "-m", "bench.browse_memory", "--files", "300",
                           "--work", str(tmp_path)], cwd=REPO, capture_output=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout)
    assert result["found"] == 300
    # the kernel held every file after the walk, and gave them back when made to forget
    assert result["after_find"]["inodes"] > 300
    assert result["after_forget"]["inodes"] < result["after_find"]["inodes"]
