"""TLS bodies received by the C loop (flowfs.tlsfill) and by the Python loop give the same
bytes; a peer that closes early is an error, and a quiet peer never keeps a receiving
thread from noticing that its caller gave up."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import trustme

from flowfs import tls, tlsfill

pytestmark = pytest.mark.timeout(30)

BODY = os.urandom(3 * 2**20 + 12345)


@contextmanager
def tls_peer(serve: Callable[[ssl.SSLSocket], None]) -> Iterator[ssl.SSLSocket]:
    """A connected client TLS socket (verified, as flowfs makes them) to a peer running
    ``serve`` in a thread."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def run() -> None:
        raw, _ = listener.accept()
        with server_ctx.wrap_socket(raw, server_side=True) as conn:
            serve(conn)
            done.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    raw = socket.create_connection(listener.getsockname())
    sock = client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.settimeout(tls.STOP_CHECK)  # as the transport sets it
    try:
        yield sock
    finally:
        done.set()
        sock.close()
        thread.join(10)
        listener.close()


@pytest.fixture(params=["c", "python"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(tlsfill, "filler", lambda sock: None)
    elif tlsfill.kind() != "c":
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail("a C compiler is here but flowfs._tlsfill was not built or usable")
        pytest.skip("no C compiler: flowfs._tlsfill is not built")
    return str(request.param)


def receive(sock: ssl.SSLSocket, sizes: list[int], stop: threading.Event | None = None
            ) -> bytes:
    buffers = [bytearray(n) for n in sizes]
    tls._Reader(sock, stop or threading.Event(), 5.0).fill([memoryview(b) for b in buffers])
    return b"".join(buffers)


def test_both_loops_receive_exactly_the_bytes_sent(loop: str) -> None:
    def send(conn: ssl.SSLSocket) -> None:
        for i in range(0, len(BODY), 100_000):  # records cut anywhere
            conn.sendall(BODY[i : i + 100_000])

    with tls_peer(send) as sock:
        if loop == "c":
            assert tlsfill.filler(sock) is not None
        sizes = [256 * 1024] * (len(BODY) // (256 * 1024)) + [len(BODY) % (256 * 1024)]
        assert receive(sock, sizes) == BODY


def test_a_peer_that_closes_early_is_an_error_not_a_short_body(loop: str) -> None:
    def send_half(conn: ssl.SSLSocket) -> None:
        conn.sendall(BODY[: len(BODY) // 2])
        conn.close()  # gone before the whole body

    with tls_peer(send_half) as sock, pytest.raises(httpx.RemoteProtocolError):
        receive(sock, [len(BODY)])  # the same error from both loops


def test_a_quiet_peer_does_not_keep_the_thread_from_its_stop_flag(loop: str) -> None:
    stop = threading.Event()

    def send_little(conn: ssl.SSLSocket) -> None:
        conn.sendall(b"x" * 1000)  # then nothing: a stalled server
        threading.Timer(0.3, stop.set).start()

    with tls_peer(send_little) as sock, pytest.raises(tls._Abandoned):
        receive(sock, [len(BODY)], stop)


def test_a_plain_socket_gets_no_c_filler() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert tlsfill.filler(a) is None  # type: ignore[arg-type]


def test_a_trickling_peer_does_not_keep_the_thread_from_its_stop_flag(loop: str) -> None:
    """A byte every 20 ms never lets the socket go quiet: the C loop must still come back
    to look at the stop flag (after STOP_CHECK), not when its buffer is full."""
    stop = threading.Event()
    gave_up = threading.Event()

    def trickle(conn: ssl.SSLSocket) -> None:
        threading.Timer(0.3, stop.set).start()
        for _ in range(500):  # 10 s, were nothing to stop it
            if gave_up.is_set():
                return
            conn.sendall(b"x")
            time.sleep(0.02)  # the peer's pace: that is the test

    with tls_peer(trickle) as sock:
        started = time.monotonic()
        with pytest.raises(tls._Abandoned):
            receive(sock, [256 * 1024], stop)
        gave_up.set()
        assert time.monotonic() - started < 0.3 + 2 * tls.STOP_CHECK + 0.5
