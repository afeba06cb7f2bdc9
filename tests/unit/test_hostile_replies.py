"""Hostile and broken servers: a clear domain error (``flowfs.errors``) or the right answer.

The API client runs over ``httpx.MockTransport`` (the lean Range transport is not in that
path); the lean transport itself is tested against a tiny trio socket server started in
the test, answering scripted, broken HTTP.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowfs.api import MAX_JSON_BYTES, FlowAPI
from flowfs.auth import Credentials
from flowfs.errors import BadReply, FlowError, Transient
from flowfs.model import DataFile, Execution, Project, Sample, parse_id, parse_time
from flowfs.names import MAX_NAME_BYTES, assign_names, sanitize
from flowfs.tls import client_context
from flowfs.transport import CHUNK_EXTENSION, THREAD_MIN, RangeTransport

API = "http://flow.test/api"
FILES = "http://flow.test"
Handler = Callable[[httpx.Request], httpx.Response]
PAYLOAD = bytes(range(256)) * 64  # 16 KiB a server may serve


def make_api(handler: Handler) -> FlowAPI:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return FlowAPI(API, FILES, Credentials("token", "test", token="good"), client)


def as_bytes(data: Any) -> bytes:
    return b"".join(data) if isinstance(data, list) else bytes(data)


async def outcome(call: Awaitable[Any]) -> Any:
    """The result, or the domain error raised; anything else fails the test."""
    try:
        return await call
    except FlowError as exc:
        return exc


# -- the JSON API -------------------------------------------------------------------------

WRONG_SHAPES: list[Any] = [
    [],  # a list where an object is expected
    [{"samples": []}],
    "samples",
    None,
    42,
    {"samples": None},
    {"samples": "abc"},
    {"samples": {"id": "1"}},
    {"count": "12", "samples": [{"id": "1"}]},
    {"count": None, "samples": [None, 3, "x", [], {"id": "1"}]},
    {"count": -5, "samples": [{"id": "1"}]},
    {"count": 1.5e300, "samples": [{"id": "1"}]},
    {"count": True, "samples": [{"id": "1"}]},
]


@pytest.mark.parametrize("reply", WRONG_SHAPES, ids=[str(i) for i in range(len(WRONG_SHAPES))])
async def test_wrong_json_shapes_give_items_or_a_bad_reply(reply: Any,
                                                           autojump_clock: object) -> None:
    api = make_api(lambda req: httpx.Response(200, json=reply))
    got = await outcome(api.list_all("/samples/owned", "samples"))
    if isinstance(got, FlowError):
        assert isinstance(got, BadReply)
    else:
        assert got == [{"id": "1"}] or got == []


async def test_an_absurd_count_does_not_start_a_request_storm(autojump_clock: object) -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 500:
            return httpx.Response(500, json={"error": "stop"})
        first = req.url.params["page"] == "1"
        items = [{"id": str(i)} for i in range(100)] if first else []
        return httpx.Response(200, json={"count": 10**12, "samples": items})

    got = await outcome(make_api(handler).list_all("/samples/owned", "samples"))
    assert calls <= 20, f"{calls} requests for a list whose second page is empty"
    assert not isinstance(got, list) or len(got) == 100


# httpx leaves its inner raw-body generator to the GC when a body is abandoned early: a
# ResourceWarning only, not a flowfs problem (the response itself is closed).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_endless_json_body_is_cut_at_the_bound() -> None:
    sent = 0

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            nonlocal sent
            yield b'{"samples": ["'
            chunk = b"x" * 2**20
            while True:
                sent += len(chunk)
                yield chunk

    api = make_api(lambda req: httpx.Response(200, stream=Endless()))
    with pytest.raises(BadReply, match="larger than"):
        await api.get_json("/samples/owned")
    assert sent <= MAX_JSON_BYTES + 2 * 2**20


@pytest.mark.parametrize("body", [b"", b"null", b"\xff\xfe garbage", b"<html>oops</html>",
                                  b'{"a": ' * 100_000,
                                  b"1e999999"])
async def test_unparsable_json_is_a_bad_reply(body: bytes) -> None:
    api = make_api(lambda req: httpx.Response(200, content=body))
    with pytest.raises(BadReply):
        await api.get_json("/me")


# -- byte ranges ---------------------------------------------------------------------------

def range_reply(req: httpx.Request, *, status: int = 206, length: str | None = None,
                content_range: str | None = None, body: bytes | None = None) -> httpx.Response:
    a, b = (int(x) for x in req.headers["range"].removeprefix("bytes=").split("-"))
    data = PAYLOAD[a:b + 1] if body is None else body
    headers = {"content-range": content_range or f"bytes {a}-{b}/{len(PAYLOAD)}",
               "content-length": length if length is not None else str(len(data))}
    if status == 200:
        del headers["content-range"]
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(data))


HOSTILE_RANGES: list[tuple[str, dict[str, Any]]] = [
    ("negative-length", {"length": "-5"}),
    ("huge-length", {"length": str(10**30)}),
    ("non-numeric-length", {"length": "12abc"}),
    ("length-too-big", {"length": "99999"}),
    ("200-negative-length", {"status": 200, "length": "-1", "body": PAYLOAD}),
    ("200-short-page", {"status": 200, "body": b"<html>bad gateway</html>"}),
    ("wrong-range", {"content_range": "bytes 1-100/16384"}),
    ("garbage-range", {"content_range": "bytes=*"}),
    ("body-longer", {"body": PAYLOAD[:500]}),
    ("body-shorter", {"body": PAYLOAD[:10]}),
]


@pytest.mark.parametrize(("case", "kw"), HOSTILE_RANGES, ids=[c for c, _ in HOSTILE_RANGES])
async def test_hostile_range_replies_never_give_wrong_bytes(case: str, kw: dict[str, Any],
                                                            autojump_clock: object) -> None:
    api = make_api(lambda req: range_reply(req, **kw))
    got = await outcome(api.fetch_range(f"{FILES}/downloads/1/f", 10, 110))
    assert isinstance(got, Transient), f"{case}: {got!r}"


async def test_a_big_enough_html_page_with_200_is_not_served_as_bytes(
    autojump_clock: object,
) -> None:
    """The page is longer than the range: only the file's known size can tell."""
    page = b"<html><body>" + b"Service unavailable. " * 200 + b"</body></html>"

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html",
                                            "content-length": str(len(page))},
                              stream=httpx.ByteStream(page))

    got = await outcome(make_api(handler).fetch_range(f"{FILES}/downloads/1/f", 0, 100,
                                                      size=5000))
    assert isinstance(got, FlowError), f"served {as_bytes(got)[:20]!r}... as the file's bytes"


# -- parsing: flowfs.model and flowfs.names -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                   max_size=4),
    max_leaves=20,
)
FIELDS = ["id", "filename", "size", "created", "md5", "path", "sample", "execution",
          "is_directory", "name", "identifier", "pipeline_name"]
objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS))


@settings(max_examples=300, deadline=None)
@given(obj=objects)
def test_model_parsing_accepts_or_raises_bad_reply(obj: dict[str, Any]) -> None:
    for cls in (DataFile, Project, Sample, Execution):
        try:
            parsed = cls.from_json(obj)
        except BadReply:
            continue
        # Digits only, except a negative int id (see test_ids_of_the_wrong_kind...[-1]).
        assert parsed.id.lstrip("-").isdigit() and len(parsed.id) <= 41
        assert parsed.created >= 0.0 or parsed.created != parsed.created  # NaN stays harmless
        if isinstance(parsed, DataFile):
            assert 0 <= parsed.size < 2**63


@pytest.mark.parametrize("value", [2**63, 2**64 + 1, 10**30, str(2**63 + 7)])
def test_ids_beyond_64_bits_stay_exact(value: int | str) -> None:
    assert parse_id(value) == str(value)
    assert DataFile.from_json({"id": value, "filename": "f", "size": 1}).id == str(value)


# 1.5, True, None, "12a" and "" are in test_model.py.
@pytest.mark.parametrize("value", [-1, "9" * 41, [], {}, "١٢"])
def test_ids_of_the_wrong_kind_are_bad_replies(value: Any) -> None:
    with pytest.raises(BadReply):
        parse_id(value)


# -1, 1.5 and True are in test_model.py.
@pytest.mark.parametrize("value", [10**12 * 2**40, "abc", "-3", []])
def test_bad_sizes_are_bad_replies(value: Any) -> None:
    with pytest.raises(BadReply):
        DataFile.from_json({"id": "1", "filename": "f", "size": value})


@pytest.mark.parametrize("value", ["", "garbage", "9999-99-99", [], {}, float("inf"), -5, 1e308])
def test_unreadable_times_do_not_raise(value: Any) -> None:
    assert isinstance(parse_time(value), float)


@given(name=st.text(max_size=12_000))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_name_becomes_a_safe_path_component(name: str) -> None:
    safe = sanitize(name)
    assert safe not in ("", ".", "..")
    assert "/" not in safe and "\0" not in safe
    assert len(safe.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES


# ".." is in test_names.py.
@pytest.mark.parametrize("name", ["a/b", "../../etc/passwd", "x\0y", "é" * 10_000, "\n"])
def test_hostile_names_are_mapped(name: str) -> None:
    safe = sanitize(name)
    assert "/" not in safe and "\0" not in safe and safe not in (".", "..")
    assert len(safe.encode()) <= MAX_NAME_BYTES


@given(items=st.lists(st.tuples(st.integers(0, 2**70).map(str), st.text(max_size=300)),
                      max_size=30, unique_by=lambda t: t[0]))
@settings(max_examples=200, deadline=None)
def test_assigned_names_are_unique_safe_and_stable(items: list[tuple[str, str]]) -> None:
    names = assign_names(items)
    assert set(names) == {i for i, _ in items}
    assert len(set(names.values())) == len(items)
    for name in names.values():
        assert "/" not in name and "\0" not in name and len(name.encode()) <= MAX_NAME_BYTES
    assert assign_names(list(reversed(items))) == names


# -- the lean transport against a scripted socket server ----------------------------------

async def serve_script(stream: trio.abc.Stream, script: Callable[[bytes, int], bytes],
                       seen: list[bytes]) -> None:
    """Answer each request on the connection with ``script(head, index)``, then close."""
    async with stream:
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return  # a TLS client that checked the connection and left
            if not data:
                return
            buf += data
        seen.append(buf)
        reply = script(buf, len(seen) - 1)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(reply)


@dataclass(frozen=True)
class Via:
    """How the lean transport reaches the scripted server: plain HTTP (body received on
    the event loop or in a thread), or HTTPS with a CA made for the test."""

    name: str
    thread_min: int = THREAD_MIN
    server_tls: ssl.SSLContext | None = None
    client_tls: ssl.SSLContext | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.server_tls else "http"

    async def listen(self, nursery: trio.Nursery,
                     handler: Callable[[trio.abc.Stream], Awaitable[None]]) -> str:
        if self.server_tls is None:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0,
                                                    host="127.0.0.1"))
            sock = listeners[0].socket
        else:
            listeners = await nursery.start(partial(
                trio.serve_ssl_over_tcp, handler, 0, self.server_tls, host="127.0.0.1",
                https_compatible=True))
            sock = listeners[0].transport_listener.socket
        return f"{self.scheme}://127.0.0.1:{sock.getsockname()[1]}"

    def client(self, timeout: float = 5.0, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport(**kw), timeout=httpx.Timeout(timeout))

    def transport(self, **kw: Any) -> RangeTransport:
        inner = httpx.AsyncHTTPTransport(verify=self.client_tls or True)
        return RangeTransport(inner, thread_min=self.thread_min, tls_context=self.client_tls,
                              **kw)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_via(ca: trustme.CA) -> Via:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = client_context()
    ca.configure_trust(client)
    return Via("https", server_tls=server, client_tls=client)


@pytest.fixture(params=["http-loop", "http-thread", "https"])
def via(request: pytest.FixtureRequest, ca: trustme.CA) -> Via:
    if request.param == "https":
        return tls_via(ca)
    return Via(request.param, thread_min=0 if request.param == "http-thread" else THREAD_MIN)


@pytest.fixture(params=["http-thread", "https"])
def threaded(request: pytest.FixtureRequest, ca: trustme.CA) -> Via:
    """The paths that receive bodies in a worker thread (stall and cancellation tests)."""
    return tls_via(ca) if request.param == "https" else Via("http-thread", thread_min=0)


async def start_server(nursery: trio.Nursery, script: Callable[[bytes, int], bytes],
                       via: Via | None = None) -> tuple[str, list[bytes]]:
    seen: list[bytes] = []

    async def handler(stream: trio.abc.Stream) -> None:
        await serve_script(stream, script, seen)

    return await (via or Via("http")).listen(nursery, handler), seen


def someone_elses(size: int) -> bytearray:
    """A body buffer as a recycled or unwritten one may be: full of other bytes."""
    return (bytearray(b"token=SECRET;") * (size // 13 + 1))[:size]


def head(status: bytes, headers: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body


def wanted(request: bytes) -> bytes:
    line = next(h for h in request.split(b"\r\n") if h.lower().startswith(b"range:"))
    a, b = (int(x) for x in line.split(b"=")[1].split(b"-"))
    return PAYLOAD[a:b + 1]


def good(request: bytes, _: int) -> bytes:
    body = wanted(request)
    return head(b"HTTP/1.1 206 Partial Content",
                [b"Content-Length: %d" % len(body), b"Content-Range: bytes 10-109/16384"], body)


def no_length(request: bytes, _: int) -> bytes:
    return head(b"HTTP/1.1 206 Partial Content", [b"Content-Range: bytes 10-109/16384",
                                                  b"Connection: close"], wanted(request))


def chunked(request: bytes, _: int) -> bytes:
    body = wanted(request)
    parts = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 30]), body[i:i + 30])
                     for i in range(0, len(body), 30))
    return head(b"HTTP/1.1 206 Partial Content",
                [b"Transfer-Encoding: chunked", b"Content-Range: bytes 10-109/16384"],
                parts + b"0\r\n\r\n")


def huge_head(request: bytes, _: int) -> bytes:
    return head(b"HTTP/1.1 206 Partial Content", [b"X-Pad: " + b"a" * 300_000], b"")


def bad_status(request: bytes, _: int) -> bytes:
    return head(b"HTTP/9 two hundred six", [b"Content-Length: 100"], wanted(request))


def cut_mid_body(request: bytes, _: int) -> bytes:
    return good(request, 0)[:-40]


def wrong_length(request: bytes, _: int) -> bytes:
    body = wanted(request)
    return head(b"HTTP/1.1 206 Partial Content",
                [b"Content-Length: %d" % (len(body) - 20), b"Content-Range: bytes 10-109/16384"],
                body)


async def test_the_lean_transport_reads_exact_bytes_into_its_buffer(
    nursery: trio.Nursery, via: Via,
) -> None:
    url, _ = await start_server(nursery, good, via)
    async with via.client() as client:
        resp = await client.get(f"{url}/downloads/1/f", headers={"Range": "bytes=10-109"})
        assert resp.status_code == 206 and resp.content == PAYLOAD[10:110]


async def test_a_pooled_connection_the_server_closed_is_replaced(nursery: trio.Nursery,
                                                                via: Via) -> None:
    # The scripted server closes every connection after one reply: each later request
    # finds its pooled connection closed and must go out on a new one, bytes exact.
    url, seen = await start_server(nursery, good, via)
    async with via.client() as client:
        for _ in range(3):
            resp = await client.get(f"{url}/downloads/1/f", headers={"Range": "bytes=10-109"})
            assert resp.status_code == 206 and resp.content == PAYLOAD[10:110]
    assert len(seen) == 3


async def test_warmed_tls_connections_spare_the_first_requests_their_handshake(
        nursery: trio.Nursery, ca: trustme.CA) -> None:
    via = tls_via(ca)
    accepted = 0
    seen: list[bytes] = []

    async def handler(stream: trio.abc.Stream) -> None:
        nonlocal accepted
        accepted += 1
        await serve_script(stream, good, seen)

    url = await via.listen(nursery, handler)
    transport = via.transport()
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0)) as client:
        assert await transport.warm(url, 3) == 3
        assert transport.tls_handshakes == 3
        resp = await client.get(f"{url}/downloads/1/f", headers={"Range": "bytes=10-109"})
        assert resp.content == PAYLOAD[10:110]
        assert transport.tls_handshakes == 3  # the request went out on a warm connection
        assert await transport.warm("http://127.0.0.1:1", 3) == 0  # plain HTTP: nothing to do
    assert accepted == 3 and len(seen) == 1


@pytest.mark.parametrize("script", [no_length, chunked], ids=["no-length", "chunked"])
async def test_unsized_replies_fall_back_to_httpx_with_right_bytes(
    script: Callable[[bytes, int], bytes], nursery: trio.Nursery, via: Via,
) -> None:
    url, seen = await start_server(nursery, script, via)
    async with via.client() as client:
        resp = await client.get(f"{url}/downloads/1/f", headers={"Range": "bytes=10-109"})
        assert resp.content == PAYLOAD[10:110]
    assert len(seen) == 2  # the lean path gave up, httpx asked again


@pytest.mark.parametrize("script", [huge_head, bad_status, cut_mid_body],
                         ids=["huge-head", "bad-status-line", "cut-mid-body"])
async def test_broken_replies_are_httpx_errors(script: Callable[[bytes, int], bytes],
                                               nursery: trio.Nursery, via: Via) -> None:
    url, _ = await start_server(nursery, script, via)
    async with via.client() as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{url}/downloads/1/f", headers={"Range": "bytes=10-109"})


@pytest.mark.parametrize("script", [no_length, chunked, huge_head, bad_status, cut_mid_body,
                                    wrong_length, good],
                         ids=["no-length", "chunked", "huge-head", "bad-status-line",
                              "cut-mid-body", "wrong-length", "good"])
async def test_through_the_api_a_range_is_right_or_a_domain_error(
    script: Callable[[bytes, int], bytes], nursery: trio.Nursery, via: Via,
) -> None:
    url, _ = await start_server(nursery, script, via)
    # Bodies land in buffers holding other bytes (recycled or never written: see
    # flowfs.buffers): a reply cut short must be an error, never those bytes.
    async with via.client(allocate=someone_elses) as client:
        api = FlowAPI(API, url, Credentials("token", "test", token="good"), client)
        with trio.fail_after(60):
            got = await outcome(api.fetch_range(f"{url}/downloads/1/f", 10, 110))
    if isinstance(got, FlowError):
        assert isinstance(got, Transient) and script is not good
    else:
        assert as_bytes(got) == PAYLOAD[10:110]



# -- large bodies, received by a worker thread --------------------------------------------

BIG = bytes(range(251)) * 12_000  # ~2.9 MiB: a prime period, so a misplaced byte shows


def big_good(request: bytes, _: int) -> bytes:
    return head(b"HTTP/1.1 206 Partial Content",
                [b"Content-Length: %d" % len(BIG), b"Content-Range: bytes 0-%d/%d"
                 % (len(BIG) - 1, len(BIG))], BIG)


async def test_a_large_body_lands_exactly_in_its_pieces(nursery: trio.Nursery, via: Via) -> None:
    url, _ = await start_server(nursery, big_good, via)
    async with via.client(allocate=someone_elses) as client:
        resp = await client.get(f"{url}/downloads/1/f",
                                headers={"Range": f"bytes=0-{len(BIG) - 1}"},
                                extensions={CHUNK_EXTENSION: 256 * 1024})
        pieces = resp.extensions["flowfs_body"]
        assert [len(p) for p in pieces[:-1]] == [256 * 1024] * (len(pieces) - 1)
        assert b"".join(pieces) == BIG


async def stall_after_half(stream: trio.abc.Stream, sent: trio.Event) -> None:
    """Send the head and half of a large body, then nothing (but keep the connection)."""
    async with stream:
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                buf += await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
        whole = big_good(buf, 0)
        try:
            await stream.send_all(whole[: len(whole) // 2])
        except trio.BrokenResourceError:
            return  # the client gave up (a test cancelled it) before taking half the body
        sent.set()
        await trio.sleep_forever()


async def start_staller(nursery: trio.Nursery, via: Via) -> tuple[str, trio.Event]:
    sent = trio.Event()
    return await via.listen(nursery, partial(stall_after_half, sent=sent)), sent


async def test_a_body_that_stalls_in_the_thread_times_out(nursery: trio.Nursery,
                                                          threaded: Via) -> None:
    url, _ = await start_staller(nursery, threaded)
    async with threaded.client(timeout=1.0) as client:
        start = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{url}/downloads/1/f", headers={"Range": f"bytes=0-{len(BIG) - 1}"})
        assert trio.current_time() - start < 5.0


async def test_a_cancelled_thread_receive_returns_at_once(nursery: trio.Nursery,
                                                          threaded: Via) -> None:
    url, sent = await start_staller(nursery, threaded)
    transport = threaded.transport()
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0)) as client:
        with trio.fail_after(10):  # a stall fails the test here, not as an unbound `start`
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(client.get, f"{url}/downloads/1/f",
                                         headers={"Range": f"bytes=0-{len(BIG) - 1}"}))
                await sent.wait()
                with trio.fail_after(5):
                    while transport.receiving_threads == 0:  # until the thread waits for more
                        await trio.sleep(0.01)
                start = trio.current_time()
                inner.cancel_scope.cancel()
        assert trio.current_time() - start < 1.0  # not the 60 s read timeout


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_receives_cancelled_before_or_during_their_thread_leave_no_descriptor(
        threaded: Via) -> None:
    transport = threaded.transport(max_threads=1, tls_threads=1)  # one thread, two receives
    headers = {"Range": f"bytes=0-{len(BIG) - 1}"}
    before = open_fds()
    async with trio.open_nursery() as server:  # stopped before counting: its sockets close
        url, _ = await start_staller(server, threaded)
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0)) as client:
            with trio.fail_after(10):
                async with trio.open_nursery() as inner:
                    for n in (1, 2):
                        inner.start_soon(partial(client.get, f"{url}/downloads/{n}/f",
                                                 headers=headers))
                    # One receive holds the only thread; the other waits for it: cancel both.
                    while not (transport.receiving_threads == 1
                               and transport.waiting_for_threads == 1):
                        await trio.sleep(0.01)
                    inner.cancel_scope.cancel()
        server.cancel_scope.cancel()
    with trio.fail_after(5):  # the abandoned thread closes its descriptor at its next wake
        while open_fds() > before:
            await trio.sleep(0.05)
