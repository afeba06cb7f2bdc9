"""Range bodies over HTTPS, received by worker threads straight into our buffers.

Over TLS every byte is decrypted before it lands, and that costs more CPU than the
copy itself. Python's ``ssl`` sockets release the GIL inside ``SSL_read``, so a worker
thread that owns a blocking TLS connection decrypts a body on the other core while the
event loop keeps answering FUSE: the same shape as the plain-HTTP ``readv`` receive
(:mod:`flowfs.transport`), with the whole exchange (connect and handshake when needed,
request, head, body) in one thread hop.

Certificates are verified with the very ``SSLContext`` the httpx client uses
(:func:`client_context`: system CAs through certifi, or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR``; host names checked). There is no switch to turn verification off.

Ownership of a connection (:class:`_Call`): the worker thread owns it while it runs.
A caller that stops waiting (cancelled) sets ``stop``; the thread notices within
``STOP_CHECK`` seconds and closes the connection itself. Whoever is second closes it:
it is closed exactly once, and never returned to the pool after a cancelled exchange.
Idle connections are kept per host and only touched on the event loop's thread.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import trio

from flowfs import tlsfill
from flowfs.wire import (
    MAX_ERROR_BODY,
    MAX_HEAD,
    Headers,
    content_length,
    head_end,
    keeps_alive,
    parse_head,
    place_head_bytes,
)

STOP_CHECK = 0.25  # seconds between two looks at the stop flag while a socket is quiet
MAX_IDLE_PER_HOST = 64

Key = tuple[str, int, str]  # host, port, and the proxy tunnelled through ('' for none)


def client_context() -> ssl.SSLContext:
    """The TLS settings of every connection of a mount: httpx's own, HTTP/1.1 only."""
    context = httpx.create_ssl_context()
    # Both our receive and httpx (http2 off) speak HTTP/1.1 on these connections.
    context.set_alpn_protocols(["http/1.1"])
    return context


def untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind ``exc``, if that is what it is."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


class Unsupported(Exception):
    """A reply this path does not take (a full ``200``, unsized, chunked, another protocol)."""


class _Stale(Exception):
    """A pooled connection the server had closed before our request: retry on a new one."""


class _Abandoned(Exception):
    """The caller stopped waiting; the thread stops and closes its connection."""


class Exchange:
    """One reply: status, headers, a small error body; ``keep`` if the connection may be
    reused; ``first_byte`` and ``total``: seconds from sending to the head and to the end."""

    __slots__ = ("status", "headers", "body", "keep", "first_byte", "total")

    def __init__(self, status: int, headers: Headers, body: bytes, keep: bool) -> None:
        self.status, self.headers, self.body, self.keep = status, headers, body, keep
        self.first_byte = self.total = 0.0


class TlsConnections:
    """Pooled TLS connections and the worker threads that use them."""

    def __init__(self, context: ssl.SSLContext, max_threads: int = 64) -> None:
        self._context = context
        self._idle: dict[Key, list[ssl.SSLSocket]] = {}
        self._threads = trio.CapacityLimiter(max_threads)
        self.handshakes = 0

    @property
    def receiving_threads(self) -> int:
        return int(self._threads.borrowed_tokens)

    @property
    def waiting_for_threads(self) -> int:
        return int(self._threads.statistics().tasks_waiting)

    def close(self) -> None:
        for socks in self._idle.values():
            for sock in socks:
                sock.close()
        self._idle.clear()

    async def exchange(self, key: Key, request: bytes, want: int, pieces: list[bytearray],
                       timeouts: dict[str, Any]) -> Exchange:
        """Send ``request``; a ``206`` of exactly ``want`` bytes lands in ``pieces``.

        Other statuses come back with their (small) body. Raises :class:`Unsupported`
        for replies the caller must repeat through httpx, httpx errors for failures.
        """
        connect_timeout = float(timeouts.get("connect") or 60.0)
        read_timeout = float(timeouts.get("read") or 60.0)
        for attempt in (1, 2):
            call = _Call(self._checkout(key) if attempt == 1 else None)

            def connect(key: Key = key) -> ssl.SSLSocket:
                self.handshakes += 1  # an int add under the GIL: exact enough for stats
                return _connect(self._context, key, connect_timeout)

            try:
                result = await trio.to_thread.run_sync(
                    _exchange, call, connect, request, want, pieces, read_timeout,
                    abandon_on_cancel=True, limiter=self._threads)
            except _Stale:
                if attempt == 2:
                    raise httpx.RemoteProtocolError("server closed the connection") from None
                continue
            except BaseException:
                call.abandon()
                raise
            sock = call.take()
            if sock is not None:
                if result.keep:
                    self._checkin(key, sock)
                else:
                    sock.close()
            return result
        raise AssertionError("unreachable")

    async def warm(self, key: Key, count: int, timeout: float = 10.0) -> int:
        """Open up to ``count`` idle connections to ``key`` now; how many were opened.

        A TLS handshake costs round trips: connections made before a stream ramps up
        spare its first requests that wait. Failures are not errors here (the requests
        will say what is wrong).
        """
        opened = 0

        async def one() -> None:
            nonlocal opened
            try:
                sock = await trio.to_thread.run_sync(_connect, self._context, key, timeout,
                                                     limiter=self._threads)
            except (httpx.TransportError, Unsupported):
                return
            self.handshakes += 1
            opened += 1
            self._checkin(key, sock)

        wanted = count - len(self._idle.get(key, []))
        async with trio.open_nursery() as nursery:
            for _ in range(max(0, wanted)):
                nursery.start_soon(one)
        return opened

    def _checkout(self, key: Key) -> ssl.SSLSocket | None:
        idle = self._idle.get(key)
        return idle.pop() if idle else None

    def _checkin(self, key: Key, sock: ssl.SSLSocket) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
            idle.append(sock)
        else:
            sock.close()


class _Call:
    """One exchange handed to a worker thread, and who closes its connection (module doc)."""

    def __init__(self, sock: ssl.SSLSocket | None) -> None:
        self.sock = sock
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._state = "waiting"  # -> running -> done, or -> abandoned at any point

    def start(self) -> bool:
        """In the thread, first: False if the caller gave up already (it closed the socket)."""
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "running"
            return True

    def finish(self) -> None:
        """In the thread, last: close the connection if nobody will take it."""
        with self._lock:
            if self._state == "abandoned":
                self._close()
            else:
                self._state = "done"

    def abandon(self) -> None:
        """In the caller, when it will not take the result: stop the thread or close now."""
        self.stop.set()
        with self._lock:
            state, self._state = self._state, "abandoned"
            if state != "running":
                self._close()

    def take(self) -> ssl.SSLSocket | None:
        """In the caller, after the thread returned: the connection is the caller's now."""
        sock, self.sock = self.sock, None
        return sock

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _connect(context: ssl.SSLContext, key: Key, timeout: float) -> ssl.SSLSocket:
    """A verified TLS connection speaking HTTP/1.1 (blocking; in a worker thread).

    Through an HTTP proxy (``key[2]``) the TCP connection is a ``CONNECT`` tunnel: the
    proxy sees the host name and port, never what is sent; the certificate checked is
    the server's, as without a proxy.
    """
    host, port, proxy = key
    via = httpx.URL(proxy) if proxy else None
    first_hop = (via.host, via.port or 80) if via else (host, port)
    try:
        raw = socket.create_connection(first_hop, timeout=timeout)
    except TimeoutError:
        raise httpx.ConnectTimeout(f"connecting to {first_hop[0]}:{first_hop[1]}") from None
    except OSError as exc:
        raise httpx.ConnectError(f"{first_hop[0]}:{first_hop[1]}: {exc.strerror or exc}") \
            from None
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if via is not None:
            _open_tunnel(raw, via, host, port)
        sock = context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise httpx.ConnectError(f"{host}:{port}: {exc.verify_message or exc}") from exc
    except TimeoutError:
        raw.close()
        raise httpx.ConnectTimeout(f"TLS handshake with {host}:{port}") from None
    except (OSError, ValueError) as exc:
        raw.close()
        raise httpx.ConnectError(f"TLS handshake with {host}:{port}: {exc}") from exc
    except BaseException:
        raw.close()
        raise
    if sock.selected_alpn_protocol() not in (None, "http/1.1"):
        sock.close()
        raise Unsupported
    return sock


def _open_tunnel(raw: socket.socket, proxy: httpx.URL, host: str, port: int) -> None:
    """``CONNECT host:port`` through the proxy on ``raw``; returns once it is open."""
    target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.username:
        user = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(user.encode()).decode())
    try:
        raw.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = bytearray()
        while (end := head_end(buf)) < 0:
            # One byte at a time: nothing after the proxy's reply may be taken from the
            # socket, it is the server's TLS handshake.
            chunk = raw.recv(1)
            if not chunk:
                raise httpx.ProxyError(f"the proxy {proxy.host} closed the connection")
            buf += chunk
    except TimeoutError:
        raise httpx.ConnectTimeout(f"the proxy {proxy.host} did not answer") from None
    except OSError as exc:
        raise httpx.ProxyError(f"the proxy {proxy.host}: {exc.strerror or exc}") from None
    status, _, _ = parse_head(buf, end)
    if status != 200:
        raise httpx.ProxyError(f"the proxy {proxy.host} refused the tunnel: HTTP {status}")


def _alive(sock: ssl.SSLSocket) -> bool:
    """An idle keep-alive connection has nothing to read: data or EOF means junk or closed.

    A non-blocking read also consumes TLS 1.3 session tickets the server sent after the
    handshake, which would otherwise look like data waiting.
    """
    try:
        sock.setblocking(False)
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _exchange(call: _Call, connect: Callable[[], ssl.SSLSocket], request: bytes, want: int,
              pieces: list[bytearray], timeout: float) -> Exchange:
    """The whole exchange on a blocking TLS connection; runs in a worker thread."""
    if not call.start():
        raise _Abandoned
    try:
        reused = call.sock is not None
        if call.sock is not None and not _alive(call.sock):
            call.sock.close()
            call.sock, reused = None, False
        if call.sock is None:
            call.sock = connect()
        sock = call.sock
        sock.settimeout(STOP_CHECK)
        sent = time.monotonic()
        try:
            sock.sendall(request)
        except OSError as exc:
            if reused:
                raise _Stale from None
            raise httpx.WriteError(str(exc)) from None
        return _receive(sock, call.stop, reused, want, pieces, timeout, sent)
    except BaseException:
        call._close()  # a failed exchange leaves the connection in an unknown state
        raise
    finally:
        call.finish()


def _receive(sock: ssl.SSLSocket, stop: threading.Event, reused: bool, want: int,
             pieces: list[bytearray], timeout: float, sent: float) -> Exchange:
    reader = _Reader(sock, stop, timeout)
    exchange = _receive_reply(reader, reused, want, pieces)
    exchange.total = time.monotonic() - sent
    exchange.first_byte = reader.first_byte - sent
    return exchange


def _receive_reply(reader: _Reader, reused: bool, want: int,
                   pieces: list[bytearray]) -> Exchange:
    buf = bytearray()
    while (end := head_end(buf)) < 0:
        chunk = reader.recv(MAX_HEAD)
        if not chunk:
            if reused and not buf:
                raise _Stale
            raise httpx.RemoteProtocolError("connection closed before a complete response head")
        buf += chunk
    status, headers, extra = parse_head(buf, end)
    length = content_length(headers)
    if status == 206 and length == want:
        views, over = place_head_bytes(pieces, extra)
        reader.fill(views)
        return Exchange(status, headers, b"", keeps_alive(headers) and not over)
    if status not in (200, 206) and length is not None and length <= MAX_ERROR_BODY:
        body = bytearray(extra[:length])
        rest = bytearray(length - len(body))
        reader.fill([memoryview(rest)])
        return Exchange(status, headers, bytes(body + rest),
                        keeps_alive(headers) and len(extra) <= length)
    raise Unsupported


class _Reader:
    """Blocking reads that wake every ``STOP_CHECK`` to honour ``stop`` and the idle timeout."""

    def __init__(self, sock: ssl.SSLSocket, stop: threading.Event, timeout: float) -> None:
        self._sock, self._stop, self._timeout = sock, stop, timeout
        self._idle_since = time.monotonic()
        self.first_byte = 0.0  # when the first bytes of the reply arrived

    def _wait(self) -> None:
        if self._stop.is_set():
            raise _Abandoned
        if time.monotonic() - self._idle_since > self._timeout:
            raise httpx.ReadTimeout("the server did not send in time")

    def recv(self, size: int) -> bytes:
        while True:
            self._wait()
            try:
                data = self._sock.recv(size)
            except TimeoutError:
                continue
            except (OSError, ValueError) as exc:
                raise httpx.ReadError(str(exc)) from None
            self._idle_since = time.monotonic()
            self.first_byte = self.first_byte or self._idle_since
            return data

    def fill(self, views: list[memoryview]) -> None:
        """Fill every view in order, decrypted with the GIL released: a whole view per C
        call where :mod:`flowfs.tlsfill` can, else one TLS record per ``recv_into``."""
        fast = tlsfill.filler(self._sock)
        try:
            for view in views:
                got = 0
                while got < len(view):
                    self._wait()
                    try:
                        n = self._recv_into(fast, view, got)
                    except (OSError, ValueError) as exc:
                        raise httpx.ReadError(str(exc)) from None
                    if n is None:
                        continue  # quiet for STOP_CHECK: look at the stop flag again
                    if n == 0:
                        raise httpx.RemoteProtocolError("connection closed before the whole body")
                    got += n
                    self._idle_since = time.monotonic()
        finally:
            for view in views:
                view.release()

    def _recv_into(self, fast: tlsfill.Filler | None, view: memoryview, got: int) -> int | None:
        """Bytes received into ``view[got:]``: None if the socket stayed quiet, 0 if closed."""
        if fast is None:
            try:
                return self._sock.recv_into(view[got:])
            except TimeoutError:
                return None
        n = fast(view, got, int(STOP_CHECK * 1000))
        return None if n == 0 else max(n, 0)
