"""Medians, ratios and the design's targets; the machine and versions; results.json.

The targets are design.md's "Performance targets", checked against the medians of this run.
Where the design says "rclone", the faster of rclone's two modes (defaults, full VFS cache)
is the one compared against.
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

Result = dict[str, Any]

# (workload, numerator, denominator): ratios of medians written to results.json.
RATIOS = (
    ("cold_seq", "flowfs", "rclone"),
    ("cold_seq", "flowfs", "rclone_full"),
    ("cold_seq", "flowfs", "curl"),
    ("warm_reread", "flowfs", "local"),
    ("warm_reread", "flowfs", "rclone"),
    ("concurrent", "flowfs", "rclone"),
    ("concurrent", "flowfs", "rclone_full"),
    ("concurrent", "flowfs", "curl"),
    ("bam_queries", "samtools_http", "flowfs"),  # > 1: flowfs is faster
    ("bam_queries", "rclone", "flowfs"),
    ("bam_queries", "rclone_full", "flowfs"),
)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(workloads: dict[str, Result]) -> None:
    """Add ``median`` (per contender) and ``ratios`` (of medians) to each workload, in place."""
    for result in workloads.values():
        result["median"] = {name: median(v) for name, v in result["runs"].items()}
        if "latencies_ms" in result:
            result["latency_percentiles_ms"] = {
                name: _percentiles(v) for name, v in result["latencies_ms"].items() if v}
    for workload, num, den in RATIOS:
        found = workloads.get(workload)
        if found is None:
            continue
        a, b = found["median"].get(num), found["median"].get(den)
        if a and b:
            found.setdefault("ratios", {})[f"{num}/{den}"] = a / b


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


def _best_rclone(result: Result, higher_is_better: bool = True) -> tuple[str, float] | None:
    found = [(n, result["median"][n]) for n in ("rclone", "rclone_full")
             if result["median"].get(n)]
    if not found:
        return None
    pick = max if higher_is_better else min
    return pick(found, key=lambda pair: pair[1])


def _vs_rclone(w: dict[str, Result], key: str, label: str) -> Target:
    target = "≥ 2× rclone's throughput" if key == "cold_seq" else "aggregate ≥ 2× rclone"
    result = w.get(key)
    ours = result["median"].get("flowfs") if result else None
    best = _best_rclone(result) if result else None
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
    target = "faster than samtools over HTTP directly"
    ours = result["median"].get("flowfs") if result else None
    http = result["median"].get("samtools_http") if result else None
    if result is None or not ours or not http:
        return Target(label, target, "not measured", None)
    agree = "" if result["counts_agree"] else "; COUNTS DIFFER between contenders"
    return Target(label, target, f"{ours:.2f} s vs {http:.2f} s over HTTP: "
                  f"{http / ours:.2f}× faster{agree}", ours < http and result["counts_agree"])


def _find(w: dict[str, Result]) -> Target:
    label, target = "`find` over 50,000 files in one project", "under 5 s, 1 list request/100"
    result = w.get("find")
    ours = result["median"].get("flowfs") if result else None
    if result is None or not ours or not result["list_requests"]:
        return Target(label, target, "not measured", None)
    requests, entries = max(result["list_requests"]), max(result["entries"])
    ideal = max(result["ideal_requests"])
    # The lookups on the way (the project list: owned + shared) may cost a few more.
    met = ours < 5.0 and requests <= ideal + 5
    return Target(label, target, f"{ours:.1f} s; {requests} list requests for {entries} "
                  f"entries ({100 * requests / max(entries, 1):.2f} per 100; ideal {ideal})", met)


def _memory(w: dict[str, Result]) -> Target:
    label, target = "memory while streaming 8 large files", "RSS ≤ cache budget + 100 MiB"
    result = w.get("memory")
    if result is None or not any(result["runs"].values()):
        return Target(label, target, "not measured", None)
    budget = result["budget_mib"]
    peaks = {phase: max(v) for phase, v in result["runs"].items() if v}
    text = ", ".join(f"{phase} {peak:.0f} MiB" for phase, peak in peaks.items())
    return Target(label, target, f"peak VmHWM {text}; budget {budget:.0f} MiB "
                  f"(--cache-size {result['cache_size']} + 100 MiB)",
                  all(peak <= budget for peak in peaks.values()))


def targets(w: dict[str, Result]) -> list[Target]:
    return [
        _vs_rclone(w, "cold_seq", "cold sequential read of a 1 GiB file (`cat`)"),
        _warm(w), _bam(w),
        _vs_rclone(w, "concurrent", "8 files × 256 MiB read concurrently"),
        _find(w), _memory(w),
    ]


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
        "nginx": _first_line(["nginx", "-v"], "nginx"),
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


_COLUMNS = ("flowfs", "rclone", "rclone_full", "curl", "samtools_http", "local")


def medians_table(workloads: dict[str, Result]) -> str:
    """Median per contender and workload, as a Markdown table (— where not run)."""
    out = ["| workload | unit | " + " | ".join(_COLUMNS) + " |",
           "|---|---|" + "---|" * len(_COLUMNS)]
    for key, result in workloads.items():
        if key == "memory":
            continue
        cells = []
        for name in _COLUMNS:
            value = result["median"].get(name)
            cells.append("—" if value is None else f"{value:.3g}" if value < 10 else
                         f"{value:.0f}")
        out.append(f"| {key} | {result['unit']} | " + " | ".join(cells) + " |")
    return "\n".join(out)
