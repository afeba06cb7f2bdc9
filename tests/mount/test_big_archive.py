"""A multi-GiB bulk archive streamed through the mount without the daemon's memory growing."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Mount, Server, sh, user_env, wait_for

GiB = 2**30
ARCHIVE_BYTES = int(2.2 * GiB)  # over 2 GiB, so ZIP64 and 64-bit offsets are exercised
CACHE = "64M"
BUDGET = 64 * 2**20 + 100 * 2**20  # docs/design.md: RSS <= cache budget + 100 MiB


def big_catalog(tmp_path: Path) -> Path:
    """One 2.2 GiB file (sparse: no disk cost until archived). `.gz` is stored, not
    deflated, so the archive is as large as the file."""
    files = tmp_path / "files"
    files.mkdir()
    with open(files / "big.fastq.gz", "wb") as fh:
        fh.truncate(ARCHIVE_BYTES)
        fh.seek(ARCHIVE_BYTES // 2)
        fh.write(b"a marker in the middle of the file")
    catalog = {
        "users": [{"username": "alice", "password": "alice-pw", "name": "Alice"}],
        "projects": [{"id": "1", "name": "Big", "owner": "alice"}],
        "samples": [{"id": "10", "name": "big_sample", "project": "1", "owner": "alice"}],
        "data": [{"id": "100", "path": "files/big.fastq.gz", "filename": "big.fastq.gz",
                  "sample": "10", "owner": "alice"}],
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def sample_peak(pid: int, stop: threading.Event, out: dict[str, int]) -> None:
    while not stop.is_set():
        out["peak"] = max(out.get("peak", 0), rss_of(pid))
        stop.wait(0.1)


def test_a_multi_gib_archive_streams_in_bounded_memory(
    tmp_path: Path, servers: Callable[..., Server], own_mounts: Callable[..., Mount]
) -> None:
    srv = servers(big_catalog(tmp_path))
    m = own_mounts(srv, user_env("alice", "alice-pw"), "--cache-size", CACHE)
    sh("sh", "-c", f"printf 'projects/Big/samples\\n' > {m.p('.downloads/big.manifest')}")

    def ready() -> bool:
        status: dict[str, Any] = json.loads(sh("cat", m.p(".downloads/big.status")).stdout)
        assert status["status"] in ("pending", "processing", "completed"), status
        return status["status"] == "completed"

    wait_for(ready, timeout=240, what="the 2.2 GiB archive")
    zip_path = m.p(".downloads/big.zip")
    size = int(sh("stat", "-c", "%s", zip_path).stdout)  # in a child: a deadline
    assert size > ARCHIVE_BYTES

    assert m.proc is not None
    stop, peak = threading.Event(), {}
    watcher = threading.Thread(target=sample_peak, args=(m.proc.pid, stop, peak))
    watcher.start()
    started = time.monotonic()
    try:
        through_mount = sh("md5sum", zip_path, timeout=300).stdout.split()[0].decode()
    finally:
        stop.set()
        watcher.join()
    elapsed = time.monotonic() - started

    archive = next((srv.workdir / "state").rglob("*.zip"))
    assert through_mount == md5_file(archive), "the archive read through the mount differs"
    assert peak["peak"] <= BUDGET, f"daemon RSS peaked at {peak['peak'] / 2**20:.0f} MiB"
    listing = sh("python3", "-m", "zipfile", "-l", zip_path, timeout=120).stdout.decode()
    assert "big_sample/big.fastq.gz" in listing
    print(f"streamed {size / GiB:.2f} GiB in {elapsed:.1f} s, peak RSS "
          f"{peak['peak'] / 2**20:.0f} MiB")


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
