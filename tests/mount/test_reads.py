"""Reading through a real mount: block boundaries, tiny files, EOF, real tools, concurrency.

The reader works in 256 KiB blocks and ``data/random.bin`` is 3 MiB + 12345 bytes, so its
last block is partial: the slices below straddle block boundaries, start or end exactly on
them, and run into the last partial block and past EOF. Every result is compared byte for
byte with the file the server serves.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import DEADLINE, Mount, Server, data_source, md5s, sh, user_env

from flowfs.kernel import (
    CONGESTION_THRESHOLD,
    FUSECTL,
    MAX_BACKGROUND,
    READAHEAD_KB,
    fuse_connection,
)

MountFactory = Callable[..., Mount]

BLOCK = 256 * 1024
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def loose(catalog: dict[str, Any], filename: str) -> str:
    """The id of alice's file of that name in no sample or execution (mount: data/<name>)."""
    return next(d["id"] for d in catalog["data"] if d.get("filename") == filename
                and d.get("owner") == "alice" and not d.get("sample")
                and not d.get("execution"))


def sample_file(catalog: dict[str, Any], sample: str, filename: str) -> str:
    sid = next(s["id"] for s in catalog["samples"] if s["name"] == sample)
    return next(d["id"] for d in catalog["data"]
                if d.get("sample") == sid and Path(d["path"]).name == filename)


def project_files(catalog: dict[str, Any], project_name: str) -> dict[str, str]:
    """{path under projects/<project>/: data id}, from the catalog alone (no collisions)."""
    pid = next(p["id"] for p in catalog["projects"] if p["name"] == project_name)
    samples = {s["id"]: s["name"] for s in catalog["samples"] if s.get("project") == pid}
    execs = {e["id"]: e.get("identifier") or f"{e['pipeline_name']}-{e['id']}"
             for e in catalog["executions"] if e.get("project") == pid}
    out: dict[str, str] = {}
    for d in catalog["data"]:
        filename = d.get("filename") or Path(d["path"]).name
        if d.get("execution") in execs:
            rel = f"executions/{execs[d['execution']]}/{d.get('output_path') or filename}"
        elif d.get("sample") in samples:
            rel = f"samples/{samples[d['sample']]}/{filename}"
        else:
            continue
        assert rel not in out, f"{rel} collides: pick a project without collisions"
        out[rel] = d["id"]
    return out


@pytest.fixture(scope="module")
def random_bin(demo: Path, catalog: dict[str, Any]) -> bytes:
    data = data_source(demo, loose(catalog, "random.bin")).read_bytes()
    assert len(data) % BLOCK and len(data) > 12 * BLOCK, "the demo's random.bin changed"
    return data


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- block boundaries --------------------------------------------------------------------

SIZE = 3 * 2**20 + 12345  # data/random.bin
SLICES = [  # (offset, length, dd block size)
    (0, BLOCK, BLOCK),  # exactly the first block
    (BLOCK, 2 * BLOCK, BLOCK),  # two whole blocks, aligned
    (BLOCK - 1, 2, 1),  # one byte each side of a boundary
    (63 * 4096, 2 * 4096, 4096),  # pages straddling the first boundary
    (262000, 1000, 1000),  # an odd size across a boundary
    (3 * BLOCK - 10, 20, 7),  # tiny, odd block size, across a boundary
    (BLOCK + 1, 3 * BLOCK, 262145),  # unaligned, spanning four blocks
    (5 * BLOCK + 4095, 5 * BLOCK + 3, 65536),  # many blocks, unaligned at both ends
    (2 * 2**20, 2**20 + 12345, 2**20),  # the last full MiB and the partial tail
    (SIZE - 12345, 12345, 12345),  # exactly the last partial block
    (12 * BLOCK - 1, 2, 2),  # the boundary before the partial block
    (SIZE - 100, 1000, 512),  # runs into EOF: only 100 bytes come back
    (SIZE - 1, 1, 1),  # the very last byte
]


@pytest.mark.parametrize("direct", [False, True], ids=["cached", "direct"])
@pytest.mark.parametrize(("offset", "length", "bs"), SLICES)
def test_dd_slices_match_the_source(alice: Mount, random_bin: bytes, offset: int, length: int,
                                    bs: int, direct: bool) -> None:
    assert len(random_bin) == SIZE
    flags = "skip_bytes,count_bytes" + (",direct" if direct else "")
    out = sh("dd", f"if={alice.p('data/random.bin')}", f"bs={bs}", f"skip={offset}",
             f"count={length}", f"iflag={flags}", "status=none").stdout
    assert out == random_bin[offset:offset + length]


@pytest.mark.parametrize(("bs", "skip", "count"), [(BLOCK, 3, 2), (4096, 60, 10),
                                                   (1000, 3140, 10), (65536, 48, 1)])
def test_dd_in_block_units(alice: Mount, random_bin: bytes, bs: int, skip: int,
                           count: int) -> None:
    out = sh("dd", f"if={alice.p('data/random.bin')}", f"bs={bs}", f"skip={skip}",
             f"count={count}", "status=none").stdout
    assert out == random_bin[bs * skip:bs * (skip + count)]


# -- tiny files and EOF ---------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content"), [("empty.txt", b""), ("one_byte.txt", b"x")])
def test_empty_and_one_byte_files(alice: Mount, demo: Path, catalog: dict[str, Any],
                                  name: str, content: bytes) -> None:
    assert data_source(demo, loose(catalog, name)).read_bytes() == content
    path = alice.p(f"data/{name}")
    assert sh("cat", path).stdout == content
    assert sh("md5sum", path).stdout.split()[0].decode() == hashlib.md5(content).hexdigest()
    assert sh("wc", "-c", path).stdout.split()[0] == str(len(content)).encode()
    assert sh("stat", "-c", "%s", path).stdout.strip() == str(len(content)).encode()


EOF_READS = r"""
import json, os, sys
path, size = sys.argv[1], int(sys.argv[2])
out = {}
with open(path, "rb") as fh:
    fh.seek(size + 1000)
    out["seek_past_end"] = fh.read(10).hex()
    fh.seek(max(size - 3, 0))
    out["read_over_end"] = fh.read(100).hex()
    out["then"] = fh.read(100).hex()
fd = os.open(path, os.O_RDONLY)
out["pread_at_end"] = os.pread(fd, 10, size).hex()
out["pread_far"] = os.pread(fd, 10, size + 10 * 2**20).hex()
out["pread_last"] = os.pread(fd, 4096, max(size - 1, 0)).hex()
os.close(fd)
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
out["direct_over_end"] = os.pread(fd, 8192, max(size - 5, 0)).hex()
out["direct_past_end"] = os.pread(fd, 8192, size + 4096).hex()
os.close(fd)
json.dump(out, sys.stdout)
"""


def test_reading_past_eof_returns_nothing(alice: Mount, random_bin: bytes) -> None:
    size = len(random_bin)
    got = json.loads(sh(sys.executable, "-c", EOF_READS, alice.p("data/random.bin"),
                        str(size)).stdout)
    assert {k: bytes.fromhex(v) for k, v in got.items()} == {
        "seek_past_end": b"", "read_over_end": random_bin[-3:], "then": b"",
        "pread_at_end": b"", "pread_far": b"", "pread_last": random_bin[-1:],
        "direct_over_end": random_bin[-5:], "direct_past_end": b"",
    }
    dd = sh("dd", f"if={alice.p('data/random.bin')}", "bs=4096", f"skip={size // 4096 + 5}",
            "count=3", "status=none")
    assert dd.stdout == b""
    empty = sh(sys.executable, "-c", EOF_READS, alice.p("data/empty.txt"), "0").stdout
    assert all(v == "" for v in json.loads(empty).values())


# -- copying with real tools ----------------------------------------------------------------

PILOT = "Alice private pilot"


def test_cp_r_of_a_project_equals_the_source(alice: Mount, demo: Path, catalog: dict[str, Any],
                                             tmp_path: Path) -> None:
    expected = project_files(catalog, PILOT)
    sh("cp", "-r", alice.p(f"projects/{PILOT}"), str(tmp_path / "copy"), timeout=60)
    copied = {str(p.relative_to(tmp_path / "copy")): p
              for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    assert sorted(copied) == sorted(expected)
    for rel, path in copied.items():
        assert md5_of(path) == md5_of(data_source(demo, expected[rel])), rel
    sh("diff", "-r", alice.p(f"projects/{PILOT}"), str(tmp_path / "copy"), timeout=60)


def test_rsync_of_a_sample_equals_the_source(alice: Mount, demo: Path, catalog: dict[str, Any],
                                             tmp_path: Path) -> None:
    sid = next(s["id"] for s in catalog["samples"] if s["name"] == "liver_1")
    data = [d for d in catalog["data"] if d.get("sample") == sid]
    dst = tmp_path / "liver_1"
    sh("rsync", "-a", alice.p("samples/liver_1") + "/", str(dst) + "/", timeout=60)
    copied = {p.name: md5_of(p) for p in dst.iterdir()}
    assert len(copied) == len(data)
    assert sorted(copied.values()) == sorted(md5_of(data_source(demo, d["id"])) for d in data)
    names = [d.get("filename") or Path(d["path"]).name for d in data]
    for d, name in zip(data, names, strict=True):
        if names.count(name) == 1:  # a colliding name gets a suffix (test_tree checks it)
            assert copied[name] == md5_of(data_source(demo, d["id"])), name
    again = sh("rsync", "-ai", alice.p("samples/liver_1") + "/", str(dst) + "/", timeout=60)
    assert again.stdout == b"", "a second rsync should find nothing to copy"


def test_find_lists_the_expected_names(alice: Mount, catalog: dict[str, Any]) -> None:
    out = sh("find", alice.p(f"projects/{PILOT}"), "-type", "f", "-printf", "%P\n").stdout
    assert sorted(out.decode().splitlines()) == sorted(project_files(catalog, PILOT))
    loose_files = {d.get("filename") or Path(d["path"]).name: d["size"]
                   for d in catalog["data"] if d.get("owner") == "alice"
                   and not d.get("sample") and not d.get("execution")}
    out = sh("find", alice.p("data"), "-type", "f", "-printf", "%P %s\n").stdout
    listed = dict(line.rsplit(" ", 1) for line in out.decode().splitlines())
    assert {k: int(v) for k, v in listed.items()} == loose_files


# -- format-aware tools ----------------------------------------------------------------------

REGIONS = ["chr1", "chr1:1-20000", "chr1:150000-200000", "chr2:5000-6000", "chr2", "chrM",
           "chr1:99999-100001"]


@pytest.mark.skipif(not shutil.which("samtools"), reason="needs samtools")
def test_samtools_region_counts_match_the_local_file(alice: Mount, demo: Path,
                                                     catalog: dict[str, Any]) -> None:
    local = data_source(demo, sample_file(catalog, "liver_1", "liver_1.bam"))
    assert local.with_name(local.name + ".bai").exists()
    mounted = alice.p("samples/liver_1/liver_1.bam")
    counts = []
    for region in [None, *REGIONS]:
        where = [region] if region else []
        theirs = sh("samtools", "view", "-c", str(local), *where).stdout
        ours = sh("samtools", "view", "-c", mounted, *where).stdout
        assert ours == theirs, region
        counts.append(int(ours))
    assert counts[0] > 0 and any(0 < c < counts[0] for c in counts[1:])


def test_zcat_head_works(alice: Mount, demo: Path, catalog: dict[str, Any]) -> None:
    local = data_source(demo, sample_file(catalog, "liver_1", "liver_1_R1.fastq.gz"))
    with gzip.open(local, "rb") as fh:
        first = b"".join(fh.readline() for _ in range(8))
    mounted = alice.p("samples/liver_1/liver_1_R1.fastq.gz")
    out = sh("sh", "-c", 'zcat "$1" | head -n 8', "sh", mounted).stdout
    assert out == first
    sh("gzip", "-t", mounted)  # the whole file decompresses: every byte made it


# -- Python in a child: seek/read patterns -------------------------------------------------------

PATTERNS = r"""
import hashlib, io, json, os, sys
path, ops = sys.argv[1], json.loads(sys.argv[2])
digest = lambda b: [len(b), hashlib.md5(b).hexdigest()]
out = []
# A second, unbuffered handle for pread/readinto: moving the buffered handle's file
# position underneath it would make it serve stale buffered bytes.
with open(path, "rb") as fh, open(path, "rb", buffering=0) as raw:
    for kind, off, n in ops:
        if kind == "seek":
            fh.seek(off)
            out.append(digest(fh.read(n)))
        elif kind == "tail":
            fh.seek(-off, io.SEEK_END)
            out.append(digest(fh.read(n)))
        elif kind == "pread":
            out.append(digest(os.pread(raw.fileno(), n, off)))
        elif kind == "readinto":
            buf = bytearray(n)
            raw.seek(off)
            got = raw.readinto(buf)
            out.append(digest(bytes(buf[:got])))
    fh.seek(0)
    h, total = hashlib.md5(), 0
    for chunk in iter(lambda: fh.read(100003), b""):
        h.update(chunk)
        total += len(chunk)
    out.append([total, h.hexdigest()])
json.dump(out, sys.stdout)
"""


def test_python_seek_and_read_patterns(alice: Mount, random_bin: bytes) -> None:
    size = len(random_bin)
    rng = random.Random(7)
    ops: list[tuple[str, int, int]] = [
        ("seek", size - 1, 10), ("seek", 0, 1), ("tail", 12345, 12345), ("tail", 1, 5),
        ("pread", 4 * BLOCK - 1, BLOCK + 2), ("readinto", 7 * BLOCK + 3, 3 * BLOCK),
        ("seek", 9 * BLOCK, BLOCK), ("seek", 2 * BLOCK, 5),  # backwards
    ]
    for _ in range(40):
        kind = rng.choice(["seek", "pread", "readinto"])
        ops.append((kind, rng.randrange(size), rng.choice([1, 511, 4096, 70000, 300000])))
    got = json.loads(sh(sys.executable, "-c", PATTERNS, alice.p("data/random.bin"),
                        json.dumps(ops)).stdout)

    def digest(b: bytes) -> list[Any]:
        return [len(b), hashlib.md5(b).hexdigest()]

    want = []
    for kind, off, n in ops:
        start = size - off if kind == "tail" else off
        want.append(digest(random_bin[start:start + n]))
    want.append(digest(random_bin))
    assert got == want


# -- concurrent readers (a fresh mount each, so the bytes come from the server) -------------

def run_together(cmds: list[list[str]], timeout: float = 60) -> list[bytes]:
    """Start every command at once; their stdout, in order. All are stopped on failure."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL) for c in cmds]
    try:
        outs = []
        for c, proc in zip(cmds, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"{c}: {err.decode(errors='replace')}"
            outs.append(out)
        return outs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=DEADLINE)


def test_eight_readers_of_one_file(server: Server, mounts: MountFactory,
                                   random_bin: bytes) -> None:
    fresh = mounts(server, "alice")
    outs = run_together([["md5sum", fresh.p("data/random.bin")]] * 8)
    want = hashlib.md5(random_bin).hexdigest()
    assert [o.split()[0].decode() for o in outs] == [want] * 8


EIGHT = [("liver_1", "liver_1.bam"), ("liver/2", "liver_2.bam"), ("pilot_a", "pilot_a.bam"),
         ("liver_1", "liver_1_R1.fastq.gz"), ("liver/2", "liver_2_R2.fastq.gz"),
         ("pilot_a", "pilot_a_R1.fastq.gz"), (None, "random.bin"), (None, "reference.fa")]


def test_eight_readers_of_eight_files(server: Server, mounts: MountFactory, demo: Path,
                                      catalog: dict[str, Any]) -> None:
    fresh = mounts(server, "alice")
    paths, want = [], []
    for sample, name in EIGHT:
        if sample is None:
            paths.append(fresh.p(f"data/{name}"))
            want.append(md5_of(data_source(demo, loose(catalog, name))))
        else:
            shown = sample.replace("/", "_")  # the tree's sanitising (test_tree checks it)
            paths.append(fresh.p(f"samples/{shown}/{name}"))
            want.append(md5_of(data_source(demo, sample_file(catalog, sample, name))))
    outs = run_together([["md5sum", p] for p in paths])
    assert [o.split()[0].decode() for o in outs] == want
    # and the same files again, all in one process, now from the cache: still right
    assert list(md5s(paths).values()) == want


def _kernel_limits(dev: int) -> tuple[int, ...]:
    bdi = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}")
    connection = Path(f"{FUSECTL}/{fuse_connection(dev)}")
    return tuple(int(f.read_text()) for f in (bdi / "read_ahead_kb",
                 connection / "max_background", connection / "congestion_threshold"))


RAISED = {"read_ahead_kb": READAHEAD_KB, "max_background": MAX_BACKGROUND,
          "congestion_threshold": CONGESTION_THRESHOLD}


@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's limits can only be raised by root")
def test_a_root_mount_lets_the_kernel_read_ahead_far_and_in_parallel(
        own_mounts: Callable[..., Mount], server: Server) -> None:
    # Without these the kernel asks in 128 KiB requests and keeps at most 12 of them in
    # flight for the whole mount: several files streamed at once then wait on each other.
    # Containers and minimal VMs often have no fusectl mounted: the daemon mounts it then,
    # as systemd does at boot. Unmount it first (when it is there) to prove that.
    subprocess.run(["umount", FUSECTL], capture_output=True, check=False)
    try:
        fresh = own_mounts(server, user_env("alice", "alice-pw"))
        kernel = json.loads(sh("cat", fresh.p(".flowfs/stats")).stdout)["kernel"]
        assert kernel == {"complete": True, "applied": RAISED, "skipped": {},
                          "fusectl_mounted_by_us": kernel["fusectl_mounted_by_us"]}, kernel
        assert os.path.ismount(FUSECTL)
        dev = int(sh("stat", "-c", "%d", fresh.path).stdout)
        assert _kernel_limits(dev) == tuple(RAISED.values())
        # `flowfs status` tells a user the tuning is in effect
        status = sh(sys.executable, "-m", "flowfs", "status", fresh.path).stdout.decode()
        assert "kernel   limits raised: read-ahead 1024 KiB, 64 requests" in status, status
    finally:
        if not os.path.ismount(FUSECTL):
            subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], check=False)


def test_a_file_larger_than_the_cache_reads_right_through_recycled_buffers(
        tmp_path: Path, servers: Callable[..., Server], own_mounts: Callable[..., Mount]) -> None:
    # Streaming evicts blocks; over plain HTTP their memory takes the next bodies. Every
    # byte must still be right, and the stats must show the buffers really went round.
    blob = random.Random(5).randbytes(40 * 2**20 + 4321)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "long.bin").write_bytes(blob)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({
        "users": [{"username": "alice", "password": "alice-pw"}],
        "projects": [{"id": "1", "name": "long", "owner": "alice"}],
        "samples": [{"id": "2", "name": "s", "project": "1"}],
        "data": [{"id": "3", "path": "files/long.bin", "sample": "2", "size": len(blob)}],
    }))
    m = own_mounts(servers(catalog), user_env("alice", "alice-pw"), "--cache-size", "16M")
    path = m.p("projects/long/samples/s/long.bin")
    assert md5s([path])[path] == hashlib.md5(blob).hexdigest()
    buffers = json.loads(sh("cat", m.p(".flowfs/stats")).stdout)["buffers"]
    assert buffers is not None and buffers["reused"] > 0, buffers
    # Only what the 16 MiB cache and the read-ahead in flight hold at once was ever made.
    assert buffers["allocated"] * BLOCK <= 16 * 2**20 + 4 * 2**20, buffers
