"""Serving the app with uvicorn on a socket we bind ourselves.

Binding first lets port 0 work (the real port is known before anything is
announced).  Readiness is announced only once uvicorn accepts connections:
two lines on stdout and, if asked, an atomically written ready file.  SIGINT
and SIGTERM stop the server gracefully; unlike uvicorn's own handling, the
signal is not re-raised afterwards, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_GRACE_SECONDS = 1
_KEEP_ALIVE_SECONDS = 75  # as nginx: pooled client connections are rarely cut mid-use


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def handling_signals(handler: Callable[[int, FrameType | None], Any]) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` inside the block (main thread only), then back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def base_url(sock: socket.socket, scheme: str = "http") -> str:
    """``http://host:port`` (or https) for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def write_ready_file(path: Path, info: dict[str, object]) -> None:
    """Write ``info`` as JSON so that a reader never sees a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _Server(uvicorn.Server):
    """uvicorn's server, announcing readiness and exiting quietly on a signal."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn ends its grace period by cancelling the requests still running,
        # which logs a traceback for every download in flight.  Cutting their
        # connections a little earlier ends them the quiet way: each stream sees an
        # ordinary client disconnect.
        cut = asyncio.get_running_loop().call_later(_GRACE_SECONDS, self._abort_connections)
        try:
            await super().shutdown(sockets)
        finally:
            cut.cancel()

    def _abort_connections(self) -> None:
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with handling_signals(self._exit_on_signal):
            yield

    def _exit_on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: stop waiting for clients
        self.should_exit = True


def serve(app: ASGIApp, sock: socket.socket, on_ready: Callable[[], None],
          tls: tuple[Path, Path] | None = None) -> None:
    """Run ``app`` on ``sock`` until SIGINT/SIGTERM; ``on_ready`` once it accepts.

    ``tls``: (certificate, key) PEM files to serve HTTPS with.
    """
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=_GRACE_SECONDS + 5,
        timeout_keep_alive=_KEEP_ALIVE_SECONDS,
        ssl_certfile=None if tls is None else str(tls[0]),
        ssl_keyfile=None if tls is None else str(tls[1]),
    )
    _Server(config, on_ready).run(sockets=[sock])


def announce(api_url: str, files_url: str, ready_file: Path | None) -> None:
    """Tell the world the server is up (stdout lines, then the ready file)."""
    sys.stdout.write(f"API:   {api_url}\nFiles: {files_url}\n")
    sys.stdout.flush()
    if ready_file is not None:
        write_ready_file(ready_file, {"api": api_url, "files": files_url, "pid": os.getpid()})
