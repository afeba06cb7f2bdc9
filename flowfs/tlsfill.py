"""A TLS body received with one C call per buffer, where that can be done safely.

Python's ``ssl`` decrypts one TLS record (at most 16 KiB) per ``recv_into`` and takes
the GIL back after each: receiving at 600 MiB/s is some 40,000 GIL round trips a second,
each waiting for the event loop's thread to let go. ``flowfs._tlsfill`` (a small C
extension, built when flowfs is installed if a compiler is there) runs the same
``SSL_read`` loop without the GIL until the buffer is full, the peer closes, or the
socket is quiet for a while. A cold read over HTTPS on loopback went from 547 to 635 MiB/s
with it (3 alternating rounds, docs/performance.md).

It reaches the ``SSL`` object inside the ``ssl`` module's socket, so it is used only where
that was checked: CPython 3.11 to 3.14, the extension built, the ``libssl`` the ``ssl``
module loaded found, and, per connection, OpenSSL confirming that the ``SSL`` it found is
the one of that very socket. Anywhere else, and with ``FLOWFS_TLS_FILL=python`` in the
environment, the plain Python loop does the same work.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable
from types import ModuleType

_c: ModuleType | None
try:
    from flowfs import _tlsfill as _c
except ImportError:  # not built (no compiler at install time): the Python loop
    _c = None

# Filler(buffer, start, timeout_ms) -> bytes received into buffer[start:], -1 if the
# peer closed first; raises OSError on a TLS or socket error.
Filler = Callable[[memoryview, int, int], int]

CHECKED = ((3, 11), (3, 12), (3, 13), (3, 14))  # CPython versions whose ssl socket we know


def _libssl() -> str | None:
    """The path of the libssl this process has loaded (the ``ssl`` module's)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                if "/libssl.so" in path:
                    return path
    except OSError:
        pass
    return None


def _module() -> ModuleType | None:
    """The C extension, ready to use; None where the Python loop must be used."""
    if (_c is None or os.environ.get("FLOWFS_TLS_FILL") == "python"
            or sys.implementation.name != "cpython" or sys.version_info[:2] not in CHECKED):
        return None
    assert ssl.OPENSSL_VERSION  # the ssl module, and so its libssl, is loaded
    path = _libssl()
    if path is None or not _c.use(path):
        return None
    return _c


_MODULE = _module()


def kind() -> str:
    """Which receive loop TLS bodies use: ``c`` or ``python``."""
    return "python" if _MODULE is None else "c"


def filler(sock: ssl.SSLSocket) -> Filler | None:
    """A C filler for this connection, or None (then the caller's Python loop)."""
    module = _MODULE
    if module is None:
        return None
    inner = getattr(sock, "_sslobj", None)
    fd = sock.fileno()
    try:
        if inner is None or not module.check(inner, fd):
            return None
    except (TypeError, ValueError):
        return None

    def fill(view: memoryview, start: int, timeout_ms: int) -> int:
        result: int = module.fill(inner, fd, view, start, timeout_ms)
        return result

    return fill
