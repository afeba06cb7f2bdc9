"""Failures recorded by the FUSE boundary, their human form, and the Prometheus exposition."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowfs.config import parse_addr
from flowfs.failures import Failures
from flowfs.metrics import METRICS, answer, exposition
from flowfs.status_cli import MountStatus, render

STATS: dict[str, Any] = {
    "version": "1.2.3", "mountpoint": '/home/al"ice\\flow', "uptime": 12.5,
    "cache_size": 512 * 2**20,
    "cache": {"hits": 7, "misses": 3, "cached_bytes": 3 * 2**20, "fetches": 4,
              "fetch_errors": 2, "timeouts": 1},
    "api": {"requests": 12, "bytes_fetched": 5 * 2**20},
    "link": {"latency_ms": 12.5, "rate_mib_s": 40.0, "samples": 9},
    "inodes": 99, "downloads": {"jobs": 2, "active": 1},
    "failures": {"count": 3, "by_error": {"EACCES": 1, "EIO": 2},
                 "last": {"operation": "read", "error": "EIO", "at": 1700000000.5,
                          "message": "samples/s1/r.bam (data id 7) at 0+4096: read timed out"}},
}


# -- failures ------------------------------------------------------------------------------

def test_only_failures_a_user_cannot_explain_are_counted() -> None:
    failures = Failures(clock=lambda: 100.0)
    failures.record("lookup", errno.ENOENT, "no such name")
    failures.record("write", errno.EROFS, "read-only file system")
    assert failures.count == 0 and failures.last is None
    failures.record("read", errno.EIO, "x.bam (data id 7): read timed out after 60 s")
    failures.record("opendir", errno.EACCES, "refused")
    assert failures.as_json() == {
        "count": 2, "by_error": {"EACCES": 1, "EIO": 1},
        "last": {"operation": "opendir", "error": "EACCES", "message": "refused", "at": 100.0}}


@pytest.mark.parametrize("secret", [
    "https://alice:hunter2hunter2@proxy.example:3128",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlc2ln",
])
def test_a_failure_message_never_carries_a_secret(secret: str) -> None:
    failures = Failures()
    failures.record("read", errno.EIO, f"cannot reach {secret}: refused")
    assert failures.last is not None
    assert "hunter2" not in failures.last.message
    assert "c2lnbmF0dXJlc2ln" not in failures.last.message


def test_a_long_failure_message_is_cut() -> None:
    failures = Failures()
    failures.record("read", errno.EIO, "x" * 10_000)
    assert failures.last is not None and len(failures.last.message) <= 500


def test_status_shows_errors_timeouts_and_the_last_failure() -> None:
    text = render(MountStatus(Path("/m"), STATS), now=1700000125.5)
    assert ("  errors   3 failed requests (1 EACCES, 2 EIO); 2 failed fetches, 1 read timeouts"
            in text.splitlines())
    last = [line for line in text.splitlines() if line.startswith("  last ")]
    assert len(last) == 1
    assert "(2m05s ago): read answered EIO: samples/s1/r.bam (data id 7) at 0+4096: " \
           "read timed out" in last[0]


def test_status_of_a_mount_without_failures_says_none() -> None:
    stats = {**STATS, "failures": {"count": 0, "by_error": {}, "last": None},
             "cache": {"fetch_errors": 0, "timeouts": 0}}
    text = render(MountStatus(Path("/m"), stats))
    assert "  errors   0 failed requests; 0 failed fetches, 0 read timeouts" in text
    assert "  last " not in text


# -- the exposition --------------------------------------------------------------------------

def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_the_exposition_parses_and_carries_every_counter_of_stats() -> None:
    families = _families(exposition(STATS))
    # prometheus_client names a counter family without its _total suffix
    expected = {m.name.removesuffix("_total") if m.kind == "counter" else m.name
                for m in METRICS}
    assert expected | {"flowfs_info", "flowfs_failures_by_error"} == set(families)
    for metric in METRICS:
        family = families[metric.name.removesuffix("_total") if metric.kind == "counter"
                          else metric.name]
        assert family.type == metric.kind
        assert family.documentation == metric.help
    sample = {s.name: s for f in families.values() for s in f.samples}
    assert sample["flowfs_cache_hits_total"].value == 7
    assert sample["flowfs_read_timeouts_total"].value == 1
    assert sample["flowfs_fetched_bytes_total"].value == 5 * 2**20
    assert sample["flowfs_link_latency_seconds"].value == pytest.approx(0.0125)
    assert sample["flowfs_link_rate_bytes_per_second"].value == 40 * 2**20
    assert sample["flowfs_last_failure_timestamp_seconds"].value == 1700000000.5
    assert sample["flowfs_cache_hits_total"].labels == {"mountpoint": '/home/al"ice\\flow'}
    by_error = {s.labels["errno"]: s.value for s in families["flowfs_failures_by_error"].samples}
    assert by_error == {"EACCES": 1, "EIO": 2}


def test_the_exposition_is_strictly_the_text_format() -> None:
    # what the parser above forgives: one HELP and TYPE per family, before its samples
    line = re.compile(r'^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+\{(?:[a-z]+="(?:[^"\\\n]|\\.)*",?)+\}'
                      r" -?[0-9.e+]+)$")
    text = exposition(STATS)
    assert text.endswith("\n")
    seen: set[str] = set()
    for row in text.splitlines():
        assert line.match(row), row
        if row.startswith("# TYPE"):
            name = row.split()[2]
            assert name not in seen
            seen.add(name)


def test_a_stats_document_without_some_parts_still_exposes_the_rest() -> None:
    families = _families(exposition({"mountpoint": "/m", "inodes": 3, "link": None}))
    assert families["flowfs_inodes"].samples[0].value == 3
    assert "flowfs_link_latency_seconds" not in families


# -- over HTTP --------------------------------------------------------------------------------

def test_metrics_are_served_on_get_and_only_there() -> None:
    body = "flowfs_inodes 1\n"
    reply = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", lambda: body)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4" in reply
    assert reply.endswith(b"\r\n\r\n" + body.encode())
    head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", lambda: body)
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert answer(b"GET / HTTP/1.1\r\n\r\n", lambda: body).startswith(b"HTTP/1.1 404")
    assert answer(b"POST /metrics HTTP/1.1\r\n\r\n", lambda: body).startswith(b"HTTP/1.1 405")
    assert answer(b"\x00garbage\r\n\r\n", lambda: body).startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(("text", "addr"), [
    ("9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9464", ("::1", 9464)),
    ("localhost:0", ("localhost", 0)),
])
def test_a_metrics_address_defaults_to_loopback(text: str, addr: tuple[str, int]) -> None:
    assert parse_addr(text) == addr


@pytest.mark.parametrize("text", ["", "host", "host:port", "1.2.3.4:70000", ":-1"])
def test_a_bad_metrics_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_addr(text)
