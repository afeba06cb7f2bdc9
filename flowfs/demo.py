"""`flowfs demo`: the first five minutes, on any machine, offline.

Generates demo data, starts the reference server on a free loopback port,
mounts it as alice, shows a short tour with real tools, then waits for
Ctrl-C (or, with ``--no-wait``, ends at once) and stops everything it started.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from flowfs.errors import FlowError

DEMO_USER, DEMO_PASSWORD = "alice", "alice-pw"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    from flowfs.server.demodata import generate

    _say("Generating demo data (FASTQ, BAM+BAI, VCF+TBI, counts, reports)...")
    catalog = generate(workdir / "data")
    ready = workdir / "ready.json"
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfs.server", "--catalog", str(catalog), "--port", "0",
         "--state-dir", str(workdir / "state"), "--ready-file", str(ready)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise FlowError(f"the reference server did not start; see {workdir / 'server.log'}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def _mount(mountpoint: Path, urls: dict[str, str]) -> None:
    env = {**os.environ, "FLOW_USERNAME": DEMO_USER, "FLOW_PASSWORD": DEMO_PASSWORD}
    for name in ("FLOW_API_TOKEN", "FLOW_TOKEN_FILE"):
        env.pop(name, None)
    env["XDG_CONFIG_HOME"] = str(mountpoint.parent / ".flowfs-demo-config")  # no stored session
    proc = subprocess.run(
        [sys.executable, "-m", "flowfs", "mount", str(mountpoint),
         "--api-url", urls["api"], "--files-url", urls["files"]],
        env=env, timeout=120, check=False)
    if proc.returncode != 0:
        raise FlowError("the demo mount failed (see the message above)")


def _show(cmd: str, cwd: Path) -> None:
    _say(f"\n$ {cmd}")
    proc = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    lines = (proc.stdout + proc.stderr).rstrip("\n").splitlines()
    for line in lines[:14]:
        _say("  " + line[:110])
    if len(lines) > 14:
        _say(f"  ... ({len(lines) - 14} more lines)")


def tour(mountpoint: Path) -> None:
    """A few commands a scientist would type, run for real inside the mount."""
    sample = "projects/'Liver RNA-seq'/samples/liver_1"
    _say(f"\nFlow is mounted at {mountpoint} (as user '{DEMO_USER}'). A short tour:")
    _say(f"\n$ cd {shlex.quote(str(mountpoint))}")
    _show("ls . projects", mountpoint)
    _show(f"ls -l {sample}", mountpoint)
    _show(f"zcat {sample}/liver_1_R1.fastq.gz | head -4", mountpoint)
    _show(f"samtools view -c {sample}/liver_1.bam chr1:1-50000", mountpoint)
    _show(f"getfattr -d {sample}/liver_1.bam", mountpoint)
    _show("find projects/'Liver RNA-seq'/executions -type f | head -5", mountpoint)


def run_demo(mountpoint: Path | None, wait: bool) -> int:
    """Start, mount, tour, then wait for Ctrl-C; everything started is stopped on the way out."""
    from flowfs.mount import unmount

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowfs-demo-")))
        mp = mountpoint or workdir / "flow"
        mp.mkdir(parents=True, exist_ok=True)
        server, urls = _start_server(workdir)
        stack.callback(_stop, server)
        _mount(mp, urls)
        stack.callback(lambda: _say(f"\n{mp}: {unmount(mp)}; server stopped."))
        tour(mp)
        if wait:
            _say(f"\nTry it yourself in another terminal: cd {shlex.quote(str(mp))}")
            _say("Press Ctrl-C to unmount and stop the demo server.")
            _wait_for_interrupt()
    return 0


def _wait_for_interrupt() -> None:
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # delivered to sigwait, not a handler
    try:
        signal.sigwait(signals)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
