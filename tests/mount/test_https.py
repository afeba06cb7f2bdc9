"""Mounts over HTTPS, as every real user reaches Flow.

The reference server serves TLS with a certificate from a CA made by the test
(trustme); the daemon trusts it only through ``SSL_CERT_FILE``. Bytes must be exact
whichever path carries them, the lean TLS receive must really carry the Range bodies,
and a certificate that cannot be trusted must stop the mount with a clear word, never
fall back to anything unverified.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from forward_proxy import ForwardProxy
from harness import DEADLINE, FLOWFS, Mount, Processes, Server, md5s, sh, user_env

BIG = 24 * 2**20 + 12345  # not a multiple of a block: the last request is short
PASSWORD = "tls-pw-31c"

RANDOM_READS = r"""
import hashlib, json, os, random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
fd = os.open(path, os.O_RDONLY)
out = []
for _ in range(60):
    off = rng.randrange(size)
    n = rng.choice([1, 100, 4096, 65536, 300_000])
    out.append([off, n, hashlib.md5(os.pread(fd, n, off)).hexdigest()])
os.close(fd)
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The CA's PEM, and two server identities: one for 127.0.0.1, one for another name."""
    d = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    for name, hosts in (("good", ["127.0.0.1", "localhost"]), ("other", ["flow.example"])):
        cert = ca.issue_cert(*hosts)
        cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(d / f"{name}.pem"), append=True)
    return {"ca": d / "ca.pem", **{f"{n}.{k}": d / f"{n}.{k}" for n in ("good", "other")
                                    for k in ("pem", "key")}}


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A catalog with one large and two small files of random bytes."""
    root = tmp_path_factory.mktemp("tls-catalog")
    rng = random.Random(13)
    contents = {"big.bin": rng.randbytes(BIG), "small.txt": b"small but exact\n",
                "one.bin": rng.randbytes(1)}
    (root / "files").mkdir()
    for name, data in contents.items():
        (root / "files" / name).write_bytes(data)
    catalog = root / "catalog.json"
    catalog.write_text(json.dumps({
        "users": [{"username": "alice", "password": PASSWORD}],
        "projects": [{"id": "1", "name": "tls", "owner": "alice"}],
        "samples": [{"id": "2", "name": "s", "project": "1", "owner": "alice"}],
        "data": [{"id": str(10 + i), "path": f"files/{name}", "sample": "2", "owner": "alice"}
                 for i, name in enumerate(contents)],
    }))
    return catalog, contents


def _https_server(procs: Processes, catalog: Path, tls_files: dict[str, Path],
                  identity: str = "good") -> Server:
    return procs.server(catalog, "--tls-cert", str(tls_files[f"{identity}.pem"]),
                        "--tls-key", str(tls_files[f"{identity}.key"]))


@pytest.fixture(scope="module")
def https(module_processes: Processes, blobs: tuple[Path, dict[str, bytes]],
          tls_files: dict[str, Path]) -> Server:
    server = _https_server(module_processes, blobs[0], tls_files)
    assert server.api.startswith("https://") and server.files.startswith("https://")
    return server


@pytest.fixture(scope="module")
def mounted(module_processes: Processes, https: Server, tls_files: dict[str, Path]) -> Mount:
    return module_processes.mount(https, user_env("alice", PASSWORD,
                                                  SSL_CERT_FILE=str(tls_files["ca"])))


def test_every_file_reads_exactly_over_https(mounted: Mount,
                                             blobs: tuple[Path, dict[str, bytes]]) -> None:
    paths = {mounted.p(f"projects/tls/samples/s/{name}"): data
             for name, data in blobs[1].items()}
    got = md5s(list(paths))
    assert got == {p: hashlib.md5(data).hexdigest() for p, data in paths.items()}


@pytest.mark.parametrize("receive", ["c", "python"])
def test_both_tls_receive_loops_read_every_byte_through_a_mount(
        module_processes: Processes, https: Server, tls_files: dict[str, Path],
        blobs: tuple[Path, dict[str, bytes]], receive: str) -> None:
    """The C receive loop (flowfs._tlsfill, built with flowfs wherever a compiler is) and
    the Python one it falls back to give the same bytes; the mount says which it uses."""
    if receive == "c" and not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: flowfs._tlsfill is not built")
    env = user_env("alice", PASSWORD, SSL_CERT_FILE=str(tls_files["ca"]))
    if receive == "python":
        env["FLOWFS_TLS_FILL"] = "python"
    m = module_processes.mount(https, env, "--cache-size", "16M")
    path = m.p("projects/tls/samples/s/big.bin")
    assert md5s([path])[path] == hashlib.md5(blobs[1]["big.bin"]).hexdigest()
    assert json.loads(sh("cat", m.p(".flowfs/stats")).stdout)["tls_receive"] == receive


def test_random_reads_over_https_return_the_right_bytes(
        mounted: Mount, blobs: tuple[Path, dict[str, bytes]]) -> None:
    data = blobs[1]["big.bin"]
    out = json.loads(sh(sys.executable, "-c", RANDOM_READS,
                        mounted.p("projects/tls/samples/s/big.bin"), str(len(data)), "7").stdout)
    assert len(out) == 60
    for off, n, digest in out:
        assert digest == hashlib.md5(data[off:off + n]).hexdigest(), (off, n)


def test_https_bodies_land_in_recycled_buffers(
        module_processes: Processes, https: Server, tls_files: dict[str, Path],
        blobs: tuple[Path, dict[str, bytes]]) -> None:
    # Only the lean receive takes buffers from the pool: reuse proves it carried the bodies
    # (plain httpx makes its own). A 16 MiB cache makes a 24 MiB read evict and reuse.
    m = module_processes.mount(https, user_env("alice", PASSWORD,
                                               SSL_CERT_FILE=str(tls_files["ca"])),
                               "--cache-size", "16M")
    path = m.p("projects/tls/samples/s/big.bin")
    assert md5s([path])[path] == hashlib.md5(blobs[1]["big.bin"]).hexdigest()
    buffers = json.loads(sh("cat", m.p(".flowfs/stats")).stdout)["buffers"]
    assert buffers is not None and buffers["reused"] > 0, buffers


def _mount_fails(server: Server, path: Path, env: dict[str, str]) -> tuple[int, str, float]:
    path.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        proc = subprocess.run([*FLOWFS, "mount", str(path), "--foreground",
                               "--api-url", server.api, "--files-url", server.files],
                              capture_output=True, text=True, env=env, timeout=DEADLINE,
                              stdin=subprocess.DEVNULL, check=False)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)
    return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - start


def test_an_untrusted_certificate_stops_the_mount_with_what_to_do(
        https: Server, tmp_path: Path) -> None:
    # No SSL_CERT_FILE: the test CA is in no trust store the daemon knows.
    code, out, took = _mount_fails(https, tmp_path / "flow", user_env("alice", PASSWORD))
    assert code != 0
    assert "not trusted" in out and "SSL_CERT_FILE" in out, out
    assert took < 20, f"{took:.1f} s: a certificate failure is not retried like a network blip"


def test_a_certificate_for_another_host_is_refused(
        processes: Processes, blobs: tuple[Path, dict[str, bytes]],
        tls_files: dict[str, Path], tmp_path: Path) -> None:
    other = _https_server(processes, blobs[0], tls_files, identity="other")
    env = user_env("alice", PASSWORD, SSL_CERT_FILE=str(tls_files["ca"]))
    code, out, _ = _mount_fails(other, tmp_path / "flow", env)
    assert code != 0
    assert "not trusted" in out and "127.0.0.1" in out, out


def test_an_untrusted_files_server_fails_reads_not_silently(
        processes: Processes, own_mounts: Callable[..., Mount], https: Server,
        blobs: tuple[Path, dict[str, bytes]], tls_files: dict[str, Path]) -> None:
    # The API is trusted, the files server presents a certificate for another name: the
    # listing works, a read fails with EIO at once, and the log says why.
    other = _https_server(processes, blobs[0], tls_files, identity="other")
    env = user_env("alice", PASSWORD, SSL_CERT_FILE=str(tls_files["ca"]))
    m = own_mounts(Server(https.catalog, https.workdir, api=https.api, files=other.files), env,
                   "--io-timeout", "30")
    start = time.monotonic()
    cat = sh("cat", m.p("projects/tls/samples/s/small.txt"), check=False)
    assert cat.returncode != 0 and b"Input/output error" in cat.stderr
    assert time.monotonic() - start < 15
    assert "not trusted" in m.read_log()


def test_behind_an_https_proxy_bodies_still_take_the_lean_path(
        own_mounts: Callable[..., Mount], https: Server, tls_files: dict[str, Path],
        blobs: tuple[Path, dict[str, bytes]]) -> None:
    # HTTPS_PROXY: every connection is a CONNECT tunnel through the proxy (it sees host
    # and port only), the certificate checked is still the server's, and Range bodies
    # still land in recycled buffers: the lean path, not httpx's.
    proxy = ForwardProxy().start()
    try:
        env = user_env("alice", PASSWORD, SSL_CERT_FILE=str(tls_files["ca"]),
                       HTTPS_PROXY=proxy.url, https_proxy=proxy.url, NO_PROXY="", no_proxy="")
        m = own_mounts(https, env, "--cache-size", "16M")
        path = m.p("projects/tls/samples/s/big.bin")
        assert md5s([path])[path] == hashlib.md5(blobs[1]["big.bin"]).hexdigest()
        stats = json.loads(sh("cat", m.p(".flowfs/stats")).stdout)
        assert stats["buffers"] is not None and stats["buffers"]["reused"] > 0, stats
        server = https.files.split("://", 1)[1]
        assert proxy.tunnels() and set(proxy.tunnels()) == {server}, proxy.tunnels()
        assert proxy.forwarded() == []  # nothing in clear text
    finally:
        proxy.stop()
