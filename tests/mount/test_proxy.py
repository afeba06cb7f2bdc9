"""A mount behind an HTTP forward proxy (HTTP_PROXY): listings, whole reads, Range reads.

With a proxy in the environment flowfs hands its traffic to plain httpx instead of its lean
Range transport (``flowfs.api.new_client``), so everything a user does goes another way.
The proxy (forward_proxy.py) runs in this process and records what it forwards; the daemon
gets ``HTTP_PROXY`` and an empty ``NO_PROXY``. httpx exempts no host on its own, so even
the loopback server is reached through the proxy, and the server's access log must hold
exactly the requests the proxy forwarded.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from expect import source_md5s
from forward_proxy import Forwarded, ForwardProxy
from harness import Mount, Server, data_source, md5s, sh, user_env, wait_for

MountFactory = Callable[..., Mount]

PILOT = "Alice private pilot"
BLOCK = 256 * 1024  # the reader's block size
IO_TIMEOUT = 3  # seconds, for the mount whose proxy goes away


def through(proxy: ForwardProxy) -> dict[str, str]:
    """The daemon's environment additions that send all its HTTP through ``proxy``.

    urllib's ``getproxies`` (which httpx uses) reads the lowercase spelling last, and an
    empty value there drops an inherited one: nothing from the test's environment
    exempts a host or points elsewhere.
    """
    return {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}


def loose(catalog: dict[str, Any], filename: str) -> dict[str, Any]:
    """alice's data entry of that name in no sample or execution (mount: data/<name>)."""
    return next(d for d in catalog["data"] if d.get("filename") == filename
                and d.get("owner") == "alice" and not d.get("sample")
                and not d.get("execution"))


def ls(m: Mount, rel: str) -> list[str]:
    return sorted(sh("ls", "-1", m.p(rel)).stdout.decode().splitlines())


def range_starts(proxy: ForwardProxy, path: str) -> list[int]:
    """First bytes of the Range requests the proxy forwarded for ``path``, in order."""
    return [int(f.range.removeprefix("bytes=").split("-")[0])
            for f in proxy.forwarded() if f.path == path and f.range]


def server_saw(server: Server, skip: int) -> Counter[Forwarded]:
    """The requests in the server's access log after its first ``skip`` lines."""
    return Counter(Forwarded(r["method"], r["path"], r["query"], r.get("range"))
                   for r in server.requests()[skip:])


def test_a_mount_behind_a_proxy_lists_and_reads(server: Server, own_mounts: MountFactory,
                                                demo: Path, catalog: dict[str, Any]) -> None:
    proxy = ForwardProxy().start()
    try:
        logged_before = len(server.requests())
        m = own_mounts(server, user_env("alice", "alice-pw", **through(proxy)))

        pid = next(p["id"] for p in catalog["projects"] if p["name"] == PILOT)
        samples = sorted(s["name"] for s in catalog["samples"] if s.get("project") == pid)
        assert ls(m, f"projects/{PILOT}/samples") == samples
        loose_names = sorted(d.get("filename") or Path(d["path"]).name
                             for d in catalog["data"] if d.get("owner") == "alice"
                             and not d.get("sample") and not d.get("execution"))
        assert ls(m, "data") == loose_names

        # A read in the middle of a file not read before: only its middle is fetched.
        random_bin = loose(catalog, "random.bin")
        source = data_source(demo, random_bin["id"]).read_bytes()
        offset, length = 5 * BLOCK + 12345, 300_000
        out = sh("dd", f"if={m.p('data/random.bin')}", "bs=65536", f"skip={offset}",
                 f"count={length}", "iflag=skip_bytes,count_bytes", "status=none").stdout
        assert out == source[offset:offset + length]
        # Nothing before the block holding the offset (requests in flight may arrive in any
        # order, so the first one the proxy saw need not be that block).
        starts = range_starts(proxy, f"/downloads/{random_bin['id']}/random.bin")
        assert starts and min(starts) == offset // BLOCK * BLOCK, starts

        # Whole files with a real tool: the rest of random.bin, and files not read before.
        names = ["random.bin", "reference.fa", "notes.txt"]
        got = sh("md5sum", *[m.p(f"data/{name}") for name in names]).stdout.decode()
        assert [line.split()[0] for line in got.splitlines()] == \
            [source_md5s(demo)[loose(catalog, name)["id"]] for name in names]

        scopes = proxy.scopes()
        assert scopes["api"] > 0 and scopes["downloads"] > 0, scopes
        forwarded = proxy.forwarded()
        assert sum(1 for f in forwarded if f.scope == "downloads" and f.range) >= len(names)
        # Everything the server saw came through the proxy (read-ahead may still be landing).
        wait_for(lambda: server_saw(server, logged_before) == Counter(proxy.forwarded()),
                 what="the server's access log to match what the proxy forwarded")
        assert proxy.connections < len(forwarded), "no connection to the proxy was reused"
        assert m.proc is not None and m.proc.poll() is None
    finally:
        proxy.stop()


def test_when_the_proxy_goes_away_reads_fail_and_the_mount_stays(
    server: Server, own_mounts: MountFactory, demo: Path, catalog: dict[str, Any]
) -> None:
    proxy = ForwardProxy().start()
    try:
        m = own_mounts(server, user_env("alice", "alice-pw", **through(proxy)),
                       "--io-timeout", str(IO_TIMEOUT))
        listed = ls(m, "data")
        notes = m.p("data/notes.txt")
        notes_md5 = source_md5s(demo)[loose(catalog, "notes.txt")["id"]]
        assert md5s([notes])[notes] == notes_md5
        assert proxy.scopes()["downloads"] > 0

        proxy.stop()
        began = time.monotonic()
        cat = sh("cat", m.p("data/reference.fa"), check=False, timeout=60)
        elapsed = time.monotonic() - began
        assert cat.returncode != 0 and b"Input/output error" in cat.stderr, cat
        assert elapsed < 5 * IO_TIMEOUT, f"the failed read took {elapsed:.1f} s"

        # What needs no network still works: a listed directory, a file read before, stats.
        assert ls(m, "data") == listed
        assert md5s([notes])[notes] == notes_md5
        stats = json.loads(sh("cat", m.p(".flowfs/stats")).stdout)
        assert stats["user"] == "alice" and stats["cache"]["fetch_errors"] > 0, stats
        assert m.proc is not None and m.proc.poll() is None
    finally:
        proxy.stop()
