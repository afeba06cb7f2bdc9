"""`flowfs downloads list|create|wait`: the `.downloads/` protocol from the shell.

Works through a mounted flowfs (it needs no credentials of its own): it reads
`.status` files and writes manifests exactly as a user would.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from flowfs.errors import FlowError
from flowfs.manifest import valid_name
from flowfs.mounts import Hung, flowfs_mounts, within
from flowfs.sizes import LONG, human_size

POLL = 1.0
READ_TIMEOUT = 30.0  # one read of a .status file


def find_mount(given: str | None) -> Path:
    """The mount to use: the one given, the one containing the cwd, or the only one."""
    if given:
        path = Path(given).absolute()
        if not (path / ".downloads").is_dir():
            raise FlowError(f"{path} is not a flowfs mount (no .downloads/ in it)")
        return path
    mounts = flowfs_mounts()
    cwd = Path.cwd()
    inside = [m for m in mounts if cwd == m or m in cwd.parents]
    if inside:
        return inside[0]
    if len(mounts) == 1:
        return mounts[0]
    if not mounts:
        raise FlowError("no flowfs mount found: mount one with 'flowfs mount DIR' first")
    raise FlowError("several flowfs mounts: choose one with --mount DIR")


# `flowfs downloads wait`'s exit statuses (documented in docs/downloads.md)
READY, ERROR, JOB_FAILED, TIMED_OUT = 0, 1, 3, 124


class TimedOut(FlowError):
    """The mount did not answer a read in time."""


def read_job_status(path: Path, timeout: float = READ_TIMEOUT) -> dict[str, Any] | None:
    """A job's ``.status`` (None: no such job), read in a thread given up after ``timeout``:
    a hung mount must not hang the command. Raises ``TimedOut`` then."""
    try:
        data = within(path.read_bytes, timeout, "flowfs-read-status")
    except Hung:
        raise TimedOut(f"{path} was not readable within {timeout:g} s: is the mount hung? "
                       f"('flowfs status' says)") from None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FlowError(f"{path}: {exc.strerror}") from None
    try:
        return json.loads(data)
    except ValueError:
        return {"status": "unknown"}


def cmd_list(mount: Path) -> int:
    rows = []
    for status_file in sorted((mount / ".downloads").glob("*.status")):
        st = read_job_status(status_file) or {}
        rows.append((status_file.stem, str(st.get("status")), _pct(st), _size(st.get("size"))))
    if not rows:
        print("no bulk downloads")
        return 0
    width = max(len(r[0]) for r in rows)
    print(f"{'NAME':<{width}}  {'STATUS':<10}  {'PROGRESS':>8}  SIZE")
    for name, status, pct, size in rows:
        print(f"{name:<{width}}  {status:<10}  {pct:>8}  {size}")
    return 0


def _pct(st: dict[str, Any]) -> str:
    p = st.get("progress")
    return f"{p}%" if isinstance(p, int | float) else "-"


def _size(n: Any) -> str:
    return human_size(n, LONG, " ") if isinstance(n, int) else "-"


def cmd_create(mount: Path, name: str, paths: list[str], by_execution: bool) -> int:
    if not valid_name(name):
        raise FlowError(f"{name!r}: use letters, digits, '.', '_', '-' (1-100, no leading '.')")
    lines = [p if p.startswith("id:") else str(Path(p).absolute()) for p in paths]
    if by_execution:
        lines.append("by_execution: true")
    # A draft renamed into place: if this command is killed half-way, nothing is submitted.
    draft = mount / ".downloads" / f"{name}.manifest.part"
    try:
        with open(draft, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.rename(draft, mount / ".downloads" / f"{name}.manifest")
    except OSError as exc:
        error = mount / ".downloads" / f"{name}.error"
        detail = error.read_text() if error.exists() else ""
        with contextlib.suppress(OSError):
            draft.unlink()
        if exc.errno == errno.EEXIST:
            raise FlowError(
                f"a bulk download named {name!r} exists already: follow it with 'flowfs "
                f"downloads wait {name}', choose another name, or delete it first with "
                f"'rm {mount / '.downloads' / (name + '.status')}'") from None
        raise FlowError(f"{exc.strerror}\n{detail}".rstrip()) from None
    print(f"created {name}: follow it with 'flowfs downloads wait {name}'")
    return 0


def cmd_wait(mount: Path, name: str, timeout: float | None) -> int:
    """Follow a job until it completes (0), fails or expires (3), vanishes (1), or the
    time runs out (124: ``--timeout``, or a mount that stopped answering)."""
    status_file = mount / ".downloads" / f"{name}.status"
    bar = _progress_bar(name)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            left = READ_TIMEOUT if deadline is None else deadline - time.monotonic()
            try:
                st = read_job_status(status_file, max(0.1, min(READ_TIMEOUT, left)))
            except TimedOut as exc:
                bar.close(None)
                print(f"{name}: {exc}", file=sys.stderr)
                return TIMED_OUT
            if st is None:
                bar.close(None)
                print(f"{name}: no such bulk download ('flowfs downloads list' shows them)",
                      file=sys.stderr)
                return ERROR
            state = st.get("status")
            bar.update(st)
            if state == "completed":
                bar.close(f"{name}: ready: {mount / '.downloads' / (name + '.zip')}")
                return READY
            if state in ("failed", "expired"):
                bar.close(f"{name}: {state}: {st.get('error') or ''}".rstrip(": "))
                return JOB_FAILED
            if deadline is not None and time.monotonic() > deadline:
                bar.close(f"{name}: still {state} after {timeout:.0f} s; wait again with "
                          f"'flowfs downloads wait {name}'")
                return TIMED_OUT
            time.sleep(POLL)
    finally:
        bar.close(None)


class _Plain:
    """Progress as plain lines (not a terminal): one line per change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: tuple[Any, Any] | None = None
        self.closed = False

    def update(self, st: dict[str, Any]) -> None:
        now = (st.get("status"), st.get("progress"))
        if now != self.last:
            self.last = now
            print(f"{self.name}: {now[0]} {_pct(st)}", flush=True)

    def close(self, message: str | None) -> None:
        if message and not self.closed:
            print(message, flush=True)
        self.closed = self.closed or message is not None


class _Bar(_Plain):
    """A tqdm progress bar on a terminal."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        from tqdm import tqdm

        self.bar = tqdm(total=100, desc=name, unit="%",
                        bar_format="{desc}: {bar} {n:.0f}% {postfix}")

    def update(self, st: dict[str, Any]) -> None:
        p = st.get("progress")
        if isinstance(p, int | float):
            self.bar.n = p
        self.bar.set_postfix_str(str(st.get("status")))

    def close(self, message: str | None) -> None:
        if not self.closed:
            self.bar.close()
        super().close(message)


def _progress_bar(name: str) -> _Plain:
    return _Bar(name) if sys.stdout.isatty() and os.environ.get("TERM") != "dumb" else _Plain(name)
