"""Soak: 16 concurrent readers for minutes under faults; memory and fds must stay flat.

Off by default (it runs for 10 minutes):
``FLOWFS_SOAK=1 pytest tests/mount/test_soak.py -m slow``.
``FLOWFS_SOAK_SECONDS`` sets the duration (default 600), ``FLOWFS_SOAK_OUT`` where the
numbers go (default: the test's tmp dir), as JSON: the samples of the daemon's RSS and
open fds, the readers' counts (reads, bytes, errors, wrong bytes, slowest read) and the
proxy's fault counters.

Readers run in one child process (the mount is only touched from children): half read
whole files sequentially, half read 64 KiB at random offsets; every byte is compared with
the source file, and each file's page cache is dropped after use so reads keep reaching
the daemon. The cache budget (64 MiB) is smaller than the data (~100 MiB), so the block
cache churns all along.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Mount, Processes, user_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("FLOWFS_SOAK") != "1", reason="set FLOWFS_SOAK=1"),
    pytest.mark.timeout(0),
]

PASSWORD = "soak-pw-41c7"
IO_TIMEOUT = 5.0
FAULTS = "all:cut=0.02,reset=0.02,503=0.02,short=0.02,badrange=0.02,stall=0.005,trickle=0.005"
SAMPLE_EVERY = 3.0
MIB = 2**20

READERS = r"""
import json, os, random, sys, threading, time
mount, src, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
names = sorted(os.listdir(src))
end = time.monotonic() + seconds
lock = threading.Lock()
stats = {"reads": 0, "bytes": 0, "errors": 0, "wrong": 0, "short": 0, "max_read": 0.0,
         "files": 0, "incidents": []}
def add(**kw):
    with lock:
        for k, v in kw.items():
            stats[k] = max(stats[k], v) if k == "max_read" else stats[k] + v
def timed_pread(fd, size, off):
    t = time.monotonic()
    try:
        return os.pread(fd, size, off)
    finally:
        add(max_read=time.monotonic() - t)
def check(name, off, got, want):
    # True when the read was not whole. A short read with the right bytes is legal (the
    # kernel returns what it got before a failing page; the next read goes on or fails);
    # only other bytes, or nothing before the end, are wrong.
    if got == want:
        return False
    kind = "short" if got and want.startswith(got) else "wrong"
    add(**{kind: 1})
    with lock:
        if len(stats["incidents"]) < 20:
            stats["incidents"].append([kind, name, off, len(got), len(want)])
    return True
def one_file(rng, sequential):
    name = rng.choice(names)
    with open(os.path.join(src, name), "rb") as fh:
        want = fh.read()
    try:
        fd = os.open(os.path.join(mount, name), os.O_RDONLY)
    except OSError:
        add(errors=1); return
    try:
        if sequential:
            off = 0
            while off < len(want) and time.monotonic() < end:
                got = timed_pread(fd, 1 << 20, off)
                if check(name, off, got, want[off:off + (1 << 20)]) and not got:
                    break
                if not want[off:off + (1 << 20)].startswith(got):
                    break
                add(reads=1, bytes=len(got)); off += len(got)
        else:
            for _ in range(64):
                off = rng.randrange(max(1, len(want)))
                got = timed_pread(fd, 65536, off)
                check(name, off, got, want[off:off + 65536])
                add(reads=1, bytes=len(got))
        add(files=1)
    except OSError:
        add(errors=1)
    finally:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
def worker(i):
    rng = random.Random(i)
    while time.monotonic() < end:
        one_file(rng, sequential=i % 2 == 0)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(stats, sys.stdout)
"""


def make_catalog(root: Path) -> Path:
    (root / "files").mkdir(parents=True)
    rng = random.Random(3)
    data = []
    sizes = [16 * MIB] * 4 + [4 * MIB] * 8 + [300_000] * 20 + [1000] * 20
    for i, size in enumerate(sizes):
        name = f"f{i:03d}.bin"
        (root / "files" / name).write_bytes(rng.randbytes(size))
        data.append({"id": str(500 + i), "path": f"files/{name}", "sample": "10"})
    catalog = {"users": [{"username": "alice", "password": PASSWORD}],
               "projects": [{"id": "1", "name": "soak", "owner": "alice"}],
               "samples": [{"id": "10", "name": "s", "project": "1"}], "data": data}
    (root / "catalog.json").write_text(json.dumps(catalog))
    return root / "catalog.json"


def sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"t": time.monotonic(), "rss_mb": rss_kb / 1024, "fds": fds}


def run_readers(m: Mount, src: Path, seconds: float, pid: int) -> tuple[dict[str, Any],
                                                                          list[dict[str, float]]]:
    """Run the readers; sample the daemon every few seconds until they finish."""
    child = subprocess.Popen([sys.executable, "-c", READERS, m.p("projects/soak/samples/s"),
                              str(src), str(seconds)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    samples: list[dict[str, float]] = []
    deadline = time.monotonic() + seconds + 120
    try:
        while child.poll() is None:
            assert time.monotonic() < deadline, "the readers did not finish"
            samples.append(sample(pid))
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=SAMPLE_EVERY)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == 0, err.decode(errors="replace")[-2000:]
    samples.append(sample(pid))
    return json.loads(out), samples


def test_memory_and_fds_stay_flat_under_faults(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    seconds = float(os.environ.get("FLOWFS_SOAK_SECONDS", "600"))
    out = Path(os.environ.get("FLOWFS_SOAK_OUT", tmp_path / "soak.json"))
    catalog = make_catalog(tmp_path / "data")
    with Processes(tmp_path_factory.mktemp) as procs:
        proxy = procs.proxy(procs.server(catalog), FAULTS, 1, "--stall-max", "60")
        m = procs.mount(proxy.endpoint(), user_env("alice", PASSWORD),
                        "--io-timeout", str(IO_TIMEOUT), "--cache-size", "64M")
        assert m.proc is not None
        pid = m.proc.pid
        started = time.monotonic()
        readers, samples = run_readers(m, tmp_path / "data" / "files", seconds, pid)
        alive = m.proc.poll() is None
        faults = proxy.stats()
    warm = [s for s in samples if s["t"] - started >= min(30.0, seconds / 5)]
    baseline, final = warm[0], warm[-1]
    report = {
        "seconds": seconds, "readers": 16, "faults": FAULTS, "io_timeout": IO_TIMEOUT,
        "cache_size_mb": 64, "reader_counts": readers, "proxy": faults,
        "rss_mb": {"after_warmup": baseline["rss_mb"], "final": final["rss_mb"],
                   "max": max(s["rss_mb"] for s in samples)},
        "fds": {"after_warmup": baseline["fds"], "final": final["fds"],
                "max": max(s["fds"] for s in samples)},
        "samples": [{**s, "t": round(s["t"] - started, 1)} for s in samples],
    }
    out.write_text(json.dumps(report, indent=1))
    print("soak report:", out)
    assert alive, m.read_log()
    assert readers["wrong"] == 0, readers["incidents"]
    assert readers["reads"] > 0 and faults.get("requests.files", 0) > 0
    # A 1 MiB read(2) is up to 8 FUSE requests the kernel may issue one after another,
    # each with its own deadline; 16 readers on 2 shared cores add queueing.
    assert readers["max_read"] < IO_TIMEOUT * 4, readers
    assert final["rss_mb"] <= baseline["rss_mb"] * 1.2 + 20, report["rss_mb"]
    assert final["fds"] <= baseline["fds"] + 20, report["fds"]
