"""PNG plots of a results document: throughput per profile and contender, BAM query latencies."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bench.report import profiles_of

log = logging.getLogger(__name__)

COLOURS = {"flowfs": "#1b9e77", "rclone": "#d95f02", "rclone_full": "#7570b3",
           "rclone_current": "#e6ab02", "rclone_current_streams": "#a6761d",
           "curl": "#666666", "aria2c": "#1f78b4", "local": "#999999",
           "samtools_http": "#e7298a"}
LABELS = {"cold_seq": "cold sequential, 1 file", "concurrent": "8 files at once (aggregate)",
          "warm_reread": "warm re-read, 1 file"}


def plot_all(doc: dict[str, Any], outdir: Path) -> list[Path]:
    """Write the plots this document has data for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    outdir.mkdir(parents=True, exist_ok=True)
    profiles = profiles_of(doc)
    made = []
    if any(k in s["workloads"] for s in profiles.values() for k in LABELS):
        made.append(_throughput(profiles, outdir / "throughput.png"))
    if any(s["workloads"].get("bam_queries", {}).get("latencies_ms") for s in profiles.values()):
        made.append(_latency(profiles, outdir / "bam_latency.png"))
    return made


def _dates(profiles: dict[str, Any]) -> str:
    days = sorted({s["date"][:10] for s in profiles.values()})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _throughput(profiles: dict[str, Any], path: Path) -> Path:
    """One panel per workload; in each, a group of bars per profile, a bar per contender."""
    import matplotlib.pyplot as plt

    keys = [k for k in LABELS if any(k in s["workloads"] for s in profiles.values())]
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 3.6 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        names = [p for p, s in profiles.items() if key in s["workloads"]]
        contenders = [c for c in COLOURS
                      if any(profiles[p]["workloads"][key]["runs"].get(c) for p in names)]
        width = 0.8 / max(len(contenders), 1)
        for i, contender in enumerate(contenders):
            xs, ys, lo, hi = [], [], [], []
            for x, profile in enumerate(names):
                result = profiles[profile]["workloads"][key]
                runs = result["runs"].get(contender) or []
                med = result["median"].get(contender)
                if med:
                    xs.append(x + (i - (len(contenders) - 1) / 2) * width)
                    ys.append(med)
                    lo.append(med - min(runs))
                    hi.append(max(runs) - med)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=contender,
                   color=COLOURS[contender])
        ax.set_xticks(range(len(names)), [_profile_label(profiles[p]) for p in names])
        ax.set_yscale("log")
        ax.set_ylabel("MiB/s (log)")
        ax.set_title(LABELS[key])
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="x-small", ncol=4)
    fig.suptitle(f"Read throughput per profile, median of rounds, bars min-max "
                 f"({_dates(profiles)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _profile_label(section: dict[str, Any]) -> str:
    link = section.get("link", {})
    if not link.get("delay_s") and not link.get("rate_mib_s"):
        return f"{link.get('name')}\n({'HTTPS' if link.get('tls') else 'HTTP'}, no delay)"
    return (f"{link['name']}\n({link['delay_s'] * 1000:.0f} ms,\n"
            f"{link['rate_mib_s']} MiB/s per reply)")


def _latency(profiles: dict[str, Any], path: Path) -> Path:
    """One panel per profile: the distribution of one query's latency, per contender."""
    import matplotlib.pyplot as plt

    names = [p for p, s in profiles.items()
             if s["workloads"].get("bam_queries", {}).get("latencies_ms")]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3.4 * len(names)), squeeze=False)
    for ax, profile in zip(axes[:, 0], names, strict=True):
        result = profiles[profile]["workloads"]["bam_queries"]
        for name, values in result["latencies_ms"].items():
            if not values:
                continue
            ordered = sorted(values)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, ys, where="post", color=COLOURS.get(name),
                    label=f"{name} (median {ordered[len(ordered) // 2]:.0f} ms)")
        ax.set_xscale("log")
        ax.set_ylabel("fraction of queries")
        ax.set_title(f"{_profile_label(profiles[profile]).replace(chr(10), ' ')}: "
                     f"{result['queries']} queries per round, all rounds")
        ax.legend(fontsize="x-small", loc="lower right")
        ax.grid(alpha=0.3, which="both")
    axes[-1, 0].set_xlabel("latency of one `samtools view -c FILE region` (ms, log scale)")
    fig.suptitle(f"BAM region query latency per profile ({_dates(profiles)})")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
