"""The benchmark driver: ``bench/run [--quick] [--profile wan50] [--only seq,bam,...]``.

Generates the data once (``bench/work/``), makes a CA and nginx's certificate, starts the
reference server, and for each profile (``bench.links``) starts nginx in front of the files
and the API with that profile's TLS, delay and cap, then runs the workloads of
``bench.workloads``. Writes medians, ratios and the design's targets per profile to a results
JSON, plots to ``docs/perf/``, and the tables to stdout. Everything started is stopped at the
end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import data, links, plots, report, tls
from bench.disk import disk_cache
from bench.links import Link
from bench.nginx import gateway
from bench.procs import Workspace
from bench.services import KINDS, Contender, reference_server, tool_available
from bench.workloads import WORKLOADS as _TIMED
from bench.workloads import Ctx, Result

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = {**_TIMED, "disk": disk_cache}


@dataclass(frozen=True)
class Scale:
    """A named set of sizes and counts: the full run, ``--quick``, ``--tiny``."""

    spec: data.DataSpec
    data_dir: str
    rounds: int
    bam_queries: int
    bam_queries_wan: int  # each query costs a few round trips per contender on a WAN link
    open_reads: int
    results: str
    plots: str


MiB = data.MiB
SCALES = {
    "full": Scale(data.DataSpec(), "data", 3, 200, 50, 8, "bench/results.json", "docs/perf"),
    # Small files, one round: for developing the bench and for a first look.
    "quick": Scale(data.DataSpec(big_bytes=256 * MiB, par_bytes=64 * MiB, bam_reads=2_000_000,
                                 many_files=10_000), "data-quick", 1, 50, 20, 4,
                   "bench/results-quick.json", "bench/work/plots-quick"),
    # Checks the harness itself in a minute: small files, nothing here is a benchmark.
    "tiny": Scale(data.DataSpec(big_bytes=128 * MiB, par_bytes=16 * MiB, bam_reads=300_000,
                                many_files=2_000), "data-tiny", 1, 20, 10, 2,
                  "bench/results-tiny.json", "bench/work/plots-tiny"),
}
# rclone_full (Debian's rclone with --vfs-cache-mode full) on request: it was never the
# fastest rclone for a cold read, and every contender costs minutes per profile.
DEFAULT_CONTENDERS = ("flowfs", "rclone", "rclone_current", "rclone_current_streams", "curl",
                      "aria2c")
OPTIONAL_CONTENDERS = ("rclone_full",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="small files (256 MiB, 8 x 64 MiB), one round; "
                           "results to bench/results-quick.json")
    mode.add_argument("--tiny", action="store_true", help="tiny data: checks the harness only")
    add("--profile", action="append", metavar="NAME[,NAME]",
        help=f"links to measure over, among {', '.join(links.LINKS)} or all "
             f"(several allowed; default: {','.join(links.DEFAULT)})")
    add("--contenders", help=f"comma-separated, among {','.join(KINDS[:-1])} (default: "
                             f"{','.join(DEFAULT_CONTENDERS)}); flowfs always runs")
    add("--rounds", type=int, help="rounds per workload (full run: 3)")
    add("--only", help=f"comma-separated workloads among {','.join(WORKLOADS)}")
    add("--cache-size", default="256M", help="flowfs --cache-size (default 256M)")
    add("--bam-queries", type=int,
        help="BAM region queries per round (full run: 200 on loopback, 50 over a WAN link)")
    add("--out", type=Path, help="results JSON (default: by scale); profiles measured before "
                                 "and not now are kept in it")
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


def _contenders(spec: str | None) -> tuple[tuple[str, ...], list[str]]:
    """The contenders asked for that are installed, and a note for each one that is not."""
    names = [n.strip() for n in spec.split(",") if n.strip()] if spec else DEFAULT_CONTENDERS
    unknown = [n for n in names if n not in KINDS or n == "local"]
    if unknown:
        raise SystemExit(f"bench: unknown contenders {unknown}; choose among {KINDS[:-1]}")
    notes = [f"{n} not installed: left out" for n in names if not tool_available(n)]
    chosen = ("flowfs", *(n for n in names if n != "flowfs" and tool_available(n)))
    return chosen, notes


def run_profile(args: argparse.Namespace, scale: Scale, ws: Workspace, bench: data.BenchData,
                link: Link, api: str, certs: tls.Certificates | None,
                selected: tuple[str, ...]) -> tuple[dict[str, Result], dict[str, float], Ctx]:
    """Every workload over one link: nginx for it in front of the files and the API."""
    from flowfs.sizes import parse_size

    results: dict[str, Result] = {}
    elapsed: dict[str, float] = {}
    with gateway(ws, link.name, link, export=ws.dir("export"), api=api, certs=certs) as urls:
        contenders = {k: Contender(k, ws, urls, certs, cache_size=args.cache_size)
                      for k in KINDS}
        queries = scale.bam_queries_wan if link.emulated else scale.bam_queries
        ctx = Ctx(ws=ws, data=bench, link=link, certs=certs,
                  rounds=args.rounds or scale.rounds, contenders=contenders,
                  selected=selected, cache_size=args.cache_size,
                  cache_bytes=parse_size(args.cache_size),
                  bam_queries=args.bam_queries or queries,
                  open_reads=scale.open_reads, drop=not args.no_drop_caches)
        for name in _selected(args.only):
            start = time.monotonic()
            log.info("%s: workload %s, %d round(s)", link.name, name, ctx.rounds)
            found = WORKLOADS[name](ctx)
            peaks = contenders["flowfs"].take_peaks()
            for result in found.values():  # the daemon's peak, whatever the workload
                result["flowfs_peak_rss_mib"] = peaks
            results.update(found)
            elapsed[name] = round(time.monotonic() - start, 1)
    return results, elapsed, ctx


def document(link: Link, scale_name: str, scale: Scale, ctx: Ctx,
             results: dict[str, Result], elapsed: dict[str, float], started: float,
             load_before: tuple[float, ...]) -> dict[str, Any]:
    """One profile's section of results.json: self-contained, so it can be kept later on."""
    report.summarise(results)
    rows = report.targets(results, ctx.cache_bytes / MiB + 100)
    # Anything else running on the machine skews every number: say how busy it was.
    load = {"before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()]}
    return {
        "link": link.as_dict(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": scale_name,
        "duration_s": round(time.monotonic() - started, 1),
        "workload_duration_s": elapsed,
        "machine": {**report.machine(), "load_average_1_5_15_min": load},
        "versions": report.versions(REPO),
        "config": {"rounds": ctx.rounds, "cache_size": ctx.cache_size,
                   "contenders": list(ctx.selected), "bam_queries": ctx.bam_queries,
                   "bam_bytes": ctx.data.bam.size, "data": asdict(scale.spec),
                   "page_cache_dropped": ctx.drop, "notes": ctx.notes},
        "targets": [t.as_dict() for t in rows],
        "comparison": report.comparison(results),
        "workloads": results,
    }


def show(doc: dict[str, Any]) -> None:
    """Print each profile's targets and medians, then the ratios of all, as Markdown tables."""
    profiles = report.profiles_of(doc)
    for name, section in profiles.items():
        m = section["machine"]
        print(f"## {name}: {section.get('link', {}).get('description', '')}\n")
        print(f"{section.get('run', section.get('profile'))} run of {section['date']} on "
              f"{m['cpu_model']}, {m['nproc']} cores, {m['ram_gib']} GiB, Linux {m['kernel']}; "
              f"flowfs {section['versions']['flowfs_commit']}; {section['duration_s']:.0f} s")
        load = m.get("load_average_1_5_15_min")
        if load:
            print(f"load average before {load['before']}, after {load['after']}")
        print()
        print(report.table([report.Target(**t) for t in section["targets"]]))
        print()
        print(report.medians_table(section["workloads"]))
        print()
    print("## flowfs against the others, per profile (× > 1: flowfs faster)\n")
    print(report.comparison_table(profiles))
    cpu = report.cpu_table(profiles)
    if cpu:
        print("\n## Client CPU per GiB read (core-seconds; the server's not counted)\n")
        print(cpu)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show:
        show(json.loads(args.show.read_text()))
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: bench/run starts us with it ignored
        signal.signal(sig, _interrupt)
    try:
        chosen = links.select(args.profile)
    except ValueError as exc:
        raise SystemExit(f"bench: {exc}") from None
    selected, notes = _contenders(args.contenders)
    for note in notes:
        log.warning("%s", note)
    scale_name = "quick" if args.quick else "tiny" if args.tiny else "full"
    scale = SCALES[scale_name]
    ws = Workspace(args.work.resolve())
    ws.pidfile.write_text("")
    bench = data.ensure(ws.root / scale.data_dir, scale.spec)
    certs = tls.make(ws.dir("tls"))
    sections: dict[str, dict[str, Any]] = {}
    try:
        with reference_server(ws, "bench", bench.catalog, export_dir=ws.dir("export")) as srv:
            for link in chosen:
                started, load_before = time.monotonic(), os.getloadavg()
                results, elapsed, ctx = run_profile(args, scale, ws, bench, link, srv.api,
                                                    certs if link.tls else None, selected)
                ctx.notes.extend(notes)
                sections[link.name] = document(link, scale_name, scale, ctx, results, elapsed,
                                               started, load_before)
    except KeyboardInterrupt:
        log.warning("interrupted: everything started was stopped; no results written")
        return 130
    out = args.out or REPO / scale.results
    doc = report.merge(out, sections)
    report.write(out, doc)
    made = plots.plot_all(doc, args.plots or REPO / scale.plots)
    print(f"\nresults: {out}\nplots: {', '.join(str(p) for p in made) or 'none'}\n")
    show(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
