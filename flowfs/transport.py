"""A lean httpx transport for the byte path: Range GETs read straight into one buffer.

Plain httpx moves a few hundred MB/s per core: every 64 KiB chunk of a body
passes through several layers of async generators. For the one request that
carries nearly all bytes (``GET`` with ``Range``), this transport writes the
request itself, reads the response head, and then receives the body directly
into preallocated ``bytearray`` pieces over a pooled keep-alive connection.
Over plain HTTP small bodies are ``recv_into``'d on the event loop and large
ones by a worker thread with ``readv``, so the kernel's copy runs outside the
GIL; over HTTPS a worker thread does the whole exchange on a blocking TLS
connection (:mod:`flowfs.tls`), so decryption runs outside the GIL too. The
response keeps the httpx shape (status, headers, a stream), so retries,
authentication and status mapping in ``api`` are unchanged; ``api`` takes the
filled buffer from the response extension ``flowfs_body`` without copying it.

Everything else — other methods, chunked or unsized bodies, a ``200`` to a
Range request, redirects, HTTPS without a TLS context — goes through the
regular httpx transport.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import trio

from flowfs import tls
from flowfs.proxy import proxy_for, tunnels
from flowfs.wire import (
    MAX_HEAD,
    body_limit,
    content_length,
    head_end,
    keeps_alive,
    parse_head,
    place_head_bytes,
    request_bytes,
    requested_length,
    split_body,
)

log = logging.getLogger(__name__)

MAX_IDLE_PER_HOST = 64
BODY_EXTENSION = "flowfs_body"
CHUNK_EXTENSION = "flowfs_chunk"  # request: receive the body as pieces of this size
# response: (seconds to the head, seconds to the end of the body) of the exchange
TIMING_EXTENSION = "flowfs_timing"
# Bodies from this size are received by a worker thread (see _fill_in_thread); smaller
# ones, the latency-bound random reads, stay on the event loop (no thread hand-off).
THREAD_MIN = 1 << 20
MAX_THREADS = 16
STOP_CHECK = 0.25  # seconds between two looks at the stop flag of an abandoned receive


_Unsupported = tls.Unsupported  # a reply the lean path does not take: repeated through httpx


class _Stale(Exception):
    """A pooled connection that the server had closed: retry on a fresh one."""


class _BufferStream(httpx.AsyncByteStream):
    def __init__(self, body: list[bytearray]) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._body:
            yield bytes(piece)

    async def aclose(self) -> None:
        pass


class RangeTransport(httpx.AsyncBaseTransport):
    """Range GETs over plain HTTP the lean way; everything else through ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 64, thread_min: int = THREAD_MIN,
                 allocate: Callable[[int], bytearray] = bytearray,
                 max_threads: int = MAX_THREADS,
                 tls_context: ssl.SSLContext | None = None,
                 tls_threads: int | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        # Over TLS a thread holds its connection for the whole exchange: one per connection.
        self._tls = None if tls_context is None else tls.TlsConnections(
            tls_context, max_threads=tls_threads or max_connections)
        # Per origin: whether the lean path reaches it, and its TLS pool key. A daemon's
        # proxy variables never change, so the environment is read once per origin.
        self._routes: dict[tuple[str, str, int | None], tuple[bool, tls.Key]] = {}
        self._idle: dict[tuple[str, int], list[trio.socket.SocketType]] = {}
        # Bounds open sockets (and so file descriptors) however many fetches run at once.
        self._slots = trio.Semaphore(max_connections)
        self._threads = trio.CapacityLimiter(max_threads)
        self._thread_min = thread_min
        # Body pieces: any buffer of the size; every byte is overwritten before use.
        self._allocate = allocate

    @property
    def receiving_threads(self) -> int:
        """Worker threads receiving a body right now."""
        tls_threads = 0 if self._tls is None else self._tls.receiving_threads
        return int(self._threads.borrowed_tokens) + tls_threads

    @property
    def tls_handshakes(self) -> int:
        """TLS connections opened by the lean path so far."""
        return 0 if self._tls is None else self._tls.handshakes

    @property
    def waiting_for_threads(self) -> int:
        """Receives waiting for a free worker thread."""
        tls_waiting = 0 if self._tls is None else self._tls.waiting_for_threads
        return int(self._threads.statistics().tasks_waiting) + tls_waiting

    def _route(self, url: httpx.URL) -> tuple[bool, tls.Key]:
        origin = _origin(url)
        route = self._routes.get(origin)
        if route is None:
            proxy = proxy_for(url)
            key = (url.host, url.port or 443, str(proxy) if proxy else "")
            route = self._routes[origin] = (tunnels(url), key)
        return route

    async def warm(self, url: str, count: int) -> int:
        """Open ``count`` keep-alive connections to ``url``'s host ahead of need (HTTPS)."""
        parsed = httpx.URL(url)
        if self._tls is None or parsed.scheme != "https":
            return 0  # a plain connection costs one round trip, like the request it spares
        return await self._tls.warm(self._route(parsed)[1], count)

    async def aclose(self) -> None:
        for socks in self._idle.values():
            for sock in socks:
                sock.close()
        self._idle.clear()
        if self._tls is not None:
            self._tls.close()
        await self._inner.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        lean = (request.method == "GET" and "range" in request.headers
                and (scheme == "http" or (scheme == "https" and self._tls is not None))
                and self._route(request.url)[0])
        if not lean:
            return await self._inner.handle_async_request(request)
        try:
            async with self._slots:
                if scheme == "https":
                    return await self._lean_tls(request)
                key = (request.url.host, request.url.port or 80)
                return await self._attempts(key, request, request.extensions.get("timeout", {}))
        except _Unsupported:
            return await self._inner.handle_async_request(request)

    async def _lean_tls(self, request: httpx.Request) -> httpx.Response:
        assert self._tls is not None
        want = requested_length(request)
        if want is None:
            raise _Unsupported
        chunk = request.extensions.get(CHUNK_EXTENSION) or want
        body = split_body(want, chunk, self._allocate)
        reply = await self._tls.exchange(self._route(request.url)[1], request_bytes(request), want,
                                         body, request.extensions.get("timeout", {}))
        if reply.status != 206:
            body = [bytearray(reply.body)]
        return _response(request, reply.status, reply.headers, body,
                         (reply.first_byte, reply.total))

    async def _attempts(self, key: tuple[str, int], request: httpx.Request,
                        timeouts: dict[str, Any]) -> httpx.Response:
        for attempt in (1, 2):
            # A pooled connection the server closed is retried once, on a new one.
            sock, reused = await self._checkout(key, timeouts.get("connect"), attempt == 1)
            clean = False
            try:
                response, keep = await self._exchange(sock, request, timeouts, reused)
                clean = keep
                return response
            except _Stale:
                if attempt == 2:
                    raise httpx.RemoteProtocolError("server closed the connection") from None
            finally:
                if clean:
                    self._checkin(key, sock)
                else:
                    sock.close()
        raise AssertionError("unreachable")

    async def _checkout(self, key: tuple[str, int], timeout: float | None,
                        reuse: bool) -> tuple[trio.socket.SocketType, bool]:
        idle = self._idle.get(key, [])
        while reuse and idle:
            sock = idle.pop()
            if _still_open(sock):
                return sock, True
            sock.close()
        try:
            with trio.fail_after(timeout or 60.0):
                return await _connect(key), False
        except trio.TooSlowError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"{key[0]}:{key[1]}: {exc.strerror or exc}") from None

    def _checkin(self, key: tuple[str, int], sock: trio.socket.SocketType) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < MAX_IDLE_PER_HOST:
            idle.append(sock)
        else:
            sock.close()

    async def _exchange(self, sock: trio.socket.SocketType, request: httpx.Request,
                        timeouts: dict[str, Any], reused: bool) -> tuple[httpx.Response, bool]:
        read_timeout = timeouts.get("read") or 60.0
        try:
            sent = time.monotonic()
            await _send_all(sock, request_bytes(request))
            with trio.fail_after(read_timeout):
                status, headers, extra = await _read_head(sock, reused)
            first_byte = time.monotonic() - sent
            length = content_length(headers)
            if status == 200 or length is None or length > body_limit(status):
                raise _Unsupported  # a full body, chunked, or unknown length: httpx's job
            chunk = request.extensions.get(CHUNK_EXTENSION) or length or 1
            body = split_body(length, chunk, self._allocate)
            views, over = place_head_bytes(body, extra)
            if views and length >= self._thread_min:
                await _fill_in_thread(sock, views, read_timeout, self._threads)
            elif views:
                await _receive_into(sock, views, read_timeout)
        except trio.TooSlowError:
            raise httpx.ReadTimeout("the server did not answer in time") from None
        except OSError as exc:
            if reused:
                raise _Stale from None
            raise httpx.ReadError(str(exc.strerror or exc)) from None
        # Bytes beyond Content-Length mean we and the server disagree on framing: never reuse.
        keep = not over and keeps_alive(headers)
        timing = (first_byte, time.monotonic() - sent)
        return _response(request, status, headers, body, timing), keep


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _response(request: httpx.Request, status: int, headers: list[tuple[bytes, bytes]],
              body: list[bytearray], timing: tuple[float, float]) -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=_BufferStream(body), request=request,
                          extensions={BODY_EXTENSION: body, TIMING_EXTENSION: timing,
                                      "http_version": b"HTTP/1.1"})


async def _receive_into(sock: trio.socket.SocketType, views: list[memoryview],
                        timeout: float) -> None:
    """Fill ``views`` in order from the socket, on the event loop."""
    for view in views:
        got = 0
        while got < len(view):
            with trio.fail_after(timeout):
                n = await sock.recv_into(view[got:])
            if n == 0:
                raise httpx.RemoteProtocolError("connection closed before the whole body")
            got += n


async def _fill_in_thread(sock: trio.socket.SocketType, views: list[memoryview],
                          timeout: float, limiter: trio.CapacityLimiter) -> None:
    """Like ``_receive_into``, but the socket reads run in a worker thread.

    The kernel's copy of a large body (a fifth of the daemon's CPU on a cold read) then
    happens outside the GIL, on another core, while the event loop keeps answering FUSE:
    +25% cold sequential throughput on 2 cores. One ``readv`` fills many pieces at once.
    The thread reads a duplicate of the socket's descriptor and closes it itself, so a
    receive abandoned on cancellation can never touch a descriptor number reused since.
    """
    handoff = _Handoff(os.dup(sock.fileno()))
    try:
        await trio.to_thread.run_sync(_readv_all, handoff, views, timeout,
                                      abandon_on_cancel=True, limiter=limiter)
    finally:
        handoff.abandon()


class _Handoff:
    """A duplicated descriptor and who closes it: the thread once it runs, else the caller.

    Cancelled while waiting for a free thread, the receive never starts: then the caller
    closes the descriptor; once started, the thread closes it when it stops (at the
    latest one ``STOP_CHECK`` after ``abandon``).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._owner = ""

    def take(self) -> bool:
        """In the thread: own the descriptor, unless the caller has given up already."""
        with self._lock:
            if not self._owner:
                self._owner = "thread"
            return self._owner == "thread"

    def abandon(self) -> None:
        """In the caller, when done or cancelled: stop the thread, or close the fd itself."""
        self.stop.set()
        with self._lock:
            if not self._owner:
                self._owner = "caller"
                os.close(self.fd)


def _readv_all(handoff: _Handoff, views: list[memoryview], timeout: float) -> None:
    """Fill ``views`` from the non-blocking descriptor (then closed); in a worker thread."""
    if not handoff.take():
        return
    fd, stop = handoff.fd, handoff.stop
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        idle_since = time.monotonic()
        while views and not stop.is_set():
            try:
                n = os.readv(fd, views)
            except BlockingIOError:
                if time.monotonic() - idle_since > timeout:
                    raise httpx.ReadTimeout("the server did not send the body in time") from None
                poller.poll(STOP_CHECK * 1000)
                continue
            if n == 0:
                raise httpx.RemoteProtocolError("connection closed before the whole body")
            idle_since = time.monotonic()
            while n:
                first = views[0]
                if n >= len(first):
                    n -= len(first)
                    views.pop(0)
                else:
                    views[0] = first[n:]
                    n = 0
    finally:
        for view in views:
            view.release()
        os.close(fd)


async def _connect(key: tuple[str, int]) -> trio.socket.SocketType:
    """A connection to the first address of ``key`` that accepts one (IPv6 or IPv4)."""
    infos = await trio.socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {key[0]}")
    for family, type_, proto, _, addr in infos:
        sock = trio.socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error


def _still_open(sock: trio.socket.SocketType) -> bool:
    """An idle keep-alive connection has nothing to read; readable means closed (or junk)."""
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


async def _read_head(sock: trio.socket.SocketType,
                     reused: bool) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and the body bytes that arrived with them."""
    buf = bytearray()
    while (end := head_end(buf)) < 0:
        chunk = await sock.recv(MAX_HEAD)
        if not chunk:
            if reused and not buf:
                raise _Stale
            raise httpx.RemoteProtocolError("connection closed before a complete response head")
        buf += chunk
    return parse_head(buf, end)


class ProxyRoutes(httpx.AsyncBaseTransport):
    """httpx transports chosen per request by :func:`flowfs.proxy.proxy_for`.

    httpx's own reading of the proxy variables applies only when a client has no
    transport of its own; this gives the inner transport of :class:`RangeTransport` the
    same routes the lean path takes.
    """

    def __init__(self, make: Callable[[httpx.URL | None], httpx.AsyncBaseTransport]) -> None:
        self._make = make
        self._routes: dict[str, httpx.AsyncBaseTransport] = {}  # by proxy ('' for none)
        self._by_origin: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin(request.url)
        route = self._by_origin.get(origin)
        if route is None:
            proxy = proxy_for(request.url)
            name = str(proxy) if proxy else ""
            route = self._routes.get(name)
            if route is None:
                route = self._routes[name] = self._make(proxy)
            self._by_origin[origin] = route
        return await route.handle_async_request(request)

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.aclose()
        self._routes.clear()
        self._by_origin.clear()
