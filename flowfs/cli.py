"""The `flowfs` command: a table of subcommands, each a small function."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from flowfs import __version__
from flowfs.config import DEFAULT_API_URL, MountConfig, parse_size, state_dir
from flowfs.errors import FlowError

log = logging.getLogger("flowfs")

READY_FD_ENV = "FLOWFS_READY_FD"
READY_TIMEOUT = 90.0


def setup_logging(debug: bool, stream: object = None) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream or sys.stderr,  # type: ignore[arg-type]
    )
    if not debug:  # httpx logs every request URL at INFO; keep it out of normal logs
        logging.getLogger("httpx").setLevel(logging.WARNING)


def api_url_default() -> str:
    return os.environ.get("FLOW_API_URL", DEFAULT_API_URL)


# -- mount ---------------------------------------------------------------------

def mount_config(args: argparse.Namespace) -> MountConfig:
    return MountConfig(
        mountpoint=Path(args.mountpoint).absolute(),
        api_url=args.api_url or api_url_default(),
        files_url=args.files_url or os.environ.get("FLOW_FILES_URL", ""),
        cache_size=parse_size(args.cache_size),
        io_timeout=args.io_timeout,
        dir_ttl=args.dir_ttl,
        allow_other=args.allow_other,
        foreground=args.foreground,
        debug=args.debug,
    )


def cmd_mount(args: argparse.Namespace) -> int:
    from flowfs.mount import check_mountpoint

    config = mount_config(args)
    if READY_FD_ENV not in os.environ:
        check_mountpoint(config.mountpoint)
    if args.foreground:
        return run_foreground(config)
    return spawn_daemon(config)


def run_foreground(config: MountConfig) -> int:
    import trio

    from flowfs.auth import discover, scrub_environment
    from flowfs.mount import run

    setup_logging(config.debug)
    ready_fd = os.environ.pop(READY_FD_ENV, None)
    reported = False

    def ready(error: str | None) -> None:
        nonlocal reported
        reported = True
        message = "ok" if error is None else f"error: {error}"
        if ready_fd is None:
            if error is None:
                print(f"flowfs: mounted {config.api_url} at {config.mountpoint}; "
                      "Ctrl-C unmounts", file=sys.stderr)
            return
        os.write(int(ready_fd), (message + "\n").encode())
        os.close(int(ready_fd))

    try:
        creds = discover(config.api_url)
        scrub_environment()
        trio.run(run, config, creds, ready)
    except FlowError as exc:
        if not reported:
            if ready_fd is not None:
                ready(str(exc))
            print(f"flowfs mount: {exc}", file=sys.stderr)
        return 1
    return 0


def spawn_daemon(config: MountConfig) -> int:
    """Start `mount --foreground` detached; return once it reports the mount ready."""
    logdir = state_dir()
    logdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    slug = str(config.mountpoint).strip("/").replace("/", "-") or "root"
    logpath = logdir / f"mount-{slug}.log"
    fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "flowfs", *sys.argv[1:], "--foreground"]
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

    print(f"{args.mountpoint}: {unmount(Path(args.mountpoint).absolute())}")
    return 0


# -- credentials ---------------------------------------------------------------

def cmd_login(args: argparse.Namespace) -> int:
    import trio

    from flowfs.api import FlowAPI, new_client
    from flowfs.auth import save_session, session_path
    from flowfs.config import normalise_url

    api_url = normalise_url(args.api_url or api_url_default())
    username = args.username or input("Flow username: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Flow password: ")

    async def login() -> tuple[str, str]:
        async with new_client() as client:
            return await FlowAPI(api_url, api_url, None, client).login(username, password)

    token, refresh = trio.run(login)
    if not refresh:
        raise FlowError("the server gave no refresh cookie; use FLOW_API_TOKEN instead")
    save_session(session_path(), api_url, username, token, refresh)
    print(f"Logged in to {api_url} as {username}; session saved in {session_path()}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from flowfs.auth import session_path

    try:
        session_path().unlink()
    except FileNotFoundError:
        print("not logged in")
        return 0
    print("logged out")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from flowfs.server.cli import main as serve_main
    except ImportError as exc:
        raise FlowError(
            f"the reference server needs: pip install 'flowfs[server]' ({exc})"
        ) from None
    return serve_main(args.rest)


def cmd_demo(args: argparse.Namespace) -> int:
    from flowfs.demo import run_demo

    mountpoint = Path(args.mountpoint).absolute() if args.mountpoint else None
    return run_demo(mountpoint, wait=not args.no_wait)


def cmd_downloads(args: argparse.Namespace) -> int:
    from flowfs import downloads_cli as d

    mount = d.find_mount(args.mount)
    if args.action == "list":
        return d.cmd_list(mount)
    if args.action == "create":
        return d.cmd_create(mount, args.name, args.paths, args.by_execution)
    return d.cmd_wait(mount, args.name, args.timeout)


def add_downloads(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("downloads", help="bulk ZIP downloads (.downloads/) from the shell")
    p.add_argument("--mount", help="the flowfs mount (default: the one you are in)")
    acts = p.add_subparsers(dest="action", required=True)
    acts.add_parser("list", help="list bulk downloads and their state")
    c = acts.add_parser("create", help="create a bulk download of PATHs (or id:<data id>)")
    c.add_argument("name")
    c.add_argument("paths", nargs="+")
    c.add_argument("--by-execution", action="store_true", help="group the ZIP by execution")
    w = acts.add_parser("wait", help="follow a bulk download until it is ready")
    w.add_argument("name")
    w.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.set_defaults(handler=cmd_downloads)


# -- the table -----------------------------------------------------------------

def add_mount(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mount", help="mount Flow at MOUNTPOINT")
    p.add_argument("mountpoint")
    p.add_argument("--api-url", help=f"Flow API URL (env FLOW_API_URL; {DEFAULT_API_URL})")
    p.add_argument("--files-url", help="files server URL (default: derived from the API URL)")
    p.add_argument("--foreground", "-f", action="store_true", help="stay attached")
    p.add_argument("--cache-size", default="512M", help="block cache budget (512M)")
    p.add_argument("--io-timeout", type=float, default=60.0, help="per-read deadline, s (60)")
    p.add_argument("--dir-ttl", type=float, default=60.0, help="listing cache TTL, s (60)")
    p.add_argument("--allow-other", action="store_true", help="let other users in")
    p.add_argument("--debug", action="store_true", help="log every operation")
    p.set_defaults(handler=cmd_mount)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowfs", description="Mount Flow as a filesystem.")
    parser.add_argument("--version", action="version", version=f"flowfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_mount(sub)
    p = sub.add_parser("umount", help="unmount (also a stale mount of a dead daemon)")
    p.add_argument("mountpoint")
    p.set_defaults(handler=cmd_umount)
    p = sub.add_parser("login", help="log in and store a refreshable session")
    p.add_argument("--api-url")
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=cmd_login)
    p = sub.add_parser("logout", help="forget the stored session")
    p.set_defaults(handler=cmd_logout)
    add_downloads(sub)
    p = sub.add_parser("demo", help="a demo server with demo data, mounted and shown")
    p.add_argument("mountpoint", nargs="?", help="where to mount (default: a temporary dir)")
    p.add_argument("--no-wait", action="store_true", help="end after the tour")
    p.set_defaults(handler=cmd_demo)
    p = sub.add_parser("serve", help="run the reference Flow server", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=cmd_serve)
    return parser



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except FlowError as exc:
        print(f"flowfs {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
