"""PNG plots of a results document: throughput per workload, BAM query latencies."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COLOURS = {"flowfs": "#1b9e77", "rclone": "#d95f02", "rclone_full": "#7570b3",
           "curl": "#666666", "local": "#999999", "samtools_http": "#e7298a"}
LABELS = {"cold_seq": "cold sequential\n1 file", "warm_reread": "warm re-read\n1 file",
          "concurrent": "concurrent\n8 files (aggregate)"}


def plot_all(results: dict[str, Any], outdir: Path) -> list[Path]:
    """Write the plots this run has data for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    workloads = results["workloads"]
    if any(k in workloads for k in LABELS):
        made.append(_throughput(workloads, outdir / "throughput.png", results["date"]))
    if workloads.get("bam_queries", {}).get("latencies_ms"):
        made.append(_latency(workloads["bam_queries"], outdir / "bam_latency.png",
                             results["date"]))
    return made


def _throughput(workloads: dict[str, Any], path: Path, date: str) -> Path:
    import matplotlib.pyplot as plt

    keys = [k for k in LABELS if k in workloads]
    names = [n for n in COLOURS if any(workloads[k]["runs"].get(n) for k in keys)]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for x, key in enumerate(keys):
            runs = workloads[key]["runs"].get(name) or []
            med = workloads[key]["median"].get(name)
            if med:
                xs.append(x + (i - (len(names) - 1) / 2) * width)
                ys.append(med)
                lo.append(med - min(runs))
                hi.append(max(runs) - med)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=name, color=COLOURS[name])
    ax.set_xticks(range(len(keys)), [LABELS[k] for k in keys])
    ax.set_yscale("log")
    ax.set_ylabel("MiB/s (median, bars: min-max of rounds; log scale)")
    ax.set_title(f"Read throughput, same files from the same nginx ({date[:10]})")
    ax.legend(fontsize="small")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(result: dict[str, Any], path: Path, date: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    for name, values in result["latencies_ms"].items():
        if not values:
            continue
        ordered = sorted(values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, ys, where="post", label=f"{name} (median {ordered[len(ordered) // 2]:.0f}"
                f" ms)", color=COLOURS.get(name))
    ax.set_xscale("log")
    ax.set_xlabel("latency of one `samtools view -c FILE region` (ms, log scale)")
    ax.set_ylabel("fraction of queries")
    ax.set_title(f"{result['queries']} BAM region queries per round, all rounds ({date[:10]})")
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
