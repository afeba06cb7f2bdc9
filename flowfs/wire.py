"""HTTP/1.1 framing for the lean Range path: the request's bytes, the reply's head.

Pure functions shared by the plain-HTTP receive (``transport``) and the TLS receive
(``tls``): no sockets here, so what counts as a well-formed reply is decided once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 1024 * 1024
_RANGE = re.compile(rb"^bytes=(\d{1,18})-(\d{1,18})$")

Headers = list[tuple[bytes, bytes]]


def request_bytes(request: httpx.Request) -> bytes:
    """The request line and headers of a ``GET``, asking for the stored bytes as they are."""
    lines = [b"GET " + request.url.raw_path + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        if name.lower() == b"accept-encoding":
            continue  # byte ranges of the stored bytes, never a re-encoding of them
        lines.append(name + b": " + value)
    lines.append(b"Accept-Encoding: identity")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def requested_length(request: httpx.Request) -> int | None:
    """The body length a ``206`` must have for the request's ``Range: bytes=a-b``."""
    m = _RANGE.match(request.headers.get("range", "").encode("latin-1").strip())
    if not m or int(m.group(2)) < int(m.group(1)):
        return None
    return int(m.group(2)) - int(m.group(1)) + 1


def head_end(buf: bytes | bytearray) -> int:
    """Where the head in ``buf`` ends (its blank line), -1 if not yet; raises if too large."""
    end = buf.find(b"\r\n\r\n")
    if end > MAX_HEAD or (end < 0 and len(buf) > MAX_HEAD):
        raise httpx.RemoteProtocolError("response head too large")
    return end


def parse_head(buf: bytes | bytearray, end: int) -> tuple[int, Headers, bytes]:
    """Status, headers (names lower-cased) and the body bytes that came with the head."""
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError("not an HTTP/1.x response")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError("malformed response header")
        headers.append((name.lower(), value.strip()))
    if parts[0] == b"HTTP/1.0":
        headers.append((b"connection", b"close"))
    return int(parts[1]), headers, bytes(buf[end + 4:])


def content_length(headers: Headers) -> int | None:
    """The one Content-Length of a reply without a transfer coding; None otherwise."""
    if any(k == b"transfer-encoding" for k, _ in headers):
        return None
    values = {v for k, v in headers if k == b"content-length"}
    if len(values) != 1:
        return None
    value = values.pop()
    return int(value) if value.isdigit() and len(value) < 19 else None


def keeps_alive(headers: Headers) -> bool:
    return not any(k == b"connection" and v.lower() == b"close" for k, v in headers)


def body_limit(status: int) -> int:
    """The largest body the lean path receives for ``status`` (error pages are small)."""
    return 1 << 40 if status == 206 else MAX_ERROR_BODY


def place_head_bytes(pieces: list[bytearray], extra: bytes) -> tuple[list[memoryview], bool]:
    """Put ``extra`` (body bytes that came with the head) into ``pieces``, in order.

    Returns the views still to fill from the socket, and whether ``extra`` held more than
    the body (then the connection must not be reused).
    """
    views: list[memoryview] = []
    for piece in pieces:
        view = memoryview(piece)
        got = min(len(extra), len(piece))
        view[:got] = extra[:got]
        extra = extra[got:]
        if got < len(piece):
            views.append(view[got:])
    return views, bool(extra)


def split_body(length: int, chunk: int,
               allocate: Callable[[int], bytearray]) -> list[bytearray]:
    """Buffers for a body of ``length`` bytes in pieces of ``chunk`` (the last one shorter)."""
    return [allocate(min(chunk, length - at)) for at in range(0, length, chunk)]
