"""CI guard of the read path's speed where users live: a cold sequential read through flowfs,
over HTTPS, against ``rclone mount`` (Debian's, http backend, defaults), same file, same
nginx, same run; on loopback, and over the emulated ``wan50`` link (50 ms per request,
50 MiB/s per reply: ``bench/links.py``).

A tripwire for regressions, not the targets (those are bench/run's, docs/performance.md):
on loopback, where both are bound by two cores' TLS and flowfs is at par with rclone (its
rounds move by +-20% with the machine's load), flowfs must keep 0.8x rclone's median; over
wan50, where flowfs keeps many requests in flight and rclone reads one stream (~5x), 1.5x.

Like for like: rclone reads without a cache on disk, so flowfs does too
(``--no-disk-cache``; what its disk cache costs a first read is bench/run's ``disk``
workload). Only a ratio of medians is asserted, never an absolute time, so a slow or busy
machine does not fail it; alternating rounds on fresh mounts keep the two under the same
conditions. The full side-by-side benchmark is ``bench/run`` (docs/performance.md).

nginx, its echo module, rclone, curl and openssl are installed with apt-get when missing (as
root, once); a test is skipped, saying why, when they cannot be had or FUSE is not available.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from bench import tls
from bench.data import Item, MiB, catalog_json, write_random
from bench.links import LINKS
from bench.nginx import echo_module, gateway, nginx_binary
from bench.procs import Workspace, run_timed, warm
from bench.services import Contender, reference_server

REPO = Path(__file__).resolve().parents[2]

# The install may take minutes on a fresh machine; the measurement itself takes ~20-40 s.
pytestmark = [pytest.mark.mount, pytest.mark.timeout(480)]

# Over the emulated link a single stream is capped at 50 MiB/s: 128 MiB is ~2.5 s a read.
SIZES = {"loopback": 256 * MiB, "wan50": 128 * MiB}
FLOOR = {"loopback": 0.8, "wan50": 1.5}  # flowfs / rclone, medians
ROUNDS = 5
INSTALL_TIMEOUT = 300


def _missing(link: str) -> list[str]:
    """Debian packages this link's test needs and does not have."""
    wanted = {"nginx": os.path.exists(nginx_binary()) or bool(shutil.which("nginx")),
              "rclone": bool(shutil.which("rclone")), "curl": bool(shutil.which("curl")),
              "openssl": bool(shutil.which("openssl"))}
    if LINKS[link].emulated:
        wanted["libnginx-mod-http-echo"] = echo_module() is not None
    return [name for name, present in wanted.items() if not present]


def _apt_install(packages: list[str]) -> str | None:
    """Install with apt-get; None on success, else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root, or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "install", "-y", "-qq", *packages],
                 ["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            proc = subprocess.run(step, capture_output=True, timeout=INSTALL_TIMEOUT, env=env,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            return f"{' '.join(step)} took over {INSTALL_TIMEOUT} s"
        if proc.returncode == 0 and step[1] == "install":
            return None
    return proc.stderr.decode(errors="replace").strip()[-300:]


def _peers(link: str) -> None:
    """The tools present (installed if need be) and FUSE usable; else skip, saying why."""
    if not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")):
        pytest.skip("needs /dev/fuse and fusermount3")
    missing = _missing(link)
    if missing:
        why = _apt_install(missing)
        if why is not None or _missing(link):
            pytest.skip(f"cannot install {', '.join(missing)}: {why}")


@pytest.mark.parametrize("link", list(SIZES))
def test_cold_sequential_read_over_https_keeps_its_ratio_to_rclone(
        link: str, tmp_path: Path) -> None:
    _peers(link)
    size = SIZES[link]
    source = tmp_path / "files" / "smoke.bin"
    md5 = write_random(source, size, seed=7)
    item = Item("100", "smoke", "smoke.bin", source, size)
    catalog = catalog_json(tmp_path, [item], {source: md5})
    ws = Workspace(tmp_path / "work")
    certs = tls.make(ws.dir("tls"))
    speeds: dict[str, list[float]] = {"flowfs": [], "rclone": []}
    with contextlib.ExitStack() as stack:
        export = ws.dir("export")
        server = stack.enter_context(reference_server(ws, "smoke", catalog, export_dir=export))
        urls = stack.enter_context(gateway(ws, link, LINKS[link], export=export,
                                           api=server.api, certs=certs))
        assert urls.files.startswith("https://") and urls.api.startswith("https://")
        contenders = {name: Contender(name, ws, urls, certs, disk_cache=False)
                      for name in speeds}
        for _ in range(ROUNDS):
            for name, contender in contenders.items():
                with contender.fresh() as view:  # a new mount: nothing of the file cached
                    warm([source])  # nginx serves from memory, for both alike
                    seconds = run_timed(view.read_cmd(item), timeout=120)
                    speeds[name].append(size / MiB / seconds)
    flowfs, rclone = (statistics.median(speeds[n]) for n in ("flowfs", "rclone"))
    rounds = ", ".join(f"{n}: {[round(s) for s in v]}" for n, v in speeds.items())
    assert flowfs >= FLOOR[link] * rclone, (
        f"cold sequential read over {link}: flowfs {flowfs:.0f} MiB/s < {FLOOR[link]} x "
        f"rclone {rclone:.0f} MiB/s (median of {ROUNDS}; MiB/s per round {rounds})")
