"""``?page=N&count=M`` parsing and the ``{"count", "page", "<key>"}`` envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from flowfs.server.errors import bad_request

DEFAULT_COUNT = 20
MAX_COUNT = 100


def _positive(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid {name}: {raw[:40]!r}") from None
    if value < 1:
        raise bad_request(f"Invalid {name}: must be at least 1")
    return value


def page_params(request: Request) -> tuple[int, int]:
    """(page, count) from the query string; 400 for bad values or ``count`` over 100."""
    page = _positive(request, "page", 1)
    count = _positive(request, "count", DEFAULT_COUNT)
    if count > MAX_COUNT:
        raise bad_request(f"Cannot request more than {MAX_COUNT} items")
    return page, count


def page_response(key: str, items: Sequence[Any], page: int, count: int) -> JSONResponse:
    """One page of ``items`` (already in their stable order) in the list envelope."""
    start = (page - 1) * count
    return JSONResponse({"count": len(items), "page": page, key: list(items[start:start + count])})
