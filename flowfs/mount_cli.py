"""`flowfs mount` and `flowfs umount`: run the daemon, detached or in the foreground.

``mount`` checks the mount point, then either runs the mount in this process
(``--foreground``) or starts ``mount --foreground`` again in a new session with its
output in the log file, and waits on a pipe for the child to say ``ok`` (the mount
answers) or ``error: ...``: the command's exit status tells whether the mount works.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flowfs.config import MountConfig, state_dir
from flowfs.errors import ConfigError, FlowError
from flowfs.settings import from_args, mount_config

if TYPE_CHECKING:
    import argparse

    from flowfs.logs import Redactor

READY_FD_ENV = "FLOWFS_READY_FD"
READY_TIMEOUT = 90.0


def cmd_mount(args: argparse.Namespace) -> int:
    from flowfs.mount import check_mountpoint

    config = mount_config(from_args(args), foreground=args.foreground)
    if READY_FD_ENV not in os.environ:
        if args.mkdir:
            make_mountpoint(config.mountpoint)
        check_mountpoint(config.mountpoint)
    if args.foreground:
        from flowfs.memory import system_allocator

        system_allocator(args.argv)  # memory given back after browsing (docs/reliability.md)
        return run_foreground(config)
    logpath = config.log_file or daemon_log_path(config.mountpoint)
    # The daemon logs where its stdout and stderr go (the last --log-file given wins).
    argv = [*args.argv, "--foreground", "--log-file", str(logpath)]
    if args.mountpoint is None:  # the daemon must mount where we checked, whatever happens
        argv.append(str(config.mountpoint))
    return spawn_daemon(argv, logpath)


def make_mountpoint(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:  # a stale mount: check_mountpoint says what to do
            raise ConfigError(f"cannot create mount point {path}: {exc.strerror}") from None


def daemon_log_path(mountpoint: Path) -> Path:
    slug = str(mountpoint).strip("/").replace("/", "-") or "root"
    return state_dir() / f"mount-{slug}.log"


def setup_logging(config: MountConfig, daemon: bool) -> Redactor:
    """The mount's log: its file (rotated) or stderr, at the configured levels."""
    from flowfs.logs import parse_levels, setup

    return setup(parse_levels(config.log_level), path=config.log_file,
                 max_bytes=config.log_max_size, follow_stderr=daemon)


def run_foreground(config: MountConfig) -> int:
    import trio

    from flowfs.auth import discover, scrub_environment
    from flowfs.mount import run
    from flowfs.notify import Notifier

    ready_fd = os.environ.pop(READY_FD_ENV, None)
    redactor = setup_logging(config, daemon=ready_fd is not None)
    notifier = Notifier.from_environment()
    reported = False

    def ready(error: str | None) -> None:
        nonlocal reported
        reported = True
        if error is None:
            notifier.ready(f"serving {config.api_url} at {config.mountpoint}")
        message = "ok" if error is None else f"error: {error}"
        if ready_fd is None:
            if error is None:
                print(f"flowfs: mounted {config.api_url} at {config.mountpoint}; "
                      "Ctrl-C unmounts", file=sys.stderr)
            return
        try:
            os.write(int(ready_fd), (message + "\n").encode())
            os.close(int(ready_fd))
        except OSError:  # the parent gave up waiting (Ctrl-C): the mount serves on
            pass

    def stopping() -> None:
        notifier.stopping(f"unmounting {config.mountpoint}")

    try:
        env = dict(os.environ)
        if config.token_file is not None:  # the setting, from any source (fstab: -o)
            env["FLOW_TOKEN_FILE"] = str(config.token_file)
        creds = discover(config.api_url, env)
        scrub_environment()
        if creds is not None:
            redactor.add_secrets(creds.secrets())
        trio.run(run, config, creds, ready, stopping)
    except FlowError as exc:
        notifier.send(f"STATUS=failed: {exc}")
        if not reported:
            if ready_fd is not None:
                ready(str(exc))
            print(f"flowfs mount: {exc}", file=sys.stderr)
        return 1
    return 0


def spawn_daemon(args: list[str], logpath: Path) -> int:
    """Start `mount --foreground` detached; return once it reports the mount ready."""
    logpath.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "flowfs", *args]
    env = {**os.environ, READY_FD_ENV: str(write_end)}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env,
                            pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    os.close(fd)
    message = _wait_ready(read_end, proc)
    if message == "ok":
        return 0
    print(f"flowfs mount: {message}\n  (log: {logpath})", file=sys.stderr)
    if proc.poll() is None:
        proc.terminate()
    return 1


def _wait_ready(read_end: int, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + READY_TIMEOUT
    data = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 0.5)
            if ready:
                chunk = pipe.read(4096)
                if not chunk:
                    break
                data += chunk
                if data.endswith(b"\n"):
                    break
    text = data.decode(errors="replace").strip()
    if text == "ok":
        return "ok"
    if text.startswith("error: "):
        return text[len("error: "):]
    if proc.poll() is not None:
        return f"the daemon exited (status {proc.returncode}) before the mount was ready"
    return f"the mount was not ready within {READY_TIMEOUT:.0f} s"


def cmd_umount(args: argparse.Namespace) -> int:
    from flowfs.mount import unmount

    if args.mountpoint is not None:
        path = Path(args.mountpoint).absolute()
    else:
        path = from_args(args)["mountpoint"].value
    try:
        print(f"{path}: {unmount(path)}")
    except FlowError as exc:
        raise FlowError(f"{exc}{_umount_hint(path, args.mountpoint is None)}") from None
    return 0


def _umount_hint(path: Path, configured: bool) -> str:
    """What to do when ``path`` could not be unmounted: the flowfs mounts there are."""
    from flowfs.mounts import flowfs_mounts

    mounts = flowfs_mounts()
    hint = " (the configured mount point; name another: flowfs umount DIR)" if configured \
        else ""
    if not mounts:
        return f"{hint}; there are no flowfs mounts"
    if path in mounts:
        return hint
    return f"{hint}; flowfs mounts: {', '.join(map(str, mounts))}"
