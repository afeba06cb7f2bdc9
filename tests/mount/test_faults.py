"""Faults a long-running reader meets: token expiry, a dead API key, a server that goes away.

Each test runs its own server (short token lifetime, or one it stops and restarts). The
catalog is made here: hundreds of small files with distinct bytes, so every read of a file
not read before must go to the server, and a wrong byte cannot go unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import random
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import (
    DEADLINE,
    Mount,
    Server,
    clean_env,
    login_token,
    md5s,
    sh,
    user_env,
    wait_for,
)

PASSWORD = "faults-pw-5d1c"
N_SMALL = 800
BIG = 32 * 2**20
SAMPLE_DIR = "projects/faults/samples/s"
REFRESH_PATHS = ("/api/token", "/api/login")

ServerFactory = Callable[..., Server]
MountFactory = Callable[..., Mount]


class Files:
    """The fault catalog's files: hands out names not read before, knows their md5s."""

    def __init__(self, catalog: Path, md5: dict[str, str]) -> None:
        self.catalog = catalog
        self.md5 = md5
        self._unread: Iterator[str] = iter(sorted(n for n in md5 if n != "big.bin"))

    def fresh(self, n: int) -> list[str]:
        names = [name for _, name in zip(range(n), self._unread, strict=False)]
        assert len(names) == n, "ran out of unread files: make N_SMALL larger"
        return names


@pytest.fixture(scope="module")
def fault_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("faults")
    (root / "files").mkdir()
    rng = random.Random(5)
    data, md5 = [], {}
    blobs = {f"f{i:04d}.bin": rng.randbytes(rng.randrange(1, 4096)) for i in range(N_SMALL)}
    blobs["big.bin"] = rng.randbytes(BIG)
    for i, (name, blob) in enumerate(sorted(blobs.items())):
        (root / "files" / name).write_bytes(blob)
        md5[name] = hashlib.md5(blob).hexdigest()
        data.append({"id": str(1000 + i), "path": f"files/{name}", "sample": "10",
                     "size": len(blob), "md5": md5[name]})
    catalog = {
        "users": [{"username": "alice", "password": PASSWORD}],
        "projects": [{"id": "1", "name": "faults", "owner": "alice"}],
        "samples": [{"id": "10", "name": "s", "project": "1"}],
        "data": data,
    }
    (root / "catalog.json").write_text(json.dumps(catalog))
    return root / "catalog.json", md5


@pytest.fixture
def files(fault_catalog: tuple[Path, dict[str, str]]) -> Files:
    return Files(*fault_catalog)


def read(m: Mount, files: Files, names: list[str]) -> dict[str, str]:
    """Read ``names`` in one child; {name: "ok" | "error: <strerror>"}; a wrong byte fails."""
    got = md5s([m.p(f"{SAMPLE_DIR}/{n}") for n in names])
    out = {}
    for name in names:
        value = got[m.p(f"{SAMPLE_DIR}/{name}")]
        if not value.startswith("error: "):
            assert value == files.md5[name], f"wrong bytes in {name}"
            value = "ok"
        out[name] = value
    return out


def first_index(srv: Server, pred: Callable[[dict[str, str]], bool]) -> int | None:
    return next((i for i, r in enumerate(srv.requests()) if pred(r)), None)


def test_reads_continue_across_token_expiry(files: Files, servers: ServerFactory,
                                            own_mounts: MountFactory) -> None:
    srv = servers(files.catalog, "--token-ttl", "2")
    m = own_mounts(srv, user_env("alice", PASSWORD))
    assert set(read(m, files, files.fresh(5)).values()) == {"ok"}
    first_read = first_index(srv, lambda r: r["path"].startswith("/downloads/"))
    assert first_read is not None

    def refreshed() -> bool:
        # Keep reading files not read before, so each read goes to the server.
        got = read(m, files, files.fresh(10))
        assert set(got.values()) == {"ok"}, got
        return any(r["path"] in REFRESH_PATHS for r in srv.requests()[first_read:])

    wait_for(refreshed, timeout=30, what="a token refresh after the first read")
    assert any(r["status"] == 401 for r in srv.requests()[first_read:]), "no read saw expiry"
    assert set(read(m, files, files.fresh(10)).values()) == {"ok"}
    assert md5s([m.p(f"{SAMPLE_DIR}/big.bin")])[m.p(f"{SAMPLE_DIR}/big.bin")] == \
        files.md5["big.bin"]
    assert m.proc is not None and m.proc.poll() is None


def test_an_expired_static_token_means_permission_denied(
    files: Files, servers: ServerFactory, own_mounts: MountFactory
) -> None:
    srv = servers(files.catalog, "--token-ttl", "2")
    token = login_token(srv, "alice", PASSWORD)
    m = own_mounts(srv, clean_env(FLOW_API_TOKEN=token))
    sh("ls", m.p(SAMPLE_DIR))  # the listing, while the token is young
    early = files.fresh(3)
    assert set(read(m, files, early).values()) == {"ok"}

    def refused() -> dict[str, str] | None:
        got = read(m, files, files.fresh(10))
        return got if any(v.startswith("error") for v in got.values()) else None

    got = wait_for(refused, timeout=30, what="the static token to expire")
    assert set(got.values()) <= {"ok", "error: Permission denied"}, got
    later = read(m, files, files.fresh(10))
    assert set(later.values()) == {"error: Permission denied"}, later
    cat = sh("cat", m.p(f"{SAMPLE_DIR}/{files.fresh(1)[0]}"), check=False)
    assert cat.returncode != 0 and b"Permission denied" in cat.stderr
    # What was read before the expiry is still there: the cache needs no token.
    assert set(read(m, files, early).values()) == {"ok"}
    warnings = [line for line in m.read_log().splitlines() if "log in again" in line]
    assert len(warnings) == 1, m.read_log()
    assert token not in m.read_log()
    assert m.proc is not None and m.proc.poll() is None


# Reads a file in 1 MiB steps: one step, then waits for a line on stdin, then the rest.
# Prints {"read": bytes, "error": strerror or null, "elapsed": s since the go-ahead}.
PAUSED_READER = r"""
import json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
total = len(os.read(fd, 1 << 20))
print("started", flush=True)
sys.stdin.readline()
start, error = time.monotonic(), None
try:
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
except OSError as exc:
    error = exc.strerror
print(json.dumps({"read": total, "error": error, "elapsed": time.monotonic() - start}))
"""


def start_paused_reader(path: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_READER, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
    line = proc.stdout.readline() if ready else b""
    if line != b"started\n":
        proc.kill()
        proc.wait(timeout=DEADLINE)
        raise AssertionError(f"the reader did not start: {line!r} {proc.stderr!r}")
    return proc


def test_server_stopped_mid_read_gives_eio_then_recovers(
    files: Files, servers: ServerFactory, own_mounts: MountFactory
) -> None:
    srv = servers(files.catalog)
    m = own_mounts(srv, user_env("alice", PASSWORD), "--io-timeout", "5")
    assert set(read(m, files, files.fresh(2)).values()) == {"ok"}
    big = m.p(f"{SAMPLE_DIR}/big.bin")
    reader = start_paused_reader(big)
    try:
        srv.stop()
        out, err = reader.communicate(b"go\n", timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=DEADLINE)
    result = json.loads(out)
    assert result["error"] == "Input/output error", (result, err)
    assert result["read"] < BIG and result["elapsed"] < 20, result
    assert m.proc is not None and m.proc.poll() is None

    uncached = m.p(f"{SAMPLE_DIR}/{files.fresh(1)[0]}")
    began = time.monotonic()
    cat = sh("cat", uncached, check=False, timeout=60)
    elapsed = time.monotonic() - began
    assert cat.returncode != 0 and b"Input/output error" in cat.stderr, cat
    assert elapsed < 20, f"the failed read took {elapsed:.1f} s with --io-timeout 5"
    assert m.proc.poll() is None

    srv.start()  # same port, same state dir: the daemon's token stays valid
    name = Path(uncached).name
    assert sh("md5sum", uncached).stdout.split()[0].decode() == files.md5[name]
    assert md5s([big], timeout=60)[big] == files.md5["big.bin"]
    assert m.proc.poll() is None
