"""One JSON line per request (method, path, query, status, user), flushed at once.

Tests count requests with it and benchmarks check request sizes, so the line
is written when the response starts, before its body.  No header values other
than Range are recorded: never a token.
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

        # Read before routing, which may rewrite parts of the scope.
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state") or {}
                self._log.write({
                    "time": round(time.time(), 3),
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": message["status"],
                    "user": state.get("user"),
                    "range": _range_header(scope),
                })
            await send(message)

        await self._app(scope, receive, logging_send)
