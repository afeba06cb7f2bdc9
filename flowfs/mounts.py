"""The flowfs mounts of this machine, from ``/proc/self/mountinfo`` (type ``fuse.flowfs``).

Used by ``flowfs status``, ``umount``, ``downloads`` and completion: reading mountinfo never
calls into a mount, so a hung daemon cannot hang the search. A call that must go into a
mount (read its stats, write a request) goes through :class:`InThread`, given up after a
deadline, for the same reason.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

FSTYPE = "fuse.flowfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def parse_mountinfo(text: str) -> list[Path]:
    """The mount points of flowfs mounts in a mountinfo text."""
    found = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) > 4 and right.split(" ", 1)[0] == FSTYPE:
            found.append(Path(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])))
    return found


def flowfs_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    return parse_mountinfo(mountinfo.read_text(errors="replace"))


class Hung(Exception):
    """A call into a mount that had not returned by its deadline (its thread is abandoned)."""


class InThread(Generic[T]):
    """``call()`` run at once in a daemon thread: a hung daemon blocks the thread, not us.

    ``result(timeout)`` waits at most ``timeout`` s more, then gives the call's value,
    raises the ``OSError`` it raised, or raises :class:`Hung`. Several can run at once
    under one deadline (``flowfs status`` reads every mount together).
    """

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._box: list[tuple[T | None, OSError | None]] = []

        def run() -> None:
            try:
                self._box.append((call(), None))
            except OSError as exc:
                self._box.append((None, exc))

        self._thread = threading.Thread(target=run, daemon=True, name=name)
        self._thread.start()

    def result(self, timeout: float) -> T:
        self._thread.join(max(0.0, timeout))
        if not self._box:
            raise Hung
        value, error = self._box[0]
        if error is not None:
            raise error
        return value  # type: ignore[return-value]


def within(call: Callable[[], T], timeout: float, name: str) -> T:
    """``call()``'s value if it returns within ``timeout`` s (see :class:`InThread`)."""
    return InThread(call, name).result(timeout)
