"""Disk cache damage soak: damage random blocks in random ways, remount, read, compare.

Off by default: ``FLOWFS_SOAK=1 pytest tests/mount/test_disk_cache_damage.py -m slow -s``.
``FLOWFS_SOAK_SECONDS`` sets the duration (default 120). Each round damages 1-8 extent files
of a shared cache directory (bit flips anywhere, header table included; truncation;
extension; zeroed bytes; deletion; another extent copied over it; two extents swapped; two
block headers swapped within a table), then a fresh
mount reads every file and each file's md5 is compared with the source. Every fifth round
the daemon is killed with SIGKILL in the middle of a read first. The figures are printed
(and quoted in docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import MD5S, Processes, md5s, sh, user_env

from flowfs.extentfile import EXTENT_BLOCKS, HEADER_SIZE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("FLOWFS_SOAK") != "1", reason="set FLOWFS_SOAK=1"),
    pytest.mark.timeout(0),
]

FILES = 4
SIZE = 9 * 2**20 + 777  # 37 blocks of 256 KiB: two extent files each
KINDS = ("flip", "truncate", "extend", "zero", "delete", "foreign", "swap", "headers")


def make_catalog(root: Path) -> tuple[Path, dict[str, str]]:
    (root / "files").mkdir(parents=True)
    data, sums = [], {}
    for n in range(FILES):
        body = os.urandom(SIZE)
        name = f"f{n}.bin"
        (root / "files" / name).write_bytes(body)
        sums[name] = hashlib.md5(body).hexdigest()
        data.append({"id": str(500 + n), "path": f"files/{name}", "filename": name,
                     "owner": "alice", "size": SIZE, "md5": sums[name]})
    path = root / "catalog.json"
    path.write_text(json.dumps({"users": [{"username": "alice", "password": "alice-pw",
                                           "name": "Alice"}],
                                "projects": [], "samples": [], "executions": [],
                                "data": data}))
    return path, sums


def damage(blocks: list[Path], rng: random.Random, kinds: Counter[str]) -> None:
    for path in rng.sample(blocks, min(len(blocks), rng.randint(1, 8))):
        if not path.exists():
            continue
        kind = rng.choice(KINDS)
        kinds[kind] += 1
        raw = bytearray(path.read_bytes())
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            raw = raw[: rng.randrange(len(raw))]
        elif kind == "extend":
            raw += os.urandom(rng.randint(1, 4096))
        elif kind == "zero":
            start = rng.randrange(len(raw))
            raw[start:] = bytes(len(raw) - start)
        elif kind == "headers":  # two blocks' headers trade places
            a, b = (rng.randrange(EXTENT_BLOCKS) * HEADER_SIZE for _ in range(2))
            raw[a : a + HEADER_SIZE], raw[b : b + HEADER_SIZE] = (
                raw[b : b + HEADER_SIZE], raw[a : a + HEADER_SIZE])
        elif kind == "delete":
            path.unlink()
            continue
        elif kind == "foreign":
            other = rng.choice(blocks)
            if other != path and other.exists():
                shutil.copyfile(other, path)
            continue
        elif kind == "swap":
            sibling = rng.choice(sorted(path.parent.iterdir()))
            if sibling != path and sibling.name.isdigit():
                tmp = path.with_name("swap")
                os.replace(path, tmp)
                os.replace(sibling, path)
                os.replace(tmp, sibling)
            continue
        path.write_bytes(bytes(raw))


def test_no_damage_ever_reaches_a_reader(tmp_path: Path) -> None:
    seconds = float(os.environ.get("FLOWFS_SOAK_SECONDS", "120"))
    rng = random.Random(int(os.environ.get("FLOWFS_SOAK_SEED", "1")))
    catalog, sums = make_catalog(tmp_path / "data")
    cache = tmp_path / "cache"
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    serial = iter(range(10**6))

    def mktemp(name: str) -> Path:
        path = tmp_path / f"{name}{next(serial)}"
        path.mkdir()
        return path

    with Processes(mktemp) as procs:
        server = procs.server(catalog)
        env = user_env("alice", "alice-pw")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            counts["rounds"] += 1
            blocks = [p for p in cache.glob("v2/*/*/*") if p.name.isdigit()]
            damage(blocks, rng, kinds)
            m = procs.mount(server, env, "--disk-cache", "--cache-dir", str(cache),
                               "--cache-size", "16M")
            paths = [m.p(f"data/{name}") for name in sums]
            if counts["rounds"] % 5 == 0:  # kill -9 in the middle of a read
                child = subprocess.Popen([sys.executable, "-c", MD5S, *paths],
                                         stdout=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.0, 0.3))  # a random moment to kill at
                assert m.proc is not None
                m.proc.send_signal(signal.SIGKILL)
                child.wait(60)
                m.close()
                counts["kills"] += 1
                continue
            got = md5s(paths, timeout=120)
            counts["files read"] += len(got)
            counts["wrong files"] += sum(got[p] != sums[Path(p).name] for p in paths)
            stats = json.loads(sh("cat", m.p(".flowfs/stats")).stdout)
            counts["damaged blocks found"] += stats["disk_cache"]["damaged"]
            counts["bytes from disk"] += stats["bytes_from"]["disk"]
            counts["bytes from network"] += stats["bytes_from"]["network"]
            m.close()
    report = {"seconds": seconds, **counts, "damage done": dict(kinds)}
    print(json.dumps(report, indent=2))
    assert counts["wrong files"] == 0
