"""The bench's CPU accounting: the client side's core-seconds per GiB, and its table."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bench.report import cpu_table, summarise
from bench.workloads import _client_cpu

GiB = 2**30
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"


@dataclass
class Daemon:
    pid: int


@dataclass
class View:
    daemon: Daemon | None


def test_a_runs_cpu_counts_the_daemon_and_the_reading_command() -> None:
    alone: list[float] = []
    with _client_cpu(View(None), GiB, alone):  # the command only
        subprocess.run([sys.executable, "-c", BUSY], check=True)
    with_daemon: list[float] = []
    with _client_cpu(View(Daemon(os.getpid())), GiB // 2, with_daemon):  # and a daemon
        subprocess.run([sys.executable, "-c", BUSY], check=True)
        t = os.times()
        while os.times().user + os.times().system - t.user - t.system < 0.3:
            pass
    assert 0.25 <= alone[0] < 1.5
    assert with_daemon[0] >= 2 * (0.25 + 0.25)  # both, over half a GiB


def test_the_table_shows_each_contenders_median_per_profile_and_workload() -> None:
    workloads: dict[str, Any] = {
        "cold_seq": {"unit": "MiB/s", "higher_is_better": True,
                     "runs": {"flowfs": [300.0], "curl": [100.0]},
                     "client_cpu_s_per_gib": {"flowfs": [1.0, 3.0, 2.0], "curl": [0.5]}},
        "bam_queries": {"unit": "s", "higher_is_better": False, "runs": {"flowfs": [1.0]}},
    }
    summarise(workloads)
    table = cpu_table({"wan50": {"workloads": workloads}})
    assert table.splitlines()[0] == "| profile | workload | flowfs | curl |"
    assert "| wan50 | cold sequential | 2.00 | 0.50 |" in table
    assert "BAM" not in table
    assert cpu_table({"wan50": {"workloads": {"bam_queries": workloads["bam_queries"]}}}) == ""
