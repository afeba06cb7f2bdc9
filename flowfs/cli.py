"""The `flowfs` command: a table of subcommands, each a small function."""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowfs import __version__
from flowfs.config import MountConfig, state_dir
from flowfs.errors import ConfigError, FlowError
from flowfs.settings import OPTIONS, Value, mount_config, resolve

if TYPE_CHECKING:
    from flowfs.logs import Redactor

READY_FD_ENV = "FLOWFS_READY_FD"
READY_TIMEOUT = 90.0


# -- mount ---------------------------------------------------------------------

def option_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (None: not given).

    ``--debug`` and ``-v``/``-vv`` are short for a ``--log-level`` of our own loggers;
    an explicit ``--log-level`` wins.
    """
    flags = {option.key: getattr(args, option.key, None) for option in OPTIONS}
    verbosity = 2 if getattr(args, "debug", False) else getattr(args, "verbose", 0) or 0
    if flags.get("log_level") is None and verbosity:
        flags["log_level"] = "debug" if verbosity >= 2 else "info"
    return flags


def settings(args: argparse.Namespace) -> dict[str, Value]:
    return resolve(option_flags(args))


def cmd_mount(args: argparse.Namespace) -> int:
    from flowfs.mount import check_mountpoint

    config = mount_config(settings(args), foreground=args.foreground)
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
        path = settings(args)["mountpoint"].value
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


# -- credentials ---------------------------------------------------------------

def cmd_login(args: argparse.Namespace) -> int:
    from flowfs import account

    api_url = settings(args)["api_url"].value
    username = account.read_username(args.username)
    store = account.login(api_url, username, account.read_password(args.password_stdin))
    print(f"Logged in to {api_url} as {username}; {account.logged_in(store, api_url)}")
    effective = settings(argparse.Namespace())["api_url"]
    if effective.value != api_url:  # a setting outranks the last login: say so
        print(f"note: mount and whoami use {effective.value} ({effective.source}) "
              f"unless given --api-url {api_url}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from flowfs.account import logout

    print(logout(settings(args)["api_url"].value))
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    from flowfs.account import describe, whoami

    api_url = settings(args)["api_url"].value
    user, creds = whoami(api_url)
    print(describe(user, creds, api_url))
    return 0


# -- the daily helpers -----------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    from flowfs.status_cli import render, statuses

    only = Path(os.path.realpath(args.mountpoint)) if args.mountpoint else None
    found = statuses(only)
    if args.json:
        print(json.dumps([status.as_json() for status in found], indent=2))
    elif not found:
        print(f"{only} is not a flowfs mount" if only else
              "no flowfs mounts (mount one with 'flowfs mount DIR')")
    else:
        print("\n".join(render(status) for status in found))
    if only is not None and not found:
        return 1
    return 1 if any(status.problem for status in found) else 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from flowfs.mounts import flowfs_mounts
    from flowfs.refresh import mount_of, request

    # abspath, not realpath: resolving would make FUSE calls without a deadline
    path = Path(os.path.abspath(args.path or "."))
    mounts = flowfs_mounts()
    mount = mount_of(path, mounts)
    if mount is None and args.path is None and len(mounts) == 1:
        mount = mounts[0]  # outside any mount: the only one there is
    if mount is not None and args.path is None:
        path = mount  # no PATH: the whole mount
    if mount is None:
        where = ", ".join(map(str, mounts)) or "none (mount one with 'flowfs mount DIR')"
        raise FlowError(f"{path} is not in a flowfs mount (mounts: {where})")
    relative = path.relative_to(mount).as_posix()
    request(mount, "" if relative == "." else relative, args.timeout)
    print(f"refreshed {path}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from flowfs.settings import config_file, render

    print(render(settings(args), config_file()), end="")
    return 0


def cmd_rsync_filter(args: argparse.Namespace) -> int:
    from flowfs.rsyncfilter import FILTER

    print(FILTER, end="")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from flowfs.completion import print_words, script

    if args.words:  # what the scripts run at the time of the TAB
        print_words(args.words, args.mount)
        return 0
    if args.shell is None:
        raise FlowError("name a shell: flowfs completion bash|zsh|fish")
    print(script(args.shell, build_parser()), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from flowfs.server.cli import run
    except ImportError as exc:
        raise FlowError(
            f"the reference server needs: pip install 'flowfs[server]' ({exc})"
        ) from None
    return run(args)


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


def add_downloads(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("downloads", help="bulk ZIP downloads (.downloads/) from the shell")
    p.add_argument("--mount", help="the flowfs mount (default: the one you are in)")
    acts = p.add_subparsers(dest="action", required=True)
    ls = acts.add_parser("list", help="list bulk downloads and their state")
    c = acts.add_parser("create", help="create a bulk download of PATHs (or id:<data id>)")
    c.add_argument("name")
    c.add_argument("paths", nargs="+")
    c.add_argument("--by-execution", action="store_true", help="group the ZIP by execution")
    w = acts.add_parser("wait", help="follow a bulk download until it is ready; exit 0 ready, "
                        "1 no such job or another error, 3 the job failed or expired, "
                        "124 timed out")
    w.add_argument("name")
    w.add_argument("--timeout", type=float, help="give up after this many seconds (exit 124)")
    for act in (ls, c, w):  # --mount after the action too; SUPPRESS keeps one given before
        act.add_argument("--mount", default=argparse.SUPPRESS,
                         help="the flowfs mount (default: the one you are in)")
    p.set_defaults(handler=cmd_downloads)


def add_serve(sub: argparse._SubParsersAction) -> None:
    # The server's own flags, parsed here like any subcommand's: its options module
    # needs only the standard library, so --help works without the server's extras.
    from flowfs.server import options

    p = sub.add_parser("serve", help="run the reference Flow server (demo, tests)",
                       description=options.DESCRIPTION, epilog=options.EPILOG)
    options.add_arguments(p)
    p.set_defaults(handler=cmd_serve)


def cmd_cache(args: argparse.Namespace) -> int:
    from flowfs import cache_cli
    from flowfs.sizes import parse_size

    values = settings(args)
    root = values["cache_dir"].value
    if args.action == "status":
        return cache_cli.cmd_status(root, values["disk_cache_size"].value, args.json)
    if args.action == "clear":
        return cache_cli.cmd_clear(root)
    return cache_cli.cmd_prune(root, parse_size(args.max_size))


CACHE_KEYS = ("cache_dir", "disk_cache_size")


def add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="the disk cache: its size and hit rate, clear, prune")
    acts = p.add_subparsers(dest="action", required=True)
    s = acts.add_parser("status", help="size, blocks and files cached; each mount's hit rate")
    add_option_flags(s, CACHE_KEYS)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    c = acts.add_parser("clear", help="remove every cached block (safe while mounted)")
    add_option_flags(c, ("cache_dir",))
    r = acts.add_parser("prune", help="remove least recently used blocks down to a size")
    add_option_flags(r, ("cache_dir",))
    r.add_argument("--max-size", required=True, help="what may stay, e.g. 2G (0: nothing)")
    p.set_defaults(handler=cmd_cache)


# -- the table -----------------------------------------------------------------

def add_option_flags(p: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
    """Flags for the settings in ``keys`` (default None: "not given", see settings.py)."""
    for option in OPTIONS:
        if option.key not in keys:
            continue
        help_text = f"{option.help}; env {option.env}"
        if option.boolean:
            p.add_argument(option.flag, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        else:
            p.add_argument(option.flag, default=None, metavar=option.key.upper(),
                           help=help_text)


# Every setting is a flag of mount (and of config), so a new row of OPTIONS needs no change
# here, nor in the fstab options (flowfs.fstab) that become these flags.
MOUNT_KEYS = tuple(option.key for option in OPTIONS if option.key != "mountpoint")


def add_mount(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount Flow at MOUNTPOINT (default: the configured one)")
    p.add_argument("mountpoint", nargs="?", help="where to mount (default: ~/flow, see "
                   "'flowfs config')")
    add_option_flags(p, MOUNT_KEYS)
    p.add_argument("--foreground", "-f", action="store_true", help="stay attached")
    p.add_argument("--mkdir", action="store_true", help="create MOUNTPOINT if missing")
    p.add_argument("--verbose", "-v", action="count", default=0,
                   help="log more: -v our requests and events, -vv every operation")
    p.add_argument("--debug", action="store_true",
                   help="log every operation, with timestamps (same as -vv)")
    p.set_defaults(handler=cmd_mount)


def add_credentials(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("login", help="log in and store a refreshable session; the server "
                       "becomes the default (other servers' sessions are kept)")
    add_option_flags(p, ("api_url",))
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=cmd_login)
    p = sub.add_parser("logout", help="forget the stored session of a server (default: the "
                       "default server)")
    add_option_flags(p, ("api_url",))
    p.set_defaults(handler=cmd_logout)
    p = sub.add_parser("whoami", help="who the server says you are, and which credentials")
    add_option_flags(p, ("api_url",))
    p.set_defaults(handler=cmd_whoami)


def add_helpers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="flowfs mounts and their cache, traffic and jobs")
    p.add_argument("mountpoint", nargs="?", help="only this mount")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)
    p = sub.add_parser("refresh", help="fetch the listings under PATH again now, not after "
                       "--dir-ttl (default: the whole mount you are in)")
    p.add_argument("path", nargs="?", help="a directory in a flowfs mount")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="give up after this many seconds (90)")
    p.set_defaults(handler=cmd_refresh)
    p = sub.add_parser("config", help="the effective settings and where each comes from")
    add_option_flags(p, MOUNT_KEYS)
    p.set_defaults(handler=cmd_config)
    p = sub.add_parser("rsync-filter", help="print rsync rules that leave the mount's own "
                       "files out of a copy: flowfs rsync-filter | rsync -aH "
                       "--exclude-from=- ~/flow/ backup/")
    p.set_defaults(handler=cmd_rsync_filter)
    p = sub.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"])
    p.add_argument("--words", choices=["mounts", "jobs"], help=argparse.SUPPRESS)
    p.add_argument("--mount", help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_completion)


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._subparsers._group_actions  # type: ignore[union-attr]
            for name in getattr(action, "choices", None) or ()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowfs", description="Mount Flow as a filesystem.",
                                     epilog="Settings: flags > environment > "
                                     "~/.config/flowfs/config.toml > defaults "
                                     "(see 'flowfs config').")
    parser.add_argument("--version", action="version", version=f"flowfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_mount(sub)
    p = sub.add_parser("umount", help="unmount (also a stale mount of a dead daemon)")
    p.add_argument("mountpoint", nargs="?", help="default: the configured mount point")
    p.set_defaults(handler=cmd_umount)
    add_credentials(sub)
    add_helpers(sub)
    add_downloads(sub)
    add_cache(sub)
    p = sub.add_parser("demo", help="a demo server with demo data, mounted and shown")
    p.add_argument("mountpoint", nargs="?", help="where to mount (default: a temporary dir)")
    p.add_argument("--no-wait", action="store_true", help="end after the tour")
    p.set_defaults(handler=cmd_demo)
    add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in subcommands(parser):
        from flowfs.fstab import mount_argv

        try:  # mount(8)'s call for an /etc/fstab line: flowfs SOURCE MOUNTPOINT -o OPTIONS
            argv = mount_argv(argv)
        except ConfigError as exc:
            print(f"flowfs: {exc}", file=sys.stderr)
            return 1
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.handler(args))
    except FlowError as exc:
        print(f"flowfs {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
