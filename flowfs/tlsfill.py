"""A TLS body received with one C call per buffer, where that can be done safely.

Python's ``ssl`` decrypts one TLS record (at most 16 KiB) per ``recv_into`` and takes
the GIL back after each: receiving at 600 MiB/s is some 40,000 GIL round trips a second,
each waiting for the event loop's thread to let go. ``flowfs._tlsfill`` (a small C
extension, built when flowfs is installed if a compiler is there) runs the same
``SSL_read`` loop without the GIL until the buffer is full, the peer closes, or a
deadline of ``STOP_CHECK`` passes (so a receiving thread still sees its stop flag).
Over HTTPS on loopback, where the CPU is the limit, a cold read went from 474 to 596
MiB/s with it and eight at once from 454 to 633 (docs/performance.md).

It reaches the ``SSL`` object inside the ``ssl`` module's socket, so it is used only where
that was checked: CPython 3.11 to 3.14, the extension built, OpenSSL's functions found in
the ``ssl`` module's own library at the version ``ssl`` reports, and, per connection,
OpenSSL confirming that the ``SSL`` it found is the one of that very socket. Anywhere
else, and with ``FLOWFS_TLS_FILL=python`` in the environment, the plain Python loop does
the same work.
"""

from __future__ import annotations

import _ssl
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


def _module() -> ModuleType | None:
    """The C extension, ready to use; None where the Python loop must be used."""
    if (_c is None or os.environ.get("FLOWFS_TLS_FILL") == "python"
            or sys.implementation.name != "cpython" or sys.version_info[:2] not in CHECKED):
        return None
    # OpenSSL's functions come from the ssl module's own library and what it links: the
    # OpenSSL that makes its SSL objects (linked, or built into it), never another one
    # that some other library loaded. Its version must be the one ssl reports.
    path = getattr(_ssl, "__file__", None)
    if not path or _c.use(path) != ssl.OPENSSL_VERSION_NUMBER:
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
