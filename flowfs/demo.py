"""`flowfs demo`: the first five minutes, on any machine, offline.

Generates demo data, starts the reference server on a free loopback port,
mounts it as alice, shows a short tour with real tools (a bulk ZIP through
``.downloads/`` included), says how to reach the server from another terminal,
then waits for Ctrl-C (or, with ``--no-wait``, ends at once) and stops
everything it started.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from flowfs import processes
from flowfs.errors import FlowError

DEMO_USER, DEMO_PASSWORD = "alice", "alice-pw"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    from flowfs.server.demodata import generate

    _say("Generating demo data (FASTQ, BAM+BAI, VCF+TBI, counts, reports)...")
    catalog = generate(workdir / "data")
    log = workdir / "server.log"
    try:
        return processes.start_server(catalog, workdir, stdout=log)
    except (processes.ChildExited, TimeoutError):
        raise FlowError(f"the reference server did not start; see {log}") from None


def _mount(mountpoint: Path, urls: dict[str, str], config_home: Path) -> None:
    env = {**os.environ, "FLOW_USERNAME": DEMO_USER, "FLOW_PASSWORD": DEMO_PASSWORD}
    for name in ("FLOW_API_TOKEN", "FLOW_TOKEN_FILE"):
        env.pop(name, None)
    env["XDG_CONFIG_HOME"] = str(config_home)  # not the user's own session or config
    # The demo's blocks go to a cache of its own, removed with it: not the user's.
    cache = config_home.parent / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "flowfs", "mount", str(mountpoint),
         "--api-url", urls["api"], "--files-url", urls["files"], "--cache-dir", str(cache)],
        env=env, timeout=120, check=False)
    if proc.returncode != 0:
        raise FlowError("the demo mount failed (see the message above)")


def _show(cmd: str, cwd: Path) -> None:
    _say(f"\n$ {cmd}")
    # `flowfs` in the tour is this flowfs, even when its bin/ is not on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    proc = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PATH": path})
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
    _say("\nMany files as one ZIP, built by the server: write a manifest into .downloads/.")
    _show(f"printf '%s\\n' {sample} > .downloads/liver_1.manifest", mountpoint)
    _show("cat .downloads/liver_1.status", mountpoint)
    _show("flowfs downloads wait liver_1 --timeout 50", mountpoint)
    _show("unzip -l .downloads/liver_1.zip", mountpoint)


def login_lines(urls: dict[str, str], config_home: Path) -> list[str]:
    """What a user pastes into another terminal to use the demo server.

    A config dir of the demo's own keeps the demo session apart from the user's
    real Flow login (``flowfs login`` stores one session).
    """
    api = shlex.quote(urls["api"])
    flowfs = flowfs_command()
    return [
        f"export XDG_CONFIG_HOME={shlex.quote(str(config_home))} FLOW_API_URL={api}",
        f"printf '%s\\n' {DEMO_PASSWORD} | {flowfs} login --username {DEMO_USER} "
        "--password-stdin",
        f"{flowfs} whoami",
    ]


def flowfs_command() -> str:
    """How another terminal runs this flowfs: `flowfs` if PATH finds it, else its full path."""
    mine = Path(sys.executable).parent / "flowfs"
    found = shutil.which("flowfs")
    if found is not None and (not mine.exists() or Path(found).resolve() == mine.resolve()):
        return "flowfs"
    if mine.exists():
        return shlex.quote(str(mine))
    return f"{shlex.quote(sys.executable)} -m flowfs"


def run_demo(mountpoint: Path | None, wait: bool) -> int:
    """Start, mount, tour, then wait for Ctrl-C; everything started is stopped on the way out."""
    from flowfs.mount import unmount

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowfs-demo-")))
        mp = mountpoint or workdir / "flow"
        mp.mkdir(parents=True, exist_ok=True)
        server, urls = _start_server(workdir)
        stack.callback(processes.stop, server)
        config_home = workdir / "config"
        _mount(mp, urls, config_home)
        stack.callback(lambda: _say(f"\n{mp}: {unmount(mp)}; server stopped."))
        _say(f"The demo Flow server: {urls['api']} (files: {urls['files']}); "
             f"users {DEMO_USER}/{DEMO_PASSWORD} and bob/bob-pw.")
        tour(mp)
        if wait:
            _say(f"\nTry it yourself in another terminal: cd {shlex.quote(str(mp))}")
            _say("To log in to the demo server there (a session of its own; your real "
                 "Flow login stays):")
            for line in login_lines(urls, config_home):
                _say(f"  {line}")
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
