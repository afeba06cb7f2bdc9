"""CI guard of the read path's speed: a cold sequential read through flowfs is at least as fast
as through ``rclone mount`` (http backend, defaults), same file, same nginx, same run.

Only a ratio of medians is asserted, never an absolute time, so a slow or busy machine does
not fail it; alternating rounds on fresh mounts keep the two under the same conditions. The
full side-by-side benchmark is ``bench/run`` (docs/performance.md).

nginx and rclone are installed with apt-get when missing (as root, once); the test is skipped,
saying why, when they cannot be had or FUSE is not available.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the harness lives in bench/, beside tests/
    sys.path.insert(0, str(REPO))

from bench.data import Item, MiB, catalog_json, write_random  # noqa: E402
from bench.procs import run_timed, warm  # noqa: E402
from bench.services import Contender, Workspace, nginx, nginx_binary, reference_server  # noqa: E402

# The install may take minutes on a fresh machine; the measurement itself takes ~20 s.
pytestmark = [pytest.mark.mount, pytest.mark.timeout(420)]

SIZE = 256 * MiB
ROUNDS = 5
INSTALL_TIMEOUT = 300


def _missing() -> list[str]:
    wanted = {"nginx": os.path.exists(nginx_binary()) or bool(shutil.which("nginx")),
              "rclone": bool(shutil.which("rclone")), "curl": bool(shutil.which("curl"))}
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


@pytest.fixture(scope="module")
def peers() -> None:
    """nginx and rclone present (installed if need be) and FUSE usable; else skip."""
    if not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")):
        pytest.skip("needs /dev/fuse and fusermount3")
    missing = _missing()
    if missing:
        why = _apt_install(missing)
        if why is not None or _missing():
            pytest.skip(f"cannot install {', '.join(missing)}: {why}")


def test_cold_sequential_read_at_least_as_fast_as_rclone(peers: None, tmp_path: Path) -> None:
    source = tmp_path / "files" / "smoke.bin"
    md5 = write_random(source, SIZE, seed=7)
    item = Item("100", "smoke", "smoke.bin", source, SIZE)
    catalog = catalog_json(tmp_path, [item], {source: md5})
    ws = Workspace(tmp_path / "work")
    speeds: dict[str, list[float]] = {"flowfs": [], "rclone": []}
    with contextlib.ExitStack() as stack:
        export = ws.dir("export")
        files = stack.enter_context(nginx(ws, export))
        server = stack.enter_context(
            reference_server(ws, "smoke", catalog, files_url=files, export_dir=export))
        contenders = {name: Contender(name, ws, name, files, api=server.api)
                      for name in speeds}
        for _ in range(ROUNDS):
            for name, contender in contenders.items():
                with contender.fresh() as view:  # a new mount: nothing of the file cached
                    warm([source])  # nginx serves from memory, for both alike
                    seconds = run_timed(view.read_cmd(item), timeout=60)
                    speeds[name].append(SIZE / MiB / seconds)
    flowfs, rclone = (statistics.median(speeds[n]) for n in ("flowfs", "rclone"))
    rounds = ", ".join(f"{n}: {[round(s) for s in v]}" for n, v in speeds.items())
    assert flowfs >= rclone, (
        f"cold sequential read: flowfs {flowfs:.0f} MiB/s < rclone {rclone:.0f} MiB/s "
        f"(median of {ROUNDS}; MiB/s per round {rounds})")
