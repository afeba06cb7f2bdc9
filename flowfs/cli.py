"""The `flowfs` command line: a table of subcommands, each pointing at its handler.

The handlers live in :mod:`flowfs.commands` and, for mount and umount, in
:mod:`flowfs.mount_cli`; this module builds the parser (the settings' flags come from
:data:`flowfs.settings.OPTIONS`), turns mount(8)'s fstab call into a mount command line,
and maps a domain error to one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from flowfs import __version__, commands, mount_cli
from flowfs.errors import ConfigError, FlowError
from flowfs.settings import OPTIONS, add_flags

# Every setting is a flag of mount (and of config), so a new row of OPTIONS needs no change
# here, nor in the fstab options (flowfs.fstab) that become these flags.
MOUNT_KEYS = tuple(option.key for option in OPTIONS if option.key != "mountpoint")
CACHE_KEYS = ("cache_dir", "disk_cache_size")  # the settings of `flowfs cache status`


def add_mount(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount Flow at MOUNTPOINT (default: the configured one)")
    p.add_argument("mountpoint", nargs="?", help="where to mount (default: ~/flow, see "
                   "'flowfs config')")
    add_flags(p, MOUNT_KEYS)
    p.add_argument("--foreground", "-f", action="store_true", help="stay attached")
    p.add_argument("--mkdir", action="store_true", help="create MOUNTPOINT if missing")
    p.add_argument("--verbose", "-v", action="count", default=0,
                   help="log more: -v our requests and events, -vv every operation")
    p.add_argument("--debug", action="store_true",
                   help="log every operation, with timestamps (same as -vv)")
    p.set_defaults(handler=mount_cli.cmd_mount)


def add_credentials(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("login", help="log in and store a refreshable session; the server "
                       "becomes the default (other servers' sessions are kept)")
    add_flags(p, ("api_url",))
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=commands.cmd_login)
    p = sub.add_parser("logout", help="forget the stored session of a server (default: the "
                       "default server)")
    add_flags(p, ("api_url",))
    p.set_defaults(handler=commands.cmd_logout)
    p = sub.add_parser("whoami", help="who the server says you are, and which credentials")
    add_flags(p, ("api_url",))
    p.set_defaults(handler=commands.cmd_whoami)


def add_helpers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="flowfs mounts and their cache, traffic and jobs")
    p.add_argument("mountpoint", nargs="?", help="only this mount")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=commands.cmd_status)
    p = sub.add_parser("refresh", help="fetch the listings under PATH again now, not after "
                       "--dir-ttl (default: the whole mount you are in)")
    p.add_argument("path", nargs="?", help="a directory in a flowfs mount")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="give up after this many seconds (90)")
    p.set_defaults(handler=commands.cmd_refresh)
    p = sub.add_parser("config", help="the effective settings and where each comes from")
    add_flags(p, MOUNT_KEYS)
    p.set_defaults(handler=commands.cmd_config)
    p = sub.add_parser("rsync-filter", help="print rsync rules that leave the mount's own "
                       "files out of a copy: flowfs rsync-filter | rsync -aH "
                       "--exclude-from=- ~/flow/ backup/")
    p.set_defaults(handler=commands.cmd_rsync_filter)
    p = sub.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"])
    p.add_argument("--words", choices=["mounts", "jobs"], help=argparse.SUPPRESS)
    p.add_argument("--mount", help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_completion)


# The one handler here: its script is made from the parser itself.
def cmd_completion(args: argparse.Namespace) -> int:
    from flowfs.completion import print_words, script

    if args.words:  # what the scripts run at the time of the TAB
        print_words(args.words, args.mount)
        return 0
    if args.shell is None:
        raise FlowError("name a shell: flowfs completion bash|zsh|fish")
    print(script(args.shell, build_parser()), end="")
    return 0


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
    p.set_defaults(handler=commands.cmd_downloads)


def add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="the disk cache: its size and hit rate, clear, prune")
    acts = p.add_subparsers(dest="action", required=True)
    s = acts.add_parser("status", help="size, blocks and files cached; each mount's hit rate")
    add_flags(s, CACHE_KEYS)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    c = acts.add_parser("clear", help="remove every cached block (safe while mounted)")
    add_flags(c, ("cache_dir",))
    r = acts.add_parser("prune", help="remove least recently used blocks down to a size")
    add_flags(r, ("cache_dir",))
    r.add_argument("--max-size", required=True, help="what may stay, e.g. 2G (0: nothing)")
    p.set_defaults(handler=commands.cmd_cache)


def add_serve(sub: argparse._SubParsersAction) -> None:
    # The server's own flags, parsed here like any subcommand's: its options module
    # needs only the standard library, so --help works without the server's extras.
    from flowfs.server import options

    p = sub.add_parser("serve", help="run the reference Flow server (demo, tests)",
                       description=options.DESCRIPTION, epilog=options.EPILOG)
    options.add_arguments(p)
    p.set_defaults(handler=commands.cmd_serve)


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
    p.set_defaults(handler=mount_cli.cmd_umount)
    add_credentials(sub)
    add_helpers(sub)
    add_downloads(sub)
    add_cache(sub)
    p = sub.add_parser("demo", help="a demo server with demo data, mounted and shown")
    p.add_argument("mountpoint", nargs="?", help="where to mount (default: a temporary dir)")
    p.add_argument("--no-wait", action="store_true", help="end after the tour")
    p.set_defaults(handler=commands.cmd_demo)
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
