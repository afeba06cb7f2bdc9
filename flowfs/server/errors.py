"""HTTP refusals: one exception type, one JSON body shape.

Handlers raise :class:`ApiError`; the app turns it into
``{"error": msg, "code": CODE, "status": n}`` (the shape of Flow's download guide).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Codes by status, for refusals that do not name a more specific one.
_DEFAULT_CODES = MappingProxyType({
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "NOT_READY",
    410: "EXPIRED",
    413: "TOO_LARGE",
    416: "RANGE_NOT_SATISFIABLE",
    500: "INTERNAL",
})


class ApiError(Exception):
    """A refusal to send to the client as a JSON body with its status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "ERROR")
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> Response:
        """The JSON response that carries this refusal."""
        body = {"error": self.message, "code": self.code, "status": self.status, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def unauthenticated(message: str = "Authentication required") -> ApiError:
    """401, with the challenge header a client expects."""
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def not_found(what: str = "Not found") -> ApiError:
    """404 NOT_FOUND."""
    return ApiError(404, what)


def bad_request(message: str) -> ApiError:
    """400 BAD_REQUEST."""
    return ApiError(400, message)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for :class:`ApiError`."""
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method) in our body shape."""
    status = getattr(exc, "status_code", 500)
    message = {404: "Not found", 405: "Method not allowed"}.get(status, "Request refused")
    headers = getattr(exc, "headers", None) or {}
    return ApiError(status, message, headers=dict(headers)).response()
