"""The Flow HTTP API: every request goes through here (sockets: transport, tls).

One ``httpx.AsyncClient``; retries with jittered exponential backoff for
connect errors, timeouts, truncated bodies, 429 and 5xx; one shared token
refresh on 401; HTTP status -> domain error. Byte ranges are checked (206,
matching Content-Range, exact length) before anyone sees a byte.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import trio

from flowfs import __version__
from flowfs.auth import Credentials, TokenState
from flowfs.errors import (
    AuthExpired,
    BadReply,
    FlowError,
    Forbidden,
    NotFound,
    Rejected,
    Transient,
    Untrusted,
)
from flowfs.link import LinkEstimate
from flowfs.proxy import tunnels
from flowfs.retry import Failure, Retry
from flowfs.tasks import gather
from flowfs.tls import client_context, untrusted
from flowfs.transport import (
    BODY_EXTENSION,
    CHUNK_EXTENSION,
    TIMING_EXTENSION,
    ProxyRoutes,
    RangeTransport,
)

Bytes = bytes | bytearray | list[bytearray]  # a range's bytes, possibly in block-sized pieces

log = logging.getLogger(__name__)
# Response extension: seconds from sending a request to its reply's head (set by _exchange).
_WAITED = "flowfs_waited"
T = TypeVar("T")
READS = Retry()  # GETs: every failure of a harmless request is retried, 5xx included

PAGE_SIZE = 100
MAX_JSON_BYTES = 64 * 2**20
PAGE_CONCURRENCY = 8
REFRESH_COOKIE = "flow_refresh_token"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def error_for_status(status: int, body: bytes, what: str) -> Exception:
    """The domain error for a refusal (docs/flow-api.md, Downloads: 'Refusals')."""
    message = _error_message(body) or f"HTTP {status}"
    if status == 401:
        return AuthExpired(f"{what}: {message}")
    if status == 403:
        return Forbidden(f"{what}: {message}")
    if status in (404, 410):
        return NotFound(f"{what}: {message}")
    if status in (400, 409, 413, 422):
        return Rejected(message)
    return Transient(f"{what}: {message}")


def _error_message(body: bytes) -> str:
    """Read a legacy {"error"} body or an RFC 9457 problem; '' when neither."""
    try:
        obj = json.loads(body[:65536])
    except ValueError:
        return ""
    if not isinstance(obj, dict):
        return ""
    for key in ("error", "detail", "title"):
        if isinstance(obj.get(key), str):
            return obj[key][:200]
    return ""


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """'bytes a-b/total' -> (a, b + 1, total or None)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)) + 1, total


def new_client(max_connections: int = 64,
               allocate: Callable[[int], bytearray] = bytearray) -> httpx.AsyncClient:
    """The HTTP client of a mount; ``allocate`` makes the buffers Range bodies land in.

    Proxies (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) are routed by flowfs.proxy for
    every request alike: Range bodies over HTTPS take the lean path through a CONNECT
    tunnel too; what the lean path does not take goes through httpx on the same route.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    timeout = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=60.0)
    # One TLS context for httpx and the lean path alike: the same CAs, the same checks.
    context = client_context()

    def route(proxy: httpx.URL | None) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(limits=limits, verify=context, proxy=proxy)

    transport = RangeTransport(ProxyRoutes(route), max_connections=max_connections,
                               allocate=allocate, tls_context=context)
    # trust_env off: the routes above read the proxy variables (the CAs come from context).
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True,
                             trust_env=False, headers={"User-Agent": f"flowfs/{__version__}"})


def transport_failure(url: str, exc: httpx.TransportError) -> Transient:
    """The domain error for a failed exchange; a certificate failure says what to do."""
    cert = untrusted(exc)
    if cert is not None:
        host = httpx.URL(url).host
        return Untrusted(
            f"the certificate of {host} is not trusted ({cert.verify_message or cert}); "
            "if your site uses its own certificate authority, set SSL_CERT_FILE to its "
            "PEM file (see docs/troubleshooting.md)")
    return Transient(f"{_short(url)}: {type(exc).__name__}")


def lean_route(url: str) -> bool:
    """Whether Range bodies from ``url`` are received into our buffers (RangeTransport)."""
    return url.lower().startswith(("http://", "https://")) and tunnels(url)


class FlowAPI:
    """An authenticated client of one Flow instance."""

    def __init__(
        self, api_url: str, files_url: str, creds: Credentials | None, client: httpx.AsyncClient
    ) -> None:
        self.api_url = api_url
        self.files_url = files_url
        self._client = client
        self.auth = TokenState(creds, self._login, self._refresh)
        self.requests = 0
        self.bytes_fetched = 0
        self.link = LinkEstimate()  # measured by every Range reply; read by the reader

    # -- URLs -------------------------------------------------------------
    def data_url(self, data_id: str, filename: str) -> str:
        return f"{self.files_url}/downloads/{data_id}/{quote(filename, safe='')}"

    def job_url(self, job_id: str) -> str:
        return f"{self.files_url}/downloads/{quote(job_id, safe='')}"

    async def warm_files(self, count: int) -> int:
        """Open keep-alive connections to the files server before the first stream needs them."""
        transport = self._client._transport  # the one we built in new_client
        if isinstance(transport, RangeTransport) and lean_route(self.files_url):
            return await transport.warm(self.files_url, count)
        return 0

    # -- authentication exchanges -------------------------------------------
    async def _login(self, username: str, password: str) -> tuple[str, str]:
        resp = await self._unauthenticated("POST", f"{self.api_url}/login",
                                           json={"username": username, "password": password})
        if resp.status_code != 200:
            raise AuthExpired(f"login refused: {_error_message(resp.content) or resp.status_code}")
        token = _json_field(resp, "token")
        refresh = resp.cookies.get(REFRESH_COOKIE) or ""
        self._client.cookies.clear()  # the refresh cookie is ours to send, not the jar's
        return token, refresh

    async def _refresh(self, refresh_token: str) -> str:
        resp = await self._unauthenticated(
            "GET", f"{self.api_url}/token",
            headers={"Cookie": f"{REFRESH_COOKIE}={refresh_token}"})
        self._client.cookies.clear()
        if resp.status_code != 200:
            raise AuthExpired(f"session refresh refused: {_error_message(resp.content)}")
        return _json_field(resp, "token")

    async def login(self, username: str, password: str) -> tuple[str, str]:
        """Log in with a password: (access token, refresh token). For `flowfs login`."""
        return await self._login(username, password)

    async def _unauthenticated(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """An exchange without a token whose reply the caller judges (login, refresh).

        Only 429 and 5xx are failures here (retried); any other status is returned as it is.
        """
        async def whole(resp: httpx.Response) -> httpx.Response:
            await resp.aread()
            return resp

        return await self._exchange(method, url, whole, auth=False,
                                    accept=lambda status: status < 500 and status != 429, **kw)

    # -- JSON API -------------------------------------------------------------
    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET {api}{path} as a JSON object, with retries, refresh and error mapping."""
        url = f"{self.api_url}{path}"
        obj = await self._exchange("GET", url, _json_reader(path), params=params)
        if not isinstance(obj, dict):
            raise BadReply(f"{path}: expected a JSON object")
        return obj

    async def post_json(self, path: str, payload: dict[str, Any],
                        headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST once: a request that may have reached the server is never sent again here.

        A failure after sending (a reset, a cut reply) leaves it unknown whether the server
        acted; that is a ``Transient`` for the caller to resolve (its own key, a listing).
        """
        url = f"{self.api_url}{path}"
        obj = await self._exchange("POST", url, _json_reader(path), json=payload,
                                   headers=headers, retry=Retry(retry_5xx=False, resend=False))
        return obj if isinstance(obj, dict) else {}

    async def delete(self, path: str) -> None:
        async def nothing(resp: httpx.Response) -> None:
            return None

        await self._exchange("DELETE", f"{self.api_url}{path}", nothing,
                             retry=Retry(retry_5xx=False))

    async def list_all(self, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paginated list: page 1, then the rest concurrently.

        The total from page 1 says how many pages to ask for, but is not trusted
        beyond that: the first short page ends the list (a server claiming 10**12
        items costs one extra request, not a billion).
        """
        first = await self.get_json(path, {"page": 1, "count": PAGE_SIZE})
        items = _page_items(first, key, path)
        total = first.get("count")
        if (not isinstance(total, int) or isinstance(total, bool) or total <= len(items)
                or len(items) < PAGE_SIZE):
            return items
        results: dict[int, list[dict[str, Any]]] = {1: items}
        state = {"next": 2, "end": math.ceil(total / PAGE_SIZE)}

        async def worker() -> None:
            while state["next"] <= state["end"]:
                page = state["next"]
                state["next"] += 1
                got = _page_items(await self.get_json(path, {"page": page, "count": PAGE_SIZE}),
                                  key, path)
                results[page] = got
                if len(got) < PAGE_SIZE:
                    state["end"] = min(state["end"], page)

        await gather(*[worker] * PAGE_CONCURRENCY)
        merged: list[dict[str, Any]] = []
        for page in range(1, state["end"] + 1):
            merged.extend(results.get(page, []))
        return merged

    # -- bytes ------------------------------------------------------------------
    async def fetch_range(self, url: str, start: int, end: int, chunk: int = 0,
                          size: int | None = None) -> Bytes:
        """Exactly the bytes [start, end) of ``url``, checked before they are returned.

        With ``chunk``, the bytes may come as a list of pieces of that size (the last
        one shorter), received in place without a copy. ``size``, the file's known
        length, lets a ``200`` reply (a server ignoring Range) be checked too.
        """
        if end <= start:
            return b""
        # identity: byte ranges of the stored bytes, never of a compressed rendition
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        extensions = {CHUNK_EXTENSION: chunk} if chunk else None

        async def checked(resp: httpx.Response) -> tuple[Bytes, tuple[float, float]]:
            head = trio.current_time()  # httpx's own path: its head has come
            try:
                data = await _read_range(resp, start, end, size)
            except BadReply as exc:
                raise _BodyFailure(str(exc)) from None
            # The lean paths time themselves; on httpx's the head came after `waited`.
            timing = resp.extensions.get(TIMING_EXTENSION)
            waited = resp.extensions.get(_WAITED, 0.0)
            return data, timing or (waited, waited + trio.current_time() - head)

        data, timing = await self._exchange("GET", url, checked, headers=headers,
                                            extensions=extensions, retry=Retry(body=True))
        self.bytes_fetched += end - start
        self.link.observe(end - start, *timing)
        return data

    # -- the core exchange ----------------------------------------------------
    async def _exchange(self, method: str, url: str,
                        consume: Callable[[httpx.Response], Awaitable[T]], *, retry: Retry = READS,
                        accept: Callable[[int], bool] = lambda status: 200 <= status < 300,
                        auth: bool = True, **kw: Any) -> T:
        """One request under one retry budget (flowfs.retry): ``consume`` reads the reply.

        ``consume`` gets a streamed response whose status ``accept`` took; it may raise
        ``_BodyFailure`` for a body that must be fetched again. Other statuses become
        domain errors; with ``auth`` the request carries the token, and a refusal a new
        token may cure (``auth.refreshable``) gets one shared refresh and one more try.
        """
        refreshed = False
        headers = kw.pop("headers", None) or {}
        attempt = 0
        while True:
            attempt += 1
            token = await self.auth.current() if auth else None
            bearer = {"Authorization": f"Bearer {token}"} if token else {}
            req = self._client.build_request(method, url, headers={**headers, **bearer}, **kw)
            self.requests += 1
            sent = trio.current_time()
            try:
                resp = await self._client.send(req, stream=True)
                resp.extensions[_WAITED] = waited = trio.current_time() - sent
                self.link.hint(waited)
            except httpx.TransportError as exc:
                failure = transport_failure(url, exc)
                await self._again(retry, _kind(exc, failure), attempt, failure, url)
                continue
            try:
                if accept(status := resp.status_code):
                    try:
                        return await consume(resp)
                    except _BodyFailure as exc:
                        body_failure: FlowError | None = BadReply(f"{_short(url)}: {exc}")
                    except httpx.TransportError as exc:
                        body_failure = Transient(f"reply cut short: {type(exc).__name__}")
                else:
                    body_failure = None
                    body = await _read_bounded(resp, 65536, allow_truncate=True)
            finally:
                await resp.aclose()
            if body_failure is not None:
                await self._again(retry, Failure.BODY, attempt, body_failure, url)
                continue
            if auth and not refreshed and self.auth.refreshable(status, body):
                refreshed = True
                await self.auth.refresh(token)
                continue
            await self._again(retry, Failure.STATUS, attempt,
                              error_for_status(status, body, _short(url)), url,
                              status=status, retry_after=resp.headers.get("retry-after"))

    @staticmethod
    async def _again(retry: Retry, failure: Failure, attempt: int, error: Exception, url: str,
                     **kw: Any) -> None:
        """Wait before the next attempt, or raise ``error`` if the budget says no more."""
        wait = retry.delay(failure, attempt, now=trio.current_time(),
                           deadline=trio.current_effective_deadline(), **kw)
        if wait is None:
            raise error
        log.info("retrying %s in %.2f s (attempt %d): %s", _short(url), wait, attempt, error)
        await trio.sleep(wait)


def _kind(exc: httpx.TransportError, failure: FlowError) -> Failure:
    if isinstance(failure, Untrusted):
        return Failure.UNTRUSTED
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure.UNSENT
    return Failure.MAYBE_SENT


def _json_reader(path: str) -> Callable[[httpx.Response], Awaitable[Any]]:
    async def read(resp: httpx.Response) -> Any:
        return _decode_json(await _read_bounded(resp, MAX_JSON_BYTES), path)
    return read


class _BodyFailure(Exception):
    """A reply body that cannot be used (cut short, not the requested bytes): fetched again."""


class _Truncated(_BodyFailure):
    """A body that ended early (connection cut): retried."""


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def _json_field(resp: httpx.Response, key: str) -> str:
    try:
        value = resp.json().get(key)
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise BadReply(f"the server's reply has no {key!r}")
    return value


def _page_items(obj: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    items = obj.get(key)
    if not isinstance(items, list):
        raise BadReply(f"{path}: the reply has no {key!r} list")
    return [item for item in items if isinstance(item, dict)]


async def _read_bounded(resp: httpx.Response, limit: int, allow_truncate: bool = False) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        async with aclosing(resp.aiter_bytes()) as body:  # type: ignore[type-var]
            async for chunk in body:
                total += len(chunk)
                if total > limit:
                    if allow_truncate:
                        break
                    raise BadReply(f"reply larger than {limit} bytes")
                chunks.append(chunk)
    except httpx.TransportError as exc:
        raise Transient(f"reply cut short: {type(exc).__name__}") from None
    return b"".join(chunks)


async def _read_range(resp: httpx.Response, start: int, end: int,
                      size: int | None = None) -> Bytes:
    """Check a Range reply and read exactly [start, end) of the file from it."""
    want = end - start
    skip = 0
    if resp.headers.get("content-encoding", "identity").lower() != "identity":
        raise BadReply(f"a {resp.headers['content-encoding']}-encoded reply to a Range request")
    if resp.status_code == 206:
        cr = parse_content_range(resp.headers.get("content-range"))
        if cr is None or cr[0] != start or cr[1] != end:
            raise BadReply(f"Content-Range {resp.headers.get('content-range')!r} "
                           f"does not match bytes {start}-{end - 1}")
        if size is not None and cr[2] is not None and cr[2] != size:
            raise BadReply(f"the file is {cr[2]} bytes on the server, {size} in the listing")
        length = resp.headers.get("content-length")
        if length is not None and length != str(want):
            raise BadReply(f"Content-Length {length} for {want} bytes")
    elif resp.status_code == 200:
        # The server ignored Range: skip to our bytes and stop reading after them.
        skip = start
        # Only the whole file, of exactly the known size, is
        # trusted: an error page from a proxy must never pass for file bytes.
        length = resp.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) < end:
            raise BadReply(f"a full reply of {length} bytes cannot hold bytes up to {end}")
        if size is not None and int(length) != size:
            raise BadReply(f"a full reply of {length} bytes for a file of {size}")
    else:
        raise BadReply(f"unexpected HTTP {resp.status_code} to a Range request")
    shared = resp.extensions.pop(BODY_EXTENSION, None)
    if isinstance(shared, list) and resp.status_code == 206:
        # httpx responses live in reference cycles until the garbage collector runs;
        # emptying the list the response's stream shares frees the body with us.
        pieces = list(shared)
        shared.clear()
        got = sum(len(piece) for piece in pieces)
        if got != want:  # the lean transport read exactly Content-Length bytes
            raise _Truncated(f"body of {got} bytes for {want}")
        return pieces[0] if len(pieces) == 1 else pieces
    buf = bytearray(want)
    view = memoryview(buf)
    try:
        async with aclosing(resp.aiter_raw()) as body:  # type: ignore[type-var]
            got = await _fill(body, view, skip, want, exact=resp.status_code == 206)
    except httpx.TransportError as exc:
        raise _Truncated(f"body cut short ({type(exc).__name__})") from None
    if got != want:
        raise _Truncated(f"body ended after {got} of {want} bytes")
    return buf


def _decode_json(body: bytes, path: str) -> Any:
    """A reply body as JSON; BadReply for anything else (deep nesting included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadReply(f"{path}: the server sent something that is not JSON") from None


async def _fill(body: AsyncIterator[bytes], view: memoryview, skip: int, want: int,
                *, exact: bool) -> int:
    """Copy the body into ``view`` after skipping ``skip`` bytes; the count copied."""
    got = 0
    async for chunk in body:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk = chunk[skip:]
            skip = 0
        n = min(len(chunk), want - got)
        if exact and len(chunk) > want - got:
            raise BadReply("the body is longer than the requested range")
        view[got:got + n] = chunk[:n]
        got += n
        if got == want and not exact:
            break
    return got
