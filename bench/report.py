"""Medians, ratios and the design's targets; the machine and versions; results.json.

The targets are docs/design.md's "Performance targets", checked against the medians of each
profile. Where the design says "rclone", the best of the rclone variants measured (per
workload, named) is the one compared against. results.json holds one self-contained section
per profile; a run replaces the profiles it measured and keeps the others.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.nginx import echo_module, nginx_binary
from bench.services import CURRENT_RCLONE

Result = dict[str, Any]

RCLONES = ("rclone", "rclone_full", "rclone_current", "rclone_current_streams")
_OTHERS = (*RCLONES, "curl", "aria2c", "samtools_http", "local")
# Columns of the medians table beyond the contenders: the disk cache's variants and phases.
_DISK = ("flowfs_disk", "rclone_current_full", "first", "after_remount")


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(workloads: dict[str, Result]) -> None:
    """Add ``median`` (per contender) and ``ratios`` (of medians) to each workload, in place.

    ``ratios["flowfs/x"]`` is flowfs's speed-up over x: throughput over throughput, or x's
    time over flowfs's; above 1, flowfs is faster.
    """
    for result in workloads.values():
        result["median"] = {name: median(v) for name, v in result["runs"].items()}
        if "client_cpu_s_per_gib" in result:
            result["client_cpu_median"] = {
                name: median(v) for name, v in result["client_cpu_s_per_gib"].items() if v}
        if "latencies_ms" in result:
            result["latency_percentiles_ms"] = {
                name: _percentiles(v) for name, v in result["latencies_ms"].items() if v}
        ours = result["median"].get("flowfs")
        if "flowfs" not in result["runs"] or not ours:
            continue
        for name in _OTHERS:
            theirs = result["median"].get(name)
            if theirs:
                result.setdefault("ratios", {})[f"flowfs/{name}"] = _speedup(result, ours,
                                                                             theirs)


def _speedup(result: Result, ours: float, theirs: float) -> float:
    return ours / theirs if result["higher_is_better"] else theirs / ours


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


@dataclass(frozen=True)
class Target:
    workload: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "target": self.target, "measured": self.measured,
                "met": self.met}


def best_rclone(result: Result) -> tuple[str, float] | None:
    """The rclone variant with the best median in this workload, and that median."""
    found = [(n, result["median"][n]) for n in RCLONES if result["median"].get(n)]
    if not found:
        return None
    pick = max if result["higher_is_better"] else min
    return pick(found, key=lambda pair: pair[1])


def _vs_rclone(w: dict[str, Result], key: str, label: str) -> Target:
    target = "≥ 2× rclone's throughput" if key == "cold_seq" else "aggregate ≥ 2× rclone"
    result = w.get(key)
    ours = result["median"].get("flowfs") if result else None
    best = best_rclone(result) if result else None
    if result is None or not ours or best is None:
        return Target(label, target, "not measured", None)
    ratio = ours / best[1]
    wrong = [n for n, ok in result.get("md5_verified", {}).items() if not ok]
    note = f"; WRONG BYTES from {', '.join(wrong)}" if wrong else ""
    return Target(label, target, f"{ours:.0f} MiB/s vs {best[1]:.0f} MiB/s ({best[0]}): "
                  f"{ratio:.2f}×{note}", ratio >= 2.0 and "flowfs" not in wrong)


def _warm(w: dict[str, Result]) -> Target:
    label, target = "warm re-read of the same file", "≥ 50% of a local file from the page cache"
    result = w.get("warm_reread")
    ours = result["median"].get("flowfs") if result else None
    local = result["median"].get("local") if result else None
    if not ours or not local:
        return Target(label, target, "not measured", None)
    return Target(label, target, f"{ours:.0f} MiB/s vs {local:.0f} MiB/s local: "
                  f"{ours / local:.0%}", ours / local >= 0.5)


def _bam(w: dict[str, Result]) -> Target:
    result = w.get("bam_queries")
    label = f"{result['queries'] if result else 200} BAM region queries (`samtools view -c`)"
    target = "faster than samtools over HTTP(S) directly"
    ours = result["median"].get("flowfs") if result else None
    http = result["median"].get("samtools_http") if result else None
    if result is None or not ours or not http:
        return Target(label, target, "not measured", None)
    agree = "" if result["counts_agree"] else "; COUNTS DIFFER between contenders"
    return Target(label, target, f"{ours:.2f} s vs {http:.2f} s by URL: "
                  f"{http / ours:.2f}× faster{agree}", ours < http and result["counts_agree"])


def _find(w: dict[str, Result]) -> Target:
    result = w.get("find")
    files = f"{result['files']:,}" if result else "50,000"
    label, target = f"`find` over {files} files in one project", "under 5 s, 1 list request/100"
    ours = result["median"].get("flowfs") if result else None
    if result is None or not ours or not result["list_requests"]:
        return Target(label, target, "not measured", None)
    requests, entries = max(result["list_requests"]), max(result["entries"])
    ideal = max(result["ideal_requests"])
    # The lookups on the way (the project list: owned + shared) may cost a few more.
    met = ours < 5.0 and requests <= ideal + 5
    return Target(label, target, f"{ours:.1f} s; {requests} list requests for {entries} "
                  f"entries ({100 * requests / max(entries, 1):.2f} per 100; ideal {ideal})", met)


def _memory(w: dict[str, Result], budget: float) -> Target:
    """The daemon's peak RSS on every flowfs mount of the profile, not only the memory phases."""
    label = "memory of the daemon, every workload (8 streams, 200 files open...)"
    target = "RSS ≤ cache budget + 100 MiB"
    peaks = {key: max(r["flowfs_peak_rss_mib"]) for key, r in w.items()
             if r.get("flowfs_peak_rss_mib")}
    if not peaks:
        return Target(label, target, "not measured", None)
    worst = max(peaks, key=lambda key: peaks[key])
    text = ", ".join(f"{key} {peak:.0f}" for key, peak in peaks.items())
    return Target(label, target, f"peak VmHWM {peaks[worst]:.0f} MiB ({worst}; {text}); "
                  f"budget {budget:.0f} MiB", peaks[worst] <= budget)


def _disk_first(w: dict[str, Result]) -> Target:
    label = "first read with the disk cache on (it fills the cache)"
    target = "≥ 90% of the same read with it off"
    result = w.get("disk_first_read")
    on = result["median"].get("flowfs_disk") if result else None
    off = result["median"].get("flowfs") if result else None
    if not on or not off:
        return Target(label, target, "not measured", None)
    return Target(label, target, f"{on:.0f} MiB/s on vs {off:.0f} MiB/s off: {on / off:.0%}",
                  on / off >= 0.9)


def _disk_reread(w: dict[str, Result]) -> list[Target]:
    label = "re-read after a remount, from the disk cache (page cache dropped)"
    result = w.get("disk_reread")
    ours = result["median"].get("flowfs_disk") if result else None
    if result is None or not ours:
        return [Target(label, "no file request; ≥ 80% of a cold local read; ≥ 1.5× rclone "
                       "--vfs-cache-mode full", "not measured", None)]
    asked = result["file_requests"]
    ours_asked = max(asked.get("flowfs_disk") or [0])
    rclone_asked = max(asked.get("rclone_current_full") or [0])
    rows = [Target(label, "no file request for cached bytes", *_cached_asked(
        result, ours_asked, rclone_asked))]
    local = result["median"].get("local")
    rows.append(Target(label, "≥ 80% of a cold read of a local file on the same disk",
                       f"{ours:.0f} MiB/s vs {local:.0f} MiB/s: {ours / local:.0%}"
                       if local else "not measured", ours / local >= 0.8 if local else None))
    full = result["median"].get("rclone_current_full")
    rows.append(Target(label, "≥ 1.5× rclone --vfs-cache-mode full after its remount",
                       f"{ours:.0f} MiB/s vs {full:.0f} MiB/s: {ours / full:.2f}×"
                       if full else "not measured", ours / full >= 1.5 if full else None))
    return rows


def _cached_asked(result: Result, asked: int, rclone: int) -> tuple[str, bool]:
    """What the re-read asked for, against what the first read had left unwritten."""
    counts, blocks = result.get("flowfs_blocks"), result.get("blocks")
    if not counts or not blocks:  # a results file from before these were kept
        return f"{asked} file requests (rclone full: {rclone})", asked == 0
    # per round: blocks the re-read missed beyond those its first read left unwritten
    rounds = list(zip(counts["written"], counts["reread_misses"], strict=False))
    over = max(max(0, misses - (blocks - written)) for written, misses in rounds)
    unwritten = ", ".join(str(blocks - written) for written, _ in rounds)
    misses = ", ".join(str(m) for _, m in rounds)
    return (f"{asked} file requests; per round, blocks the first read left unwritten "
            f"(writes skipped: a busy CPU, or blocks the memory cache let go before "
            f"their turn): {unwritten} of {blocks}, blocks the re-read did not find on "
            f"disk: {misses}: {over} requested blocks were cached "
            f"(rclone full: {rclone} requests)",
            over == 0)


def _disk_bam(w: dict[str, Result]) -> Target:
    result = w.get("disk_bam")
    label = "BAM region queries again after a remount, disk cache on"
    target = "no file request"
    if result is None or not result["file_requests"]["after_remount"]:
        return Target(label, target, "not measured", None)
    asked = max(result["file_requests"]["after_remount"])
    first = result["median"].get("first") or 0.0
    again = result["median"].get("after_remount") or 0.0
    return Target(label, target, f"{asked} file requests ({first:.2f} s first, {again:.2f} s "
                  f"after the remount)", asked == 0)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.0f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def targets(w: dict[str, Result], budget_mib: float) -> list[Target]:
    seq, par = w.get("cold_seq"), w.get("concurrent")
    seq_label = f"a {_size(seq['bytes'])} file" if seq else "a file"
    par_label = (f"{par['files']} files × {_size(par['bytes'] // par['files'])}" if par
                 else "8 files")
    return [
        _vs_rclone(w, "cold_seq", f"cold sequential read of {seq_label} (`cat`)"),
        _warm(w), _bam(w),
        _vs_rclone(w, "concurrent", f"{par_label} read concurrently"),
        _find(w), _memory(w, budget_mib),
        _disk_first(w), *_disk_reread(w), _disk_bam(w),
    ]


# -- flowfs against every other contender, per profile ----------------------------------------

# (workload, label): the workloads compared across profiles, in the order of the table.
COMPARED = (("cold_seq", "cold sequential"), ("concurrent", "8 files at once"),
            ("bam_queries", "BAM queries"), ("warm_reread", "warm re-read"))


def comparison(w: dict[str, Result]) -> dict[str, dict[str, Any]]:
    """Per workload: flowfs's median, the best rclone (named), curl, aria2c, samtools and the
    speed-ups over each (> 1: flowfs faster). Needs ``summarise`` first."""
    out: dict[str, dict[str, Any]] = {}
    for key, _ in COMPARED:
        result = w.get(key)
        if result is None or not result["median"].get("flowfs"):
            continue
        best = best_rclone(result)
        ratios = result.get("ratios", {})
        entry: dict[str, Any] = {"unit": result["unit"], "flowfs": result["median"]["flowfs"],
                                 "best_rclone": best[0] if best else None,
                                 "best_rclone_median": best[1] if best else None}
        for name in ("curl", "aria2c", "samtools_http", "local"):
            entry[name] = result["median"].get(name)
        entry["vs_best_rclone"] = ratios.get(f"flowfs/{best[0]}") if best else None
        for name in ("curl", "aria2c", "samtools_http", "local"):
            entry[f"vs_{name}"] = ratios.get(f"flowfs/{name}")
        out[key] = entry
    return out


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if value < 10 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def comparison_table(profiles: dict[str, dict[str, Any]]) -> str:
    """flowfs against the best rclone, curl, aria2c (samtools for BAM), every profile."""
    out = ["| profile | workload | unit | flowfs | best rclone | curl | aria2c | samtools | "
           "flowfs / best rclone | flowfs / curl | flowfs / aria2c | flowfs / samtools |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, section in profiles.items():
        found = section.get("comparison") or {}
        for key, label in COMPARED:
            c = found.get(key)
            if c is None:
                continue
            best = (f"{_num(c['best_rclone_median'])} ({c['best_rclone']})"
                    if c["best_rclone"] else "—")
            out.append(f"| {name} | {label} | {c['unit']} | {_num(c['flowfs'])} | {best} | "
                       f"{_num(c['curl'])} | {_num(c['aria2c'])} | {_num(c['samtools_http'])} | "
                       f"{_ratio(c['vs_best_rclone'])} | {_ratio(c['vs_curl'])} | "
                       f"{_ratio(c['vs_aria2c'])} | {_ratio(c['vs_samtools_http'])} |")
    return "\n".join(out)


def cpu_table(profiles: dict[str, dict[str, Any]]) -> str:
    """The client side's CPU per GiB read (the mount's daemon, or curl and aria2c, and the
    reading commands), median core-seconds, where the run recorded it."""
    names = [n for n in ("flowfs", *RCLONES, "curl", "aria2c")
             if any(n in (r.get("client_cpu_median") or {})
                    for section in profiles.values()
                    for r in section.get("workloads", {}).values())]
    out = ["| profile | workload | " + " | ".join(names) + " |",
           "|---|---|" + "---|" * len(names)]
    for profile, section in profiles.items():
        for key, label in COMPARED:
            cpu = (section.get("workloads", {}).get(key) or {}).get("client_cpu_median")
            if cpu:
                cells = [f"{cpu[n]:.2f}" if cpu.get(n) is not None else "—" for n in names]
                out.append(f"| {profile} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) if len(out) > 2 else ""


# -- results.json: a section per profile -------------------------------------------------------

def profiles_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The profile sections of a results document.

    A document from before the profiles (one run, plain HTTP on loopback, workloads at the
    top) is read as its ``http-loopback`` section, with what the comparison needs added.
    """
    if "profiles" in doc:
        return dict(doc["profiles"])
    if "workloads" not in doc:
        return {}
    section = {**doc, "run": doc.get("profile", "full"),
               "link": {"name": "http-loopback", "tls": False, "delay_s": 0.0,
                        "rate_mib_s": 0, "description": "plain HTTP on loopback"}}
    for result in section["workloads"].values():
        result.setdefault("higher_is_better", result.get("unit") == "MiB/s")
    summarise(section["workloads"])
    section["comparison"] = comparison(section["workloads"])
    return {"http-loopback": section}


def merge(path: Path, sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The results document at ``path`` with ``sections`` replacing the same profiles."""
    kept: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            kept = profiles_of(json.loads(path.read_text()))
        except (OSError, ValueError):
            kept = {}
    merged = {**kept, **sections}
    return {"updated": max(s["date"] for s in merged.values()),
            "measured_now": list(sections), "profiles": merged}


# -- the machine and the tools ----------------------------------------------------------------

def _first_line(argv: Sequence[str], pattern: str = "") -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, errors="replace",
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (out.stdout + out.stderr).splitlines()
    for line in lines:
        if re.search(pattern, line):
            return line.strip()
    return lines[0].strip() if lines else ""


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"nproc": os.cpu_count(), "ram_bytes": ram, "ram_gib": round(ram / 2**30, 1),
            "kernel": platform.release(), "cpu_model": cpu,
            "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])}


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(repo: Path) -> dict[str, str]:
    commit = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(repo), "status", "--porcelain", "--", "flowfs"])
    return {
        "flowfs": _package("flowfs"),
        "flowfs_commit": commit + (" (+ uncommitted changes in flowfs/)" if dirty else ""),
        "python": sys.version.split()[0],
        "pyfuse3": _package("pyfuse3"), "trio": _package("trio"), "httpx": _package("httpx"),
        "rclone": _first_line(["rclone", "version"], r"^rclone"),
        "rclone_current": _first_line([str(CURRENT_RCLONE), "version"], r"^rclone"),
        "aria2c": _first_line(["aria2c", "--version"], r"^aria2"),
        "nginx": _first_line([nginx_binary(), "-v"], "nginx"),
        "nginx_echo_module": str(echo_module() or "not installed"),
        "openssl": _first_line(["openssl", "version"]),
        "samtools": _first_line(["samtools", "--version"], r"^samtools"),
        "htslib": _first_line(["samtools", "--version"], r"^Using htslib"),
        "curl": _first_line(["curl", "--version"], r"^curl"),
        "fuse": _first_line(["fusermount3", "-V"], "version"),
    }


def write(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def table(rows: Sequence[Target]) -> str:
    """The targets as a Markdown table."""
    marks = {True: "met", False: "**not met**", None: "—"}
    out = ["| workload | target | measured | |", "|---|---|---|---|"]
    out += [f"| {t.workload} | {t.target} | {t.measured} | {marks[t.met]} |" for t in rows]
    return "\n".join(out)


def medians_table(workloads: dict[str, Result]) -> str:
    """Median per contender and workload, as a Markdown table (— where not run)."""
    shown = {k: r for k, r in workloads.items() if k != "memory"}
    columns = [n for n in ("flowfs", *_OTHERS, *_DISK)
               if any(r["median"].get(n) is not None for r in shown.values())]
    out = ["| workload | unit | " + " | ".join(columns) + " |",
           "|---|---|" + "---|" * len(columns)]
    for key, result in shown.items():
        cells = [_num(result["median"].get(name)) for name in columns]
        out.append(f"| {key} | {result['unit']} | " + " | ".join(cells) + " |")
    return "\n".join(out)
