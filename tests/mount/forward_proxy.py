"""A small plain-HTTP forward proxy for the mount tests, served from threads of the test.

A client told ``HTTP_PROXY=<url>`` sends it absolute-URI requests
(``GET http://127.0.0.1:8000/api/user HTTP/1.1``); it forwards each to that origin and
streams the reply back, keeping the client's connection open for the next request. It
records every request it forwarded, so a test can check that traffic really went through
it rather than straight to the server.

``HTTPS_PROXY=<url>`` clients send ``CONNECT host:port`` instead and speak TLS to the
origin through the tunnel; the proxy sees only the tunnels (``tunnels()``), never what
goes through them.

Deliberately small: request bodies by Content-Length only, and a fresh upstream
connection per request or tunnel (so an upstream's idle keep-alive timeout can never
close a connection under a request being forwarded).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 30.0
# Headers about one connection rather than the message (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
})


@dataclass(frozen=True)
class Forwarded:
    """One request the proxy forwarded, as the origin server's access log records it."""

    method: str
    path: str  # percent-decoded, as the server logs it
    query: str
    range: str | None

    @property
    def scope(self) -> str:
        """The first path segment: ``api``, ``downloads``..."""
        return self.path.lstrip("/").split("/", 1)[0]


class ForwardProxy:
    """The proxy on a free loopback port: ``start()``, then ``url``; ``stop()`` always."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forwarded: list[Forwarded] = []
        self._tunnels: list[str] = []  # "host:port" of every CONNECT accepted
        self._clients: set[socket.socket] = set()
        self._stopping = False
        self._stopped = False
        self.connections = 0  # client connections accepted
        self._server = _Server(("127.0.0.1", 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name="forward-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> ForwardProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every client connection: from now on, connecting is refused.

        Idempotent; returns once every thread of the proxy has ended.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever to return: no new connections
            self._thread.join()
        with self._lock:
            self._stopping = True
            clients = list(self._clients)
        for sock in clients:  # wakes each handler blocked reading the next request
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # closes the listener, joins the handler threads

    def forwarded(self) -> list[Forwarded]:
        with self._lock:
            return list(self._forwarded)

    def tunnels(self) -> list[str]:
        with self._lock:
            return list(self._tunnels)

    def scopes(self) -> Counter[str]:
        """Requests forwarded by first path segment (``api``, ``downloads``)."""
        return Counter(f.scope for f in self.forwarded())

    # -- called from the handler threads ---------------------------------------------------

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._clients.add(sock)
            if not self._stopping:
                return
        with contextlib.suppress(OSError):  # accepted while stop() ran: cut it as well
            sock.shutdown(socket.SHUT_RDWR)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._clients.discard(sock)

    def _record(self, request: Forwarded) -> None:
        with self._lock:
            self._forwarded.append(request)

    def _tunnel(self, target: str) -> None:
        with self._lock:
            self._tunnels.append(target)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins every handler thread

    def __init__(self, address: tuple[str, int], proxy: ForwardProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one client connection carries many requests
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._opened(self.connection)

    def finish(self) -> None:
        self.server.proxy._closed(self.connection)
        super().finish()

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the client left, or stop() cut it
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the proxy's record of requests is forwarded(), not stderr

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=UPSTREAM_TIMEOUT)
        except (OSError, ValueError) as exc:
            self.send_error(502, f"upstream: {type(exc).__name__}")
            return
        self.server.proxy._tunnel(self.path)
        self.send_response_only(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True  # the connection is the tunnel's until either side ends
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=_pipe, args=(upstream, self.connection),
                                    name="tunnel-back")
            back.start()
            _pipe(self.connection, upstream)
            back.join()

    def _forward(self) -> None:
        url = urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            # An origin-form request ("GET /x"): the client took us for the server.
            self.send_error(400, "a forward proxy takes absolute http:// URIs")
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(501, "chunked request bodies are not supported here")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.server.proxy._record(Forwarded(self.command, unquote(url.path), url.query,
                                            self.headers.get("Range")))
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80,
                                              timeout=UPSTREAM_TIMEOUT)
        try:
            try:
                target = (url.path or "/") + (f"?{url.query}" if url.query else "")
                # The client's own Host and Accept-Encoding go upstream unchanged.
                upstream.putrequest(self.command, target, skip_host=True,
                                    skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        upstream.putheader(name, value)
                upstream.endheaders(body)
                reply = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self.send_error(502, f"upstream: {type(exc).__name__}")
                return
            self._relay(reply)
        finally:
            upstream.close()

    def _relay(self, reply: http.client.HTTPResponse) -> None:
        """Send ``reply``'s head, then stream its body as it arrives."""
        bodiless = (self.command == "HEAD" or reply.status in (204, 304)
                    or 100 <= reply.status < 200)
        # Without a Content-Length upstream (chunked, or read to close) we re-chunk, so the
        # client's connection can stay open.
        chunked = reply.getheader("Content-Length") is None and not bodiless
        self.send_response_only(reply.status, reply.reason)
        for name, value in reply.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodiless:
            return
        try:
            while piece := reply.read1(CHUNK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException):
            # Cut short on either side: closing is the only way left to say so.
            self.close_connection = True


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends; then end ``dst``'s writing side."""
    with contextlib.suppress(OSError):
        while data := src.recv(CHUNK):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
