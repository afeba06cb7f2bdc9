"""The handlers of the `flowfs` subcommands other than mount and umount.

Each takes its parsed arguments, calls the module that does the work, prints what a
person needs and returns the exit status; the parser (:mod:`flowfs.cli`) points at them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from flowfs.errors import FlowError
from flowfs.settings import from_args


def cmd_login(args: argparse.Namespace) -> int:
    from flowfs import account

    api_url = from_args(args)["api_url"].value
    username = account.read_username(args.username)
    store = account.login(api_url, username, account.read_password(args.password_stdin))
    print(f"Logged in to {api_url} as {username}; {account.logged_in(store, api_url)}")
    effective = from_args(argparse.Namespace())["api_url"]
    if effective.value != api_url:  # a setting outranks the last login: say so
        print(f"note: mount and whoami use {effective.value} ({effective.source}) "
              f"unless given --api-url {api_url}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from flowfs.account import logout

    print(logout(from_args(args)["api_url"].value))
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    from flowfs.account import describe, whoami

    api_url = from_args(args)["api_url"].value
    user, creds = whoami(api_url)
    print(describe(user, creds, api_url))
    return 0


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

    print(render(from_args(args), config_file()), end="")
    return 0


def cmd_rsync_filter(args: argparse.Namespace) -> int:
    from flowfs.rsyncfilter import FILTER

    print(FILTER, end="")
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


def cmd_cache(args: argparse.Namespace) -> int:
    from flowfs import cache_cli
    from flowfs.sizes import parse_size

    values = from_args(args)
    root = values["cache_dir"].value
    if args.action == "status":
        return cache_cli.cmd_status(root, values["disk_cache_size"].value, args.json)
    if args.action == "clear":
        return cache_cli.cmd_clear(root)
    return cache_cli.cmd_prune(root, parse_size(args.max_size))
