"""The benchmark driver: ``bench/run [--quick] [--rounds N] [--only seq,bam,...]``.

Generates the data once (``bench/work/``), starts nginx and the reference server, runs the
workloads of ``bench.workloads`` and writes medians, ratios and the design's targets to a
results JSON, plots to ``docs/perf/``, and the targets table to stdout. Everything started
is stopped at the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import data, plots, report
from bench.services import Contender, Workspace, nginx, reference_server
from bench.workloads import WORKLOADS, Ctx, Result

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    """A named set of sizes and counts: the full run, ``--quick``, ``--tiny``."""

    spec: data.DataSpec
    data_dir: str
    rounds: int
    bam_queries: int
    open_reads: int
    results: str
    plots: str


MiB = data.MiB
PROFILES = {
    "full": Profile(data.DataSpec(), "data", 3, 200, 8, "bench/results.json", "docs/perf"),
    "quick": Profile(data.DataSpec(), "data", 1, 50, 4, "bench/results-quick.json",
                     "bench/work/plots-quick"),
    # Checks the harness itself in a minute: small files, nothing here is a benchmark.
    "tiny": Profile(data.DataSpec(big_bytes=128 * MiB, par_bytes=16 * MiB, bam_reads=300_000,
                                  many_files=2_000), "data-tiny", 1, 20, 2,
                    "bench/results-tiny.json", "bench/work/plots-tiny"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="one round, 50 BAM queries; results to bench/results-quick.json")
    mode.add_argument("--tiny", action="store_true", help="small data: checks the harness only")
    add("--rounds", type=int, help="rounds per workload (full run: 3)")
    add("--only", help=f"comma-separated workloads among {','.join(WORKLOADS)}")
    add("--cache-size", default="256M", help="flowfs --cache-size (default 256M)")
    add("--bam-queries", type=int, help="BAM region queries per round (full run: 200)")
    add("--out", type=Path, help="results JSON (default: by profile)")
    add("--plots", type=Path, help="plot directory (default: docs/perf for the full run)")
    add("--work", type=Path, default=REPO / "bench" / "work", help="work dir (bench/work)")
    add("--no-drop-caches", action="store_true", help="cold = fresh mount only")
    add("--show", type=Path, metavar="RESULTS",
        help="print the tables of an earlier results JSON and exit")
    add("-v", "--verbose", action="store_true")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # The first signal stops the run; later ones (Ctrl-C reaches both bench/run and this
    # process) must not cut the clean-up short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(WORKLOADS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"bench: unknown workloads {unknown}; choose among {list(WORKLOADS)}")
    return names


@contextlib.contextmanager
def services(ws: Workspace, bench: data.BenchData) -> Iterator[tuple[str, str]]:
    """nginx over the export dir and the reference server that maintains it: (nginx, api)."""
    export = ws.dir("export")
    with nginx(ws, export) as files, reference_server(
            ws, "bench", bench.catalog, files_url=files, export_dir=export) as server:
        yield files, server.api


def run_workloads(args: argparse.Namespace, profile: Profile, ws: Workspace,
                  bench: data.BenchData) -> tuple[dict[str, Result], dict[str, float], Ctx]:
    from flowfs.config import parse_size

    results: dict[str, Result] = {}
    elapsed: dict[str, float] = {}
    with services(ws, bench) as (files, api):
        kinds = ("flowfs", "rclone", "rclone_full", "curl", "local")
        contenders = {k: Contender(k, ws, k, files, api=api, cache_size=args.cache_size)
                      for k in kinds}
        ctx = Ctx(ws=ws, data=bench, rounds=args.rounds or profile.rounds,
                  contenders=contenders, cache_size=args.cache_size,
                  cache_bytes=parse_size(args.cache_size),
                  bam_queries=args.bam_queries or profile.bam_queries,
                  open_reads=profile.open_reads, drop=not args.no_drop_caches)
        for name in _selected(args.only):
            start = time.monotonic()
            log.info("workload %s: %d round(s)", name, ctx.rounds)
            results.update(WORKLOADS[name](ctx))
            elapsed[name] = round(time.monotonic() - start, 1)
    return results, elapsed, ctx


def document(profile_name: str, profile: Profile, ctx: Ctx, results: dict[str, Result],
             elapsed: dict[str, float], started: float,
             load_before: tuple[float, ...]) -> dict[str, Any]:
    report.summarise(results)
    rows = report.targets(results)
    # Anything else running on the machine skews every number: say how busy it was.
    load = {"before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()]}
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "profile": profile_name,
        "duration_s": round(time.monotonic() - started, 1),
        "workload_duration_s": elapsed,
        "machine": {**report.machine(), "load_average_1_5_15_min": load},
        "versions": report.versions(REPO),
        "config": {"rounds": ctx.rounds, "cache_size": ctx.cache_size,
                   "bam_queries": ctx.bam_queries, "bam_bytes": ctx.data.bam.size,
                   "data": asdict(profile.spec), "page_cache_dropped": ctx.drop,
                   "notes": ctx.notes},
        "targets": [t.as_dict() for t in rows],
        "workloads": results,
    }


def show(doc: dict[str, Any]) -> None:
    """Print a results document's targets and medians as Markdown tables."""
    m = doc["machine"]
    print(f"{doc['profile']} run of {doc['date']} on {m['cpu_model']}, {m['nproc']} cores, "
          f"{m['ram_gib']} GiB, Linux {m['kernel']}; flowfs {doc['versions']['flowfs_commit']}")
    load = m.get("load_average_1_5_15_min")
    if load:
        print(f"load average before {load['before']}, after {load['after']}")
    print()
    print(report.table([report.Target(**t) for t in doc["targets"]]))
    print()
    print(report.medians_table(doc["workloads"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show:
        show(json.loads(args.show.read_text()))
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: bench/run starts us with it ignored
        signal.signal(sig, _interrupt)
    name = "quick" if args.quick else "tiny" if args.tiny else "full"
    profile = PROFILES[name]
    started = time.monotonic()
    ws = Workspace(args.work.resolve())
    ws.pidfile.write_text("")
    bench = data.ensure(ws.root / profile.data_dir, profile.spec)
    load_before = os.getloadavg()
    try:
        results, elapsed, ctx = run_workloads(args, profile, ws, bench)
    except KeyboardInterrupt:
        log.warning("interrupted: everything started was stopped; no results written")
        return 130
    doc = document(name, profile, ctx, results, elapsed, started, load_before)
    out = args.out or REPO / profile.results
    report.write(out, doc)
    made = plots.plot_all(doc, args.plots or REPO / profile.plots)
    print(f"\nresults: {out}\nplots: {', '.join(str(p) for p in made) or 'none'}\n")
    show(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
