"""Reading request bodies with a size bound."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from flowfs.server.errors import ApiError, bad_request

MAX_BODY = 2**20


async def read_json_object(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The request body as a JSON object; 413 past ``limit`` bytes, 400 if not an object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body larger than {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"Request body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        document = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        raise bad_request("Request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise bad_request("Request body must be a JSON object")
    return document
