"""Never hang, never lie, lose nothing: a real mount behind the fault-injection proxy.

The daemon talks to the reference server through ``tests/faults/proxy.py`` (both API and
files URL). Under each fault a child process lists and reads every file of a sample it
has not read before and reports, per file, its md5 or the error, and the longest single
``open``/``read``/``listdir`` call. A read may fail (EIO) while faults are on; it may
never return a wrong byte nor block past the per-read deadline. Then the faults are
switched off and every read must succeed, without remounting.

Each fault case has its own sample, so its reads go to the network (the block cache and
the kernel's page cache would otherwise answer them).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import FaultProxy, Mount, Processes, Server, sh, user_env, wait_for

from flowfs.kernel import FUSECTL, fuse_connection

PASSWORD = "inject-pw-8e2a"
POOL = 64  # HTTP connections of a mount (flowfs.api.new_client): at most that many stall
IO_TIMEOUT = 5.0
# One FUSE request waits at most IO_TIMEOUT in the daemon; a read(2) may wait for a
# kernel read-ahead request issued just before it, and the machine is shared: x2 + 3 s.
OP_LIMIT = IO_TIMEOUT * 2 + 3
SIZES = (0, 1, 700, 5000, 300_000, 1_500_000)
PROJECT = "projects/inject/samples"

# (case id, fault spec). Probabilities are per request; the daemon retries 6 times, so
# most reads succeed anyway: what matters is that none is wrong or late.
CASES: list[tuple[str, str]] = [
    ("files-reset", "files:reset=0.3"),
    ("files-503", "files:503=0.4"),
    ("files-429", "files:429=0.3"),
    ("files-stall", "files:stall=0.15"),
    ("files-cut", "files:cut=0.3"),
    ("files-short", "files:short=0.3"),
    ("files-trickle", "files:trickle=0.15"),
    ("files-badrange", "files:badrange=0.3"),
    # Every reply an HTML page: files longer than the page fail, shorter ones must too.
    ("files-html200", "files:html200=1"),
    ("files-html502", "files:html502=0.3"),
    # A sample's listing costs one or two API requests: fault exactly the first ones.
    ("api-503", "api:503=1;max:3"),
    ("api-429", "api:429=1;max:2"),
    ("api-reset", "api:reset=1;max:3"),
    ("api-html200", "api:html200=1;max:1"),
    ("mixed", "all:cut=0.05,reset=0.05,503=0.05,stall=0.03,short=0.05,badrange=0.05"),
]
EXTRA_SAMPLES = ("token-0", "token-1", "token-2", "token-3", "bulk")
XFAIL: dict[str, str] = {}  # case -> reason, for a known daemon bug

# Lists a directory and reads each file in 128 KiB read(2)s, 4 files at a time; prints
# {"listdir": s | "error: ...", "files": {name: {"md5"|"error", "open", "max_read"}}}.
READER = r"""
import hashlib, json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
d = sys.argv[1]
out = {"files": {}}
t = time.monotonic()
try:
    names = sorted(os.listdir(d))
    out["listdir"] = time.monotonic() - t
except OSError as exc:
    names = sys.argv[2:]
    out["listdir"] = "error: " + (exc.strerror or str(exc))
out["listdir_time"] = time.monotonic() - t
def one(name):
    r = {"open": 0.0, "max_read": 0.0}
    h = hashlib.md5()
    t = time.monotonic()
    try:
        fd = os.open(os.path.join(d, name), os.O_RDONLY)
    except OSError as exc:
        r["open"] = time.monotonic() - t
        r["error"] = "open: " + (exc.strerror or str(exc))
        return name, r
    r["open"] = time.monotonic() - t
    try:
        while True:
            t = time.monotonic()
            try:
                chunk = os.read(fd, 1 << 17)
            finally:
                r["max_read"] = max(r["max_read"], time.monotonic() - t)
            if not chunk:
                break
            h.update(chunk)
        r["md5"] = h.hexdigest()
    except OSError as exc:
        r["error"] = "read: " + (exc.strerror or str(exc))
    finally:
        os.close(fd)
    return name, r
with ThreadPoolExecutor(4) as pool:
    out["files"] = dict(pool.map(one, names))
json.dump(out, sys.stdout)
"""


def sample_names() -> list[str]:
    return [case for case, _ in CASES] + list(EXTRA_SAMPLES)


@pytest.fixture(scope="module")
def inject_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A sample per case, each with files of every interesting size; {filename: md5}."""
    root = tmp_path_factory.mktemp("inject")
    (root / "files").mkdir()
    rng = random.Random(11)
    data, md5, samples = [], {}, []
    next_id = 1000
    for s, sample in enumerate(sample_names()):
        samples.append({"id": str(100 + s), "name": sample, "project": "1"})
        for size in SIZES:
            name = f"{sample}-{size}.bin"
            blob = rng.randbytes(size)
            (root / "files" / name).write_bytes(blob)
            md5[name] = hashlib.md5(blob).hexdigest()
            data.append({"id": str(next_id), "path": f"files/{name}", "sample": str(100 + s),
                         "size": size, "md5": md5[name]})
            next_id += 1
    catalog = {
        "users": [{"username": "alice", "password": PASSWORD}],
        "projects": [{"id": "1", "name": "inject", "owner": "alice"}],
        "samples": samples,
        "data": data,
    }
    (root / "catalog.json").write_text(json.dumps(catalog))
    return root / "catalog.json", md5


Sources = dict[str, str]


def read_sample(m: Mount, sample: str, sources: Sources, timeout: float = 150) -> dict[str, Any]:
    """List and read one sample's files in a child; fails on any wrong byte."""
    names = sorted(n for n in sources if n.startswith(f"{sample}-"))
    proc = sh(sys.executable, "-c", READER, m.p(f"{PROJECT}/{sample}"), *names, timeout=timeout)
    got: dict[str, Any] = json.loads(proc.stdout)
    for name, r in got["files"].items():
        if "md5" in r:
            assert r["md5"] == sources[name], f"WRONG BYTES in {sample}/{name}"
    return got


def slowest(got: dict[str, Any]) -> float:
    times = [got["listdir_time"]]
    for r in got["files"].values():
        times += [r["open"], r["max_read"]]
    return max(times)


def failures(got: dict[str, Any], sources: Sources, sample: str) -> list[str]:
    """What did not read back whole and right (listing errors and missing files too)."""
    want = {n for n in sources if n.startswith(f"{sample}-")}
    bad = [f"listdir {got['listdir']}"] if isinstance(got["listdir"], str) else []
    bad += [f"{n}: missing" for n in sorted(want - set(got["files"]))]
    bad += [f"{n}: {r['error']}" for n, r in sorted(got["files"].items()) if "error" in r]
    return bad


def alive(m: Mount) -> bool:
    return m.proc is not None and m.proc.poll() is None


Rig = tuple[Server, FaultProxy, Mount]


@pytest.fixture(scope="module")
def rig(inject_catalog: tuple[Path, Sources], module_processes: Processes) -> Rig:
    """One server, one proxy, one mount for every fault case (no remount between them)."""
    catalog, _ = inject_catalog
    srv = module_processes.server(catalog)
    proxy = module_processes.proxy(srv, "off", 0, "--stall-max", "60")
    # --dir-ttl 0: each case lists its sample through the faulty proxy again (walk-ahead
    # lists the other samples early, which would leave the API cases nothing to fetch).
    m = module_processes.mount(proxy.endpoint(), user_env("alice", PASSWORD),
                               "--io-timeout", str(IO_TIMEOUT), "--dir-ttl", "0")
    return srv, proxy, m


@pytest.mark.parametrize(("case", "spec"), CASES, ids=[c for c, _ in CASES])
def test_faults_never_give_wrong_bytes_nor_hang_and_reads_recover(
    case: str, spec: str, rig: Rig, inject_catalog: tuple[Path, Sources],
    request: pytest.FixtureRequest,
) -> None:
    if case in XFAIL:
        request.applymarker(pytest.mark.xfail(strict=True, reason=XFAIL[case]))
    _, proxy, m = rig
    _, sources = inject_catalog
    before = proxy.stats()
    # first:1: a case always injects its fault, however its draws fall among the requests
    proxy.set_faults(f"{spec};first:1", seed=sum(map(ord, case)))
    try:
        got = read_sample(m, case, sources)
    finally:
        proxy.set_faults("off")
    after = proxy.stats()
    injected = sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("fault."))
    assert injected > 0, f"no fault was injected: {after}"
    assert slowest(got) < OP_LIMIT, f"an operation took {slowest(got):.1f} s: {got}"
    assert alive(m), m.read_log()
    print(case, "under faults:", failures(got, sources, case) or "all read")
    # Faults off: everything reads, right, at once, on the same mount.
    again = read_sample(m, case, sources)
    assert failures(again, sources, case) == [], m.read_log()
    assert slowest(again) < OP_LIMIT
    assert alive(m)


def test_a_stalled_api_does_not_hang_listings(
    inject_catalog: tuple[Path, Sources], servers: Callable[..., Server],
    proxies: Callable[..., FaultProxy], own_mounts: Callable[..., Mount],
) -> None:
    """A listing whose API request never answers fails (or succeeds) within the deadline.

    One API request stalls; the proxy gives up on it after OP_LIMIT + 2 s, so a daemon
    without a deadline costs this test that long, not minutes.
    """
    catalog, sources = inject_catalog
    proxy = proxies(servers(catalog), "off", 0, "--stall-max", str(OP_LIMIT + 2))
    m = own_mounts(proxy.endpoint(), user_env("alice", PASSWORD), "--io-timeout",
                   str(IO_TIMEOUT))
    sh("ls", m.p(PROJECT))
    proxy.set_faults("api:stall=1;max:1")
    start = time.monotonic()
    got = sh("ls", m.p(f"{PROJECT}/token-3"), check=False, timeout=OP_LIMIT + 60)
    took = time.monotonic() - start
    assert proxy.stats().get("fault.stall") == 1
    assert alive(m)
    assert took < OP_LIMIT, f"ls of a stalled listing took {took:.1f} s"
    # And the listing is not poisoned: with the API back, it answers.
    names = sh("ls", m.p(f"{PROJECT}/token-3"), timeout=OP_LIMIT).stdout.decode().split()
    assert names == sorted(n for n in sources if n.startswith("token-3-"))
    assert got.returncode != 0 or got.stdout.decode().split() == names


def test_reads_survive_token_expiry_under_faults(
    inject_catalog: tuple[Path, Sources], servers: Callable[..., Server],
    proxies: Callable[..., FaultProxy], own_mounts: Callable[..., Mount],
) -> None:
    catalog, sources = inject_catalog
    srv = servers(catalog, "--token-ttl", "2")
    proxy = proxies(srv, "off", 3)
    m = own_mounts(proxy.endpoint(), user_env("alice", PASSWORD), "--io-timeout",
                   str(IO_TIMEOUT))
    proxy.set_faults("files:cut=0.1,503=0.1,reset=0.1;api:503=0.2,reset=0.1", seed=3)
    start = time.monotonic()
    samples = [s for s in EXTRA_SAMPLES if s.startswith("token")][:3]
    for i, sample in enumerate(samples):
        # Tokens live 2-3 s: each sample is read with a token the previous one did not have.
        wait_for(lambda i=i: time.monotonic() - start > 3.2 * i, timeout=15,  # type: ignore[misc]
                 what="the token to expire")
        got = read_sample(m, sample, sources)
        assert slowest(got) < OP_LIMIT, got
    proxy.set_faults("off")
    stats = proxy.stats()
    assert stats.get("path./api/token", 0) + stats.get("path./api/login", 0) >= 2, stats
    for sample in samples:
        again = read_sample(m, sample, sources)
        assert failures(again, sources, sample) == [], m.read_log()
    assert alive(m)


STATUS_READER = r"""
import json, sys
try:
    with open(sys.argv[1]) as fh:
        print(fh.read())
except OSError as exc:
    print(json.dumps({"read_error": exc.strerror}))
"""


def job_status(m: Mount, stem: str) -> dict[str, Any]:
    out = sh(sys.executable, "-c", STATUS_READER, m.p(f".downloads/{stem}.status"),
             timeout=60).stdout
    try:
        return dict(json.loads(out))
    except ValueError:
        return {"unreadable": out.decode(errors="replace")}


def test_bulk_job_survives_api_errors_while_polled(
    inject_catalog: tuple[Path, Sources], servers: Callable[..., Server],
    proxies: Callable[..., FaultProxy], own_mounts: Callable[..., Mount],
) -> None:
    catalog, sources = inject_catalog
    srv = servers(catalog, "--job-delay", "6")
    proxy = proxies(srv)
    m = own_mounts(proxy.endpoint(), user_env("alice", PASSWORD), "--io-timeout",
                   str(IO_TIMEOUT))
    manifest = f"{PROJECT}/bulk\n".encode()
    sh("tee", m.p(".downloads/bulk.manifest"), input=manifest)
    wait_for(lambda: job_status(m, "bulk").get("status") in ("pending", "processing"),
             what="the job's status file")
    proxy.set_faults("api:503=1")
    try:
        seen = wait_for(lambda: (s := job_status(m, "bulk")).get("poll_error") and s,
                        timeout=60, what="a poll error in the status file")
    finally:
        proxy.set_faults("off")
    assert seen["status"] in ("pending", "processing"), seen
    assert alive(m), m.read_log()
    done = wait_for(lambda: (s := job_status(m, "bulk")).get("status") == "completed" and s,
                    timeout=90, what="the job to complete once the API answers again")
    assert done.get("poll_error") is None, done
    wait_for(lambda: sh("ls", m.p(".downloads")).stdout.decode().split().count("bulk.zip"),
             what="bulk.zip")
    local = Path(m.path.parent) / "bulk-copy.zip"
    sh("cp", m.p(".downloads/bulk.zip"), str(local), timeout=60)
    with zipfile.ZipFile(local) as z:
        got = {Path(n).name: hashlib.md5(z.read(n)).hexdigest() for n in z.namelist()}
    want = {n: h for n, h in sources.items() if n.startswith("bulk-")}
    assert got == want


# One thread per directory looks up a name in it; no directory's listing is in the daemon
# yet, so each lookup is a synchronous FUSE request of its own (the kernel serialises them
# only within one directory), waiting in the daemon for the API, as the lookups and
# listings of a pipeline's many processes can be.
BUSY = r"""
import os, sys, threading
def one(d):
    try:
        os.stat(os.path.join(d, "missing"))
    except OSError:
        pass
threads = [threading.Thread(target=one, args=(d,)) for d in sys.argv[1:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_a_hundred_waiting_requests_do_not_block_the_rest_of_the_mount(
    tmp_path: Path, servers: Callable[..., Server], proxies: Callable[..., FaultProxy],
    own_mounts: Callable[..., Mount],
) -> None:
    """A pipeline's many processes waiting on a stalled API must not freeze `ls` or `stat`.

    Each waiting request holds one of the daemon's request handlers; with 64 of them every
    other request (a cached listing, the stats file) queued until the waiting ones timed out.
    """
    samples = [f"s{i:03}" for i in range(120)]
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "x.txt").write_bytes(b"x\n")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({
        "users": [{"username": "alice", "password": PASSWORD}],
        "projects": [{"id": "1", "name": "wide", "owner": "alice"}],
        "samples": [{"id": str(100 + i), "name": n, "project": "1"}
                    for i, n in enumerate(samples)],
        "data": [{"id": str(1000 + i), "path": "files/x.txt", "sample": str(100 + i),
                  "size": 2} for i in range(len(samples))],
    }))
    io_timeout = 25  # the lookups must still wait when ls runs, on a loaded machine too
    proxy = proxies(servers(catalog), "off", 0, "--stall-max", str(io_timeout + 5))
    m = own_mounts(proxy.endpoint(), user_env("alice", PASSWORD), "--io-timeout",
                   str(io_timeout))
    wide = "projects/wide/samples"
    listed = sh("ls", m.p(wide)).stdout
    assert listed.decode().split() == samples
    dev = int(sh("stat", "-c", "%d", m.p(wide)).stdout)
    kernel_count = Path(f"{FUSECTL}/{fuse_connection(dev)}/waiting")

    def waiting() -> int:
        """FUSE requests waiting in the daemon: the kernel's count where fusectl can be
        read (a root mount mounts it); else the listings the proxy holds, counted so
        that a full HTTP pool (64) stands for all 120 (the rest wait for a connection)."""
        try:
            return int(kernel_count.read_text())
        except OSError:
            stalled = proxy.stats().get("fault.stall", 0)
            return len(samples) if stalled >= POOL else stalled

    proxy.set_faults("api:stall=1")
    lookups = subprocess.Popen([sys.executable, "-c", BUSY, *[m.p(f"{wide}/{n}") for n in samples]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Each lookup in an unlisted directory waits in the daemon on its own listing,
        # which the proxy holds: counted there, this needs neither root nor fusectl.
        wait_for(lambda: waiting() >= 100, 20, what="100 requests waiting in the daemon")
        start = time.monotonic()
        assert sh("ls", m.p(wide), timeout=io_timeout).stdout == listed
        stats = json.loads(sh("cat", m.p(".flowfs/stats"), timeout=io_timeout).stdout)
        took = time.monotonic() - start
        assert took < 5, f"ls and stats took {took:.1f} s behind 100 waiting requests"
        assert stats["user"] == "alice"
        assert lookups.poll() is None  # the lookups were really still waiting
    finally:
        try:
            proxy.set_faults("off")
            lookups.wait(timeout=io_timeout * 2 + 10)
        finally:
            lookups.kill()
            lookups.wait(timeout=10)
    assert alive(m)
    assert sh("cat", m.p(f"{wide}/s042/x.txt"), timeout=OP_LIMIT).stdout == b"x\n"


@pytest.mark.parametrize("block", ["4k", "128k", "1M"])
def test_a_read_on_a_stalled_server_fails_within_one_io_timeout(
    block: str, inject_catalog: tuple[Path, Sources], servers: Callable[..., Server],
    proxies: Callable[..., FaultProxy], own_mounts: Callable[..., Mount],
) -> None:
    """`--io-timeout N` means N for one read(2), not 2N.

    The kernel's read-ahead request fails after N; the kernel then reads the same page
    again synchronously, which used to start a new fetch and wait N more (measured: a
    4 KiB `dd` took 6.0 s with --io-timeout 3).
    """
    catalog, sources = inject_catalog
    io_timeout = 3
    proxy = proxies(servers(catalog), "off", 0, "--stall-max", "30")
    m = own_mounts(proxy.endpoint(), user_env("alice", PASSWORD), "--io-timeout",
                   str(io_timeout))
    name = next(n for n in sorted(sources) if n.endswith(f"-{max(SIZES)}.bin"))
    path = m.p(f"{PROJECT}/{name.rsplit('-', 1)[0]}/{name}")
    sh("stat", path)  # listed while the server still answers
    proxy.set_faults("files:stall=1")
    start = time.monotonic()
    dd = sh("dd", f"if={path}", "of=/dev/null", f"bs={block}", "count=1", check=False,
            timeout=OP_LIMIT)
    took = time.monotonic() - start
    assert dd.returncode != 0 and b"Input/output error" in dd.stderr, dd
    assert took < io_timeout + 1.5, f"a {block} read took {took:.1f} s with --io-timeout 3"
    assert alive(m)
