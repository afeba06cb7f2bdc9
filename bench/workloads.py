"""What is timed. Each workload runs every contender once per round, alternating, each time
on a fresh (cold) view, and returns raw samples; ``report`` turns them into medians. A
workload runs over one profile's link (``bench.links``): every byte and every API request
of every contender goes through the same nginx, with the same TLS, delay and cap.

"Cold" means: a new mount (so no page cache of the mounted file and, for rclone's full mode,
an empty VFS cache), then the page cache dropped, then the *server's* copies of the files read
back into memory. Every contender so gets the same warm nginx and the VM's disk is not what
is measured. A failed run is recorded as an error for that contender and the benchmark goes on.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data import BenchData, GiB, Item, MiB, catalog_md5, regions
from bench.links import Link
from bench.nginx import gateway
from bench.procs import (
    BenchError,
    children_cpu_seconds,
    cpu_seconds,
    drop_caches,
    proc_status,
    run_output,
    run_parallel,
    run_timed,
    warm,
)
from bench.services import (
    RCLONES,
    Contender,
    View,
    Workspace,
    flowfs_mount,
    reference_server,
)
from bench.tls import Certificates

log = logging.getLogger(__name__)

Result = dict[str, Any]
WARM_READS = 3
TIMEOUT = 300.0


@dataclass
class Ctx:
    """Everything a workload needs; built once by the driver."""

    ws: Workspace
    data: BenchData
    link: Link
    certs: Certificates | None
    rounds: int
    contenders: dict[str, Contender]  # every kind, by name
    selected: tuple[str, ...]  # those compared in this run
    cache_size: str
    cache_bytes: int
    bam_queries: int
    open_reads: int = 8  # MiB read from each of the 200 open files
    drop: bool = True
    notes: list[str] = field(default_factory=list)


def _cold(ctx: Ctx, sources: Sequence[Path]) -> None:
    if ctx.drop and not drop_caches():
        ctx.drop = False
        ctx.notes.append("page cache not dropped (not root): cold = fresh mount only")
    warm(sources)


def _samples(names: Sequence[str]) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    return {n: [] for n in names}, {n: [] for n in names}


@contextlib.contextmanager
def _recorded(errors: dict[str, list[str]], name: str, rnd: int) -> Iterator[None]:
    """Record a failed run as an error of ``name`` and carry on with the next one."""
    try:
        yield
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("round %d, %s failed: %s", rnd + 1, name, exc)
        errors[name].append(f"round {rnd + 1}: {exc}"[:600])


def _mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds


def _among(ctx: Ctx, names: Sequence[str]) -> list[str]:
    """The contenders of ``names`` selected for this run, in that order."""
    return [n for n in names if n in ctx.selected]


@contextlib.contextmanager
def _client_cpu(view: View, nbytes: int, into: list[float]) -> Iterator[None]:
    """Append the client side's CPU per GiB read: the mount's daemon (if any) and the
    reading commands (cat, curl, aria2c), in core-seconds; the server's is not counted.
    On a machine that also runs the server, this is what decides who is faster once the
    cores are busy."""
    def now() -> float:
        daemon = cpu_seconds(view.daemon.pid) if view.daemon is not None else 0.0
        return daemon + children_cpu_seconds()

    before = now()
    yield
    into.append((now() - before) / (nbytes / GiB))


MOUNTS = ("flowfs", *RCLONES)
READERS = (*MOUNTS, "curl", "aria2c")  # every way of reading a whole file


# -- 1 + 2: cold sequential read, then warm re-reads on the same mount ------------------------

def seq_item(data: BenchData, link: Link) -> Item:
    """The file read sequentially: 1 GiB without delay, the first 256 MiB file over a WAN.

    Over a capped link 1 GiB would take a single stream minutes per round (25 MiB/s: 41 s),
    and 256 MiB is already long enough for read-ahead to reach its full width.
    """
    return data.par[0] if link.emulated else data.big


def sequential(ctx: Ctx) -> dict[str, Result]:
    item = seq_item(ctx.data, ctx.link)
    names = _among(ctx, READERS)
    # Warm re-reads measure the page cache in front of a mount: only where the link is
    # not the bottleneck of the cold read before them (loopback), as before.
    warm_names = [] if ctx.link.emulated else [*_among(ctx, MOUNTS), "local"]
    cold, errors = _samples(names)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    warm, warm_errors = _samples(warm_names)
    verified: dict[str, bool] = {}
    for rnd in range(ctx.rounds):
        for name in names:
            log.info("%s sequential: round %d, %s", ctx.link.name, rnd + 1, name)
            with _recorded(errors, name, rnd), ctx.contenders[name].fresh() as view:
                _cold(ctx, [item.source])
                with _client_cpu(view, item.size, cpu[name]):
                    seconds = run_timed(view.read_cmd(item), TIMEOUT, env=view.env)
                cold[name].append(_mib_s(item.size, seconds))
                if name in warm:
                    warm[name].append(_warm_reads(view, item))
                if rnd == 0 and name in MOUNTS:
                    verified[name] = (_md5(view.path(item))
                                      == catalog_md5(ctx.data.catalog, item.id))
        if warm_names:
            with _recorded(warm_errors, "local", rnd), ctx.contenders["local"].fresh() as view:
                warm["local"].append(_warm_reads(view, item))
    results = {"cold_seq": {"unit": "MiB/s", "higher_is_better": True, "bytes": item.size,
                            "file": item.filename, "runs": cold, "errors": errors,
                            "md5_verified": verified, "client_cpu_s_per_gib": cpu}}
    if warm_names:
        results["warm_reread"] = {"unit": "MiB/s", "higher_is_better": True,
                                  "bytes": item.size, "file": item.filename, "runs": warm,
                                  "errors": warm_errors}
    return results


def _md5(path: str) -> str:
    """md5 of a file as read through a view (once per contender: wrong bytes fast are no win)."""
    _, out = run_output(["md5sum", path], TIMEOUT)
    return out.split()[0]


def _warm_reads(view: View, item: Item) -> float:
    times = [run_timed(view.read_cmd(item), TIMEOUT, env=view.env) for _ in range(WARM_READS)]
    return _mib_s(item.size, statistics.median(times))


# -- 3: BAM region queries --------------------------------------------------------------------

# samtools_http: htslib's own reader on nginx's URLs (HTTPS where the link is), named so
# for continuity with the numbers measured before HTTPS.
URL_SAMTOOLS = "samtools_http"


def bam_queries(ctx: Ctx) -> dict[str, Result]:
    data = ctx.data
    regs = regions(ctx.bam_queries, seed=0)
    names = ["flowfs", URL_SAMTOOLS, *_among(ctx, list(RCLONES))]
    totals, errors = _samples(names)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    counts: dict[str, list[int]] = {}
    scratch = ctx.ws.root / "samtools-cwd"
    for rnd in range(ctx.rounds):
        for name in names:
            log.info("%s bam: round %d, %s (%d queries)", ctx.link.name, rnd + 1, name,
                     len(regs))
            contender = ctx.contenders["curl" if name == URL_SAMTOOLS else name]
            with _recorded(errors, name, rnd), contender.fresh() as view:
                _cold(ctx, [data.bam.source, data.bai.source])
                # htslib keeps a downloaded index in the working directory: start each
                # round without one, as a user's first query would.
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(parents=True)
                times, found = _query_all(view, data, [str(r) for r in regs], scratch)
                totals[name].append(sum(times))
                latencies[name].extend(t * 1000 for t in times)
                counts.setdefault(name, found)
    agree = len({tuple(c) for c in counts.values()}) <= 1
    return {"bam_queries": {
        "unit": "s", "higher_is_better": False, "queries": len(regs), "bam_bytes": data.bam.size,
        "runs": totals, "errors": errors, "latencies_ms": latencies, "counts_agree": agree,
        "reads_counted": sum(next(iter(counts.values()), [])),
    }}


def _query_all(view: View, data: BenchData, regs: Sequence[str],
               cwd: Path) -> tuple[list[float], list[int]]:
    bam, bai = view.path(data.bam), view.path(data.bai)
    times, found = [], []
    for region in regs:
        seconds, out = run_output(["samtools", "view", "-c", "-X", bam, bai, region], 60, cwd,
                                  env=view.env)
        times.append(seconds)
        found.append(int(out.strip()))
    return times, found


# -- 4: several files read at once ------------------------------------------------------------

def concurrent(ctx: Ctx) -> dict[str, Result]:
    par = ctx.data.par
    total = sum(item.size for item in par)
    names = _among(ctx, READERS)
    runs, errors = _samples(names)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(ctx.rounds):
        for name in names:
            log.info("%s concurrent: round %d, %s (%d files)", ctx.link.name, rnd + 1, name,
                     len(par))
            with _recorded(errors, name, rnd), ctx.contenders[name].fresh() as view:
                _cold(ctx, [item.source for item in par])
                with _client_cpu(view, total, cpu[name]):
                    seconds = run_parallel([view.read_cmd(item) for item in par], TIMEOUT,
                                           env=view.env)
                runs[name].append(_mib_s(total, seconds))
    return {"concurrent": {"unit": "MiB/s", "higher_is_better": True, "files": len(par),
                           "bytes": total, "runs": runs, "errors": errors,
                           "client_cpu_s_per_gib": cpu}}


# -- 5: find over a project of 50,000 files ---------------------------------------------------

_NOT_LISTS = {"/api/me", "/api/login", "/api/token"}


def find_many(ctx: Ctx) -> dict[str, Result]:
    """``find`` on a fresh mount of a second server, whose API is behind the profile's link."""
    runs, errors = _samples(("flowfs",))
    requests: list[int] = []
    entries: list[int] = []
    ideal: list[int] = []
    mnt = ctx.ws.root / "mnt" / "flowfs-many"
    catalog = ctx.data.many_catalog
    trust = ctx.certs.client_env() if ctx.certs else {}
    with reference_server(ctx.ws, "many", catalog) as server, gateway(
            ctx.ws, "many", ctx.link, api=server.api, certs=ctx.certs) as urls:
        for rnd in range(ctx.rounds):
            log.info("%s find: round %d", ctx.link.name, rnd + 1)
            with _recorded(errors, "flowfs", rnd), flowfs_mount(
                    ctx.ws, mnt, urls, ctx.cache_size, trust) as daemon:
                mark = server.log_lines()
                seconds, out = run_output(
                    ["find", str(mnt / "projects" / "Many files"), "-printf", "%y %p\\n"],
                    TIMEOUT)
                paths = out.splitlines()
                lists = [r for r in server.requests_since(mark)
                         if str(r["path"]).startswith("/api/") and r["path"] not in _NOT_LISTS]
                runs["flowfs"].append(seconds)
                ctx.contenders["flowfs"].peaks_mib.append(
                    proc_status(daemon.pid)["VmHWM"] / MiB)
                requests.append(len(lists))
                entries.append(len(paths) - 1)  # find prints the starting directory too
                ideal.append(_ideal_lists(paths))
    return {"find": {"unit": "s", "higher_is_better": False, "files": ctx.data.many_files,
                     "runs": runs, "errors": errors, "list_requests": requests,
                     "entries": entries, "ideal_requests": ideal}}


def _ideal_lists(lines: Sequence[str]) -> int:
    """List requests needed at 100 entries a page: for each directory, ceil(entries/100), >= 1.

    ``lines`` are ``find -printf '%y %p\\n'`` output: a type letter, a space, a path.
    """
    children: dict[str, int] = {}
    for line in lines:
        kind, _, path = line.partition(" ")
        if kind == "d":
            children.setdefault(path, 0)
        parent = path.rsplit("/", 1)[0]
        if parent in children:
            children[parent] += 1
    return sum(max(1, -(-n // 100)) for n in children.values())


# -- 6: memory of the daemon ------------------------------------------------------------------

# Opens every path given, then reads CHUNK bytes from each in turn, ROUNDS times, all open.
_OPEN_MANY = r"""
import sys
chunk, rounds = int(sys.argv[1]), int(sys.argv[2])
files = [open(p, "rb", buffering=0) for p in sys.argv[3:]]
for _ in range(rounds):
    for fh in files:
        fh.read(chunk)
for fh in files:
    fh.close()
"""


def memory(ctx: Ctx) -> dict[str, Result]:
    """The daemon's peak RSS streaming 8 files, and with 200 files open; on loopback only.

    Over an emulated link the peak of every other workload is kept (``flowfs_peak_rss_mib``)
    and streaming 8 files is the concurrent workload again: minutes saved per profile.
    """
    if ctx.link.emulated:
        ctx.notes.append("memory workload on loopback profiles only; the daemon's peak RSS "
                         "is recorded in every other workload")
        return {}
    runs, errors = _samples(("stream8", "open200"))
    idle: dict[str, list[float]] = {"stream8": [], "open200": []}  # RSS of the mounted daemon
    flowfs = ctx.contenders["flowfs"]
    par, opened = ctx.data.par, ctx.data.opened
    phases: dict[str, Callable[[View], None]] = {
        "stream8": lambda v: _ignore(run_parallel([v.read_cmd(i) for i in par], TIMEOUT)),
        "open200": lambda v: _ignore(run_timed(
            [sys.executable, "-c", _OPEN_MANY, str(MiB), str(ctx.open_reads),
             *(v.path(i) for i in opened)], TIMEOUT)),
    }
    for rnd in range(ctx.rounds):
        for phase, work in phases.items():
            log.info("%s memory: round %d, %s", ctx.link.name, rnd + 1, phase)
            with _recorded(errors, phase, rnd), flowfs.fresh() as view:
                _cold(ctx, [item.source for item in par] + [ctx.data.big.source])
                assert view.daemon is not None
                idle[phase].append(proc_status(view.daemon.pid)["VmRSS"] / MiB)
                work(view)
                runs[phase].append(proc_status(view.daemon.pid)["VmHWM"] / MiB)
    return {"memory": {"unit": "MiB", "higher_is_better": False, "cache_size": ctx.cache_size,
                       "budget_mib": ctx.cache_bytes / MiB + 100, "runs": runs,
                       "errors": errors, "idle_rss_mib": idle, "open_files": len(opened),
                       "open_read_mib": ctx.open_reads}}


def _ignore(_: float) -> None:
    return None


WORKLOADS: dict[str, Callable[[Ctx], dict[str, Result]]] = {
    "seq": sequential,
    "bam": bam_queries,
    "concurrent": concurrent,
    "find": find_many,
    "memory": memory,
}
