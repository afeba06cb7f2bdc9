"""What a mount tells about itself: `flowfs status`'s failures, `.flowfs/metrics` and
`--metrics-addr`, against the reference server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from harness import MountFactory, Processes, Server, closed_port, flowfs, md5s, sh, user_env
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.mount

BAM = "projects/Liver RNA-seq/samples/liver_1/liver_1.bam"


def samples(text: str) -> dict[str, float]:
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples}


def test_metrics_file_and_endpoint_carry_the_stats_counters(
        server: Server, mounts: MountFactory) -> None:
    port = closed_port()
    mount = mounts(server, "alice", "--metrics-addr", f"127.0.0.1:{port}")
    assert not md5s([mount.p(BAM)])[mount.p(BAM)].startswith("error")
    stats = json.loads(sh("cat", mount.p(".flowfs/stats")).stdout)
    from_file = samples(sh("cat", mount.p(".flowfs/metrics")).stdout.decode())
    assert from_file["flowfs_fetched_bytes_total"] >= stats["api"]["bytes_fetched"] > 0
    assert from_file["flowfs_cache_misses_total"] >= stats["cache"]["misses"] > 0
    assert from_file["flowfs_inodes"] > 0 and from_file["flowfs_failures_total"] == 0
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    served = samples(reply.text)
    assert served["flowfs_api_requests_total"] >= from_file["flowfs_api_requests_total"]
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 404


def test_status_shows_the_last_failure_with_its_path(demo: Path, processes: Processes) -> None:
    server = processes.server(demo)
    env = user_env("alice", "alice-pw")
    mount = processes.mount(server, env, "--io-timeout", "2")
    sh("ls", mount.p("projects/Liver RNA-seq/samples/liver_1"))
    server.stop()  # the file's bytes can no longer be fetched
    assert md5s([mount.p(BAM)])[mount.p(BAM)].startswith("error")
    shown = flowfs("status", str(mount.path), env=env)
    text = shown.stdout.decode()
    assert shown.returncode == 0, shown.stderr
    errors = next(line for line in text.splitlines() if line.startswith("  errors "))
    assert "EIO" in errors, text
    last = next(line for line in text.splitlines() if line.startswith("  last "))
    assert "read answered EIO" in last and "liver_1.bam (data id " in last, text
    metrics = samples(sh("cat", mount.p(".flowfs/metrics")).stdout.decode())
    assert metrics["flowfs_failures_total"] >= 1
