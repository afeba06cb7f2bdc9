"""The benchmark's emulated links: profiles as data, nginx's configuration for them, the
bench's own CA, and (with nginx and its echo module installed) what a client really sees
through a delayed, capped HTTPS link. Then results.json: a section per profile, kept across
runs, and old single-run files read as their plain-HTTP profile.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from bench import links, report, tls
from bench.links import LINKS, Link
from bench.nginx import echo_module, gateway, nginx_binary, render
from bench.procs import Workspace
from bench.services import reference_server

REPO = Path(__file__).resolve().parents[2]

MiB = 1 << 20


# -- profiles ---------------------------------------------------------------------------------

def test_default_profiles_are_https_loopback_and_wan50() -> None:
    chosen = links.select(None)
    assert [link.name for link in chosen] == ["loopback", "wan50"]
    assert all(link.tls for link in chosen)


def test_profiles_can_be_given_repeated_comma_separated_or_all() -> None:
    assert [x.name for x in links.select(["wan100,wan10", "wan100"])] == ["wan100", "wan10"]
    assert [x.name for x in links.select(["all"])] == list(LINKS)
    with pytest.raises(ValueError, match="wan5"):
        links.select(["wan5"])


def test_only_the_old_plain_profile_reaches_the_api_directly() -> None:
    assert [n for n, link in LINKS.items() if not link.api_via_nginx] == ["http-loopback"]
    assert not LINKS["http-loopback"].tls and not LINKS["loopback"].emulated


# -- nginx's configuration --------------------------------------------------------------------

def _certs(tmp_path: Path) -> tls.Certificates:
    return tls.Certificates(ca=tmp_path / "ca.pem", cert=tmp_path / "s.pem",
                            key=tmp_path / "s.key")


@pytest.mark.skipif(echo_module() is None, reason="needs libnginx-mod-http-echo")
def test_wan_profile_delays_then_caps_both_files_and_api(tmp_path: Path) -> None:
    conf = render(tmp_path, 4433, LINKS["wan50"], export=tmp_path / "export",
                  api_hostport="127.0.0.1:8000", certs=_certs(tmp_path))
    assert "listen 127.0.0.1:4433 ssl;" in conf and f"ssl_certificate {tmp_path}/s.pem" in conf
    for prefix, name in (("/downloads/", "files"), ("/api/", "api")):
        entry = conf.index(f"location {prefix} {{")
        named = conf.index(f"location @{name} {{")
        assert "echo_sleep 0.050;" in conf[entry:named]
        assert f"echo_exec @{name};" in conf[entry:named]
        assert "limit_rate 52428800;" in conf[named:conf.index("}", named)]
    assert "server 127.0.0.1:8000;" in conf


def test_plain_profile_has_neither_tls_nor_delay(tmp_path: Path) -> None:
    conf = render(tmp_path, 8080, LINKS["http-loopback"], export=tmp_path / "export")
    assert "listen 127.0.0.1:8080;" in conf
    assert "ssl" not in conf and "echo" not in conf and "limit_rate" not in conf
    assert "location /api/" not in conf


# -- the bench's CA ---------------------------------------------------------------------------

def test_server_certificate_verifies_for_loopback_with_the_bench_ca_only(tmp_path: Path) -> None:
    certs = tls.make(tmp_path / "tls")
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), "-verify_ip",
                         "127.0.0.1", str(certs.cert)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    elsewhere = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), "-verify_ip",
                                "10.0.0.1", str(certs.cert)], capture_output=True, text=True)
    assert elsewhere.returncode != 0
    assert (certs.key.stat().st_mode & 0o077) == 0
    assert certs.client_env()["SSL_CERT_FILE"] == str(certs.ca)


# -- through a real nginx ---------------------------------------------------------------------

@pytest.fixture
def served(tmp_path: Path) -> tuple[Workspace, Path, bytes]:
    if not Path(nginx_binary()).exists() or echo_module() is None:
        pytest.skip("needs nginx and libnginx-mod-http-echo (bench/run installs them)")
    ws = Workspace(tmp_path / "work")
    body = bytes(range(256)) * (3 * MiB // 256)
    target = ws.dir("export", "downloads", "7") / "f.bin"
    target.write_bytes(body)
    return ws, ws.root / "export", body


def test_emulated_link_delays_each_request_and_keeps_range_semantics(
        served: tuple[Workspace, Path, bytes]) -> None:
    ws, export, body = served
    certs = tls.make(ws.dir("tls"))
    link = Link("slow", tls=True, delay_s=0.2, rate_mib_s=1)
    context = ssl.create_default_context(cafile=str(certs.ca))
    with gateway(ws, "slow", link, export=export, certs=certs) as urls, httpx.Client(
            verify=context) as client:
        url = f"{urls.files}/downloads/7/f.bin"
        for _ in range(2):  # the second on a kept-alive connection: delayed all the same
            start = time.monotonic()
            reply = client.get(url, headers={"Range": "bytes=1000-1999"})
            assert time.monotonic() - start >= 0.2
            assert reply.status_code == 206
            assert reply.headers["content-range"] == f"bytes 1000-1999/{len(body)}"
            assert reply.content == body[1000:2000]
        start = time.monotonic()
        head = client.head(url)
        assert time.monotonic() - start >= 0.2
        assert int(head.headers["content-length"]) == len(body)
        start = time.monotonic()
        whole = client.get(url)
        # nginx lets the first second's worth through at once, then holds to the cap.
        assert time.monotonic() - start >= 0.2 + (len(body) / MiB - 1) / 1 - 0.1
        assert whole.content == body


def test_nginx_counts_each_file_request_it_answers_over_a_delayed_link(
        served: tuple[Workspace, Path, bytes]) -> None:
    """The disk workload's proof of "no request for cached bytes" is nginx's own count."""
    ws, export, _ = served
    certs = tls.make(ws.dir("tls"))
    link = Link("counted", tls=True, delay_s=0.01)
    context = ssl.create_default_context(cafile=str(certs.ca))
    with gateway(ws, "counted", link, export=export, certs=certs) as urls, httpx.Client(
            verify=context) as client:
        assert urls.file_requests() == 0
        for n in range(1, 4):
            reply = client.get(f"{urls.files}/downloads/7/f.bin",
                               headers={"Range": f"bytes=0-{n}"})
            assert reply.status_code == 206
            deadline = time.monotonic() + 10  # logged once the reply is sent: poll
            while urls.file_requests() < n and time.monotonic() < deadline:
                time.sleep(0.01)
            assert urls.settled_file_requests(quiet=0.2) == n


def test_the_api_is_reached_through_the_same_delay_over_https(
        served: tuple[Workspace, Path, bytes], tmp_path: Path) -> None:
    ws, _, _ = served
    certs = tls.make(ws.dir("tls"))
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"users": [], "projects": [], "samples": [], "data": []}\n')
    link = Link("slow", tls=True, delay_s=0.2)
    context = ssl.create_default_context(cafile=str(certs.ca))
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(reference_server(ws, "api", catalog))
        urls = stack.enter_context(gateway(ws, "api", link, api=server.api, certs=certs))
        client = stack.enter_context(httpx.Client(verify=context))
        assert urls.api.startswith("https://") and urls.api.endswith("/api")
        start = time.monotonic()
        reply = client.get(f"{urls.api}/me")
        assert time.monotonic() - start >= 0.2
        assert reply.status_code == 401  # the server's own answer, through nginx
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{urls.api}/me", verify=ssl.create_default_context())  # system CAs


# -- results.json -----------------------------------------------------------------------------

def _section(name: str, date: str, flowfs: float, curl: float) -> dict[str, object]:
    workloads = {"cold_seq": {"unit": "MiB/s", "higher_is_better": True,
                              "runs": {"flowfs": [flowfs], "rclone": [100.0],
                                       "rclone_current": [150.0], "curl": [curl]}},
                 "bam_queries": {"unit": "s", "higher_is_better": False,
                                 "runs": {"flowfs": [2.0], "samtools_http": [6.0],
                                          "rclone": [4.0]}}}
    report.summarise(workloads)
    return {"date": date, "link": {"name": name}, "workloads": workloads,
            "comparison": report.comparison(workloads)}


def test_speedups_favour_flowfs_above_one_for_rates_and_for_times() -> None:
    section = _section("wan50", "2026-01-02", flowfs=300.0, curl=600.0)
    seq = section["comparison"]["cold_seq"]  # type: ignore[index]
    assert (seq["best_rclone"], seq["vs_best_rclone"], seq["vs_curl"]) == (
        "rclone_current", 2.0, 0.5)
    bam = section["comparison"]["bam_queries"]  # type: ignore[index]
    assert (bam["best_rclone"], bam["vs_best_rclone"], bam["vs_samtools_http"]) == (
        "rclone", 2.0, 3.0)


def test_a_run_replaces_its_profiles_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    report.write(out, report.merge(out, {
        "loopback": _section("loopback", "2026-01-01", 500, 900),
        "wan50": _section("wan50", "2026-01-01", 60, 50)}))
    doc = report.merge(out, {"wan50": _section("wan50", "2026-01-03", 70, 50)})
    assert list(doc["profiles"]) == ["loopback", "wan50"]
    assert doc["profiles"]["loopback"]["date"] == "2026-01-01"
    assert doc["profiles"]["wan50"]["date"] == "2026-01-03"
    assert doc["updated"] == "2026-01-03" and doc["measured_now"] == ["wan50"]


def test_results_from_before_the_profiles_read_as_the_plain_http_profile(
        tmp_path: Path) -> None:
    old = {"date": "2026-11-23T15:20:48+00:00", "profile": "full", "machine": {},
           "versions": {}, "workloads": {"cold_seq": {"unit": "MiB/s", "runs": {
               "flowfs": [650.0], "rclone": [374.0], "rclone_full": [284.0]}}}}
    out = tmp_path / "results.json"
    report.write(out, old)
    doc = report.merge(out, {"loopback": _section("loopback", "2026-12-06", 300, 700)})
    assert list(doc["profiles"]) == ["http-loopback", "loopback"]
    plain = doc["profiles"]["http-loopback"]
    assert plain["date"] == old["date"] and plain["link"]["tls"] is False
    assert plain["comparison"]["cold_seq"]["best_rclone"] == "rclone"
    assert round(plain["comparison"]["cold_seq"]["vs_best_rclone"], 2) == 1.74


def _disk(on: float, off: float, reread: float, local: float, full: float,
          asked: list[int], bam_asked: list[int]) -> list[report.Target]:
    workloads = {
        "disk_first_read": {"unit": "MiB/s", "higher_is_better": True,
                            "runs": {"flowfs": [off], "flowfs_disk": [on]}},
        "disk_reread": {"unit": "MiB/s", "higher_is_better": True,
                        "runs": {"flowfs_disk": [reread], "local": [local],
                                 "rclone_current_full": [full]},
                        "file_requests": {"flowfs_disk": asked, "rclone_current_full": [3]}},
        "disk_bam": {"unit": "s", "higher_is_better": False,
                     "runs": {"first": [4.0], "after_remount": [1.0]},
                     "file_requests": {"first": [90], "after_remount": bam_asked}}}
    report.summarise(workloads)
    return [t for t in report.targets(workloads, 612) if t.workload.startswith(
        ("first read with the disk", "re-read after a remount", "BAM region queries again"))]


def test_disk_targets_hold_only_when_every_bound_holds() -> None:
    met = _disk(on=950, off=1000, reread=900, local=1000, full=500, asked=[0, 0],
                bam_asked=[0])
    assert [t.met for t in met] == [True, True, True, True, True]
    missed = _disk(on=800, off=1000, reread=700, local=1000, full=500, asked=[0, 2],
                   bam_asked=[1])
    assert [t.met for t in missed] == [False, False, False, False, False]
    assert "2 file requests" in missed[1].measured and "70%" in missed[2].measured


def test_disk_targets_are_not_measured_without_the_disk_workload() -> None:
    workloads: dict[str, report.Result] = {}
    rows = [t for t in report.targets(workloads, 612) if "disk" in t.workload
            or "remount" in t.workload]
    assert rows and all(t.met is None and t.measured == "not measured" for t in rows)
