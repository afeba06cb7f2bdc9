"""Giving memory back to the system once much of it was freed at once.

Freeing objects is not enough for the daemon's RSS to fall:

- Python's own allocator keeps an arena (1 MiB) while any block in it is in use, and
  a few long-lived objects made while a big tree was browsed (a task, a cached URL, a
  free-list entry) keep most arenas of it: after a ``find`` over 200,000 files was
  forgotten, 170 of the 300 MiB it took stayed. So the daemon runs with the C
  library's allocator (``PYTHONMALLOC=malloc``; ``system_allocator`` runs the mount
  again with it, before anything else happens), which keeps memory by pages, not
  by arenas.
- glibc keeps freed chunks inside its heap: ``malloc_trim`` hands back every free
  page, wherever it lies.

``give_back`` empties the standard library's caches of URLs and regular expressions,
runs a full collection (which frees what cycles held and the interpreter's free
lists) and then trims. It costs tens of milliseconds on a small heap: it is called
only after a large release (``InodeTable.shrunk``).

A release comes in many FORGET batches, and the largest part of it often comes last:
a directory's listing, which holds its files, goes only when the kernel forgets the
directory itself, after its files. A trim at the first large batch misses all that;
``Release`` gives back at once and once more when the batches have stopped
(``SETTLE`` seconds without one): the memory of a forgotten ``find`` comes back
whole, not by the luck of where the last trim fell.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import re
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

import trio

ALLOCATOR_ENV = "PYTHONMALLOC"
SETTLE = 1.0  # seconds without a release after which the last one is given back too


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def give_back() -> None:
    """Empty the caches, collect cycles and free lists, return free heap pages."""
    # The last few hundred URLs and patterns parsed: a handful of blocks in each of
    # many arenas, enough to keep them all.
    urllib.parse.clear_cache()  # type: ignore[attr-defined]  # (public, not in the stubs)
    re.purge()
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


class Release:
    """Gives memory back after large releases: at once, and again once they settle.

    ``spawn`` starts the task that waits for the releases to stop (a nursery's
    ``start_soon``); without one, only the immediate give-back happens.
    """

    def __init__(self, spawn: Callable[[Callable[[], Awaitable[None]]], object] | None,
                 settle: float = SETTLE, give: Callable[[], None] = give_back) -> None:
        self._spawn, self._settle, self._give = spawn, settle, give
        self._last = 0.0  # when something was last freed (trio's clock)
        self._waiting = False  # a give-back for when the releases stop is planned

    def freed(self, much: bool) -> None:
        """Something was freed; ``much``: so much that it is worth giving back now."""
        if not much and not self._waiting:
            return
        self._last = trio.current_time()
        if not much:
            return
        self._give()
        if self._spawn is not None and not self._waiting:
            self._waiting = True
            self._spawn(self._when_settled)

    async def _when_settled(self) -> None:
        try:
            while (wait := self._last + self._settle - trio.current_time()) > 0:
                await trio.sleep(wait)
        finally:
            self._waiting = False
        self._give()


def system_allocator(argv: Sequence[str]) -> None:
    """Run this process again with the C library's allocator, unless it already does.

    ``argv``: the arguments this command was called with; the process is run again only
    if they are its own command line (not a call of ``main`` from another program), and
    only if ``PYTHONMALLOC`` is not set (a choice made by the user stays). Call it before
    credentials leave the environment: the new process reads them again.
    """
    if os.environ.get(ALLOCATOR_ENV) is not None or not argv or not sys.executable:
        return
    if list(sys.orig_argv[-len(argv):]) != list(argv):
        return
    env = {**os.environ, ALLOCATOR_ENV: "malloc"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
