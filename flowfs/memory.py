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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Sequence

ALLOCATOR_ENV = "PYTHONMALLOC"


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
