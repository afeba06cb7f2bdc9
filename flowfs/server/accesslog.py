"""One JSON line per request (method, path, query, status, user, error), flushed at once.

The line tells what the client really got.  A reply that completes is logged
just before its last part is sent, so a client that holds the whole response
always finds its line (tests count requests with it, benchmarks check request
sizes).  A reply that fails is logged when the handler is done, with the status
that reached the client (``null`` if none did, ``500`` if the server answered
for a handler that raised) and ``error`` saying what went wrong.  No header
values other than Range are recorded: never a token.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AccessLog:
    """An append-only, line-buffered JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _range_header(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"range":
            return str(value.decode("latin-1"))
    return None


class AccessLogMiddleware:
    """ASGI middleware that writes an :class:`AccessLog` line per HTTP request."""

    def __init__(self, app: ASGIApp, log: AccessLog) -> None:
        self._app = app
        self._log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        reply = _Reply(scope, self._log)
        try:
            await self._app(scope, receive, reply.wrap(send))
        except Exception as exc:
            reply.failed(exc)
            raise
        reply.done()


class _Reply:
    """What one reply has sent so far, and its one log line."""

    def __init__(self, scope: Scope, log: AccessLog) -> None:
        # Read before routing, which may rewrite parts of the scope.
        self._record: dict[str, Any] = {
            "time": round(time.time(), 3),
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "range": _range_header(scope),
        }
        self._scope = scope
        self._log = log
        self._head: int | None = None  # the status of a head that was sent
        self._head_tried = False
        self._logged = False

    def wrap(self, send: Send) -> Send:
        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._head_tried = True
                await send(message)  # the server may refuse it (a bad header value)
                self._head = message["status"]
                return
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._write(self._head, None)  # before the last part: see the docstring
            await send(message)

        return logging_send

    def failed(self, exc: Exception) -> None:
        if not self._head_tried:  # the server's error handler answers 500
            self._write(500, f"the handler failed: {type(exc).__name__}")
        elif self._head is None:
            self._write(None, f"the reply could not be sent: {exc}")
        else:
            self._write(self._head, f"the reply was cut: {type(exc).__name__}")

    def done(self) -> None:
        # Returned without the last part: the client went away, or a file was short.
        self._write(self._head, "the reply ended before its last byte")

    def _write(self, status: int | None, error: str | None) -> None:
        if self._logged:
            return
        self._logged = True
        state = self._scope.get("state") or {}
        self._log.write({**self._record, "status": status, "user": state.get("user"),
                         "error": error})
