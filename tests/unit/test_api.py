"""The HTTP client against a scripted server: retries, refresh, error mapping, range checks."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import trio

from flowfs.api import FlowAPI, parse_content_range
from flowfs.auth import Credentials
from flowfs.errors import AuthExpired, BadReply, Forbidden, NotFound, Transient
from flowfs.retry import backoff_delay

API = "http://flow.test/api"
FILES = "http://flow.test"
Handler = Callable[[httpx.Request], httpx.Response]


def make_api(handler: Handler, creds: Credentials | None = None) -> FlowAPI:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    creds = creds or Credentials("token", "test", token="good")
    return FlowAPI(API, FILES, creds, client)


def problem(status: int, msg: str = "nope") -> httpx.Response:
    return httpx.Response(status, json={"error": msg, "status": status})


async def test_lists_are_paged_by_100_and_merged_in_order(autojump_clock: object) -> None:
    seen: list[tuple[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        page, count = req.url.params["page"], req.url.params["count"]
        seen.append((page, count))
        start = (int(page) - 1) * 100
        items = [{"id": str(i)} for i in range(start, min(start + 100, 250))]
        return httpx.Response(200, json={"count": 250, "page": int(page), "samples": items})

    items = await make_api(handler).list_all("/samples/owned", "samples")
    assert [int(i["id"]) for i in items] == list(range(250))
    assert sorted(seen) == [("1", "100"), ("2", "100"), ("3", "100")]


async def test_api_replies_tell_the_reader_how_far_the_servers_are(autojump_clock: object) -> None:
    # 50 ms to each reply: a fresh mount's first file must be read as a distant one.
    async def handler(req: httpx.Request) -> httpx.Response:
        await trio.sleep(0.05)
        return httpx.Response(200, json={"username": "alice"})

    api = make_api(handler)  # type: ignore[arg-type]
    assert not api.link.far
    await api.get_json("/me")
    assert api.link.far and api.link.latency == pytest.approx(0.05, abs=0.001)


async def test_range_replies_through_httpx_are_timed_from_the_request(
        autojump_clock: object) -> None:
    # Behind a proxy the byte path is httpx's own: its Range replies used to be timed from
    # their head, so a link 50 ms away looked like loopback once the first one came.
    async def handler(req: httpx.Request) -> httpx.Response:
        await trio.sleep(0.05)
        return httpx.Response(206, stream=httpx.ByteStream(b"x" * 100),
                              headers={"Content-Range": "bytes 0-99/1000",
                                       "Content-Length": "100"})

    api = make_api(handler)  # type: ignore[arg-type]
    assert await api.fetch_range(f"{FILES}/downloads/1/f", 0, 100) == b"x" * 100
    assert api.link.samples == 1 and api.link.far
    assert api.link.latency == pytest.approx(0.05, abs=0.001)


async def test_server_errors_are_retried_then_succeed(autojump_clock: object) -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return problem(503) if calls == 1 else httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(200, json={"username": "alice"})

    assert (await make_api(handler).get_json("/me"))["username"] == "alice"
    assert calls == 3


async def test_persistent_server_errors_become_transient(autojump_clock: object) -> None:
    with pytest.raises(Transient):
        await make_api(lambda req: problem(500)).get_json("/me")


async def test_connection_failures_become_transient(autojump_clock: object) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(Transient):
        await make_api(handler).get_json("/me")


@pytest.mark.parametrize(("status", "exc"), [(403, Forbidden), (404, NotFound), (410, NotFound)])
async def test_refusals_map_to_domain_errors(status: int, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        await make_api(lambda req: problem(status)).get_json("/data/1")


async def test_html_from_a_proxy_is_a_bad_reply() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>gateway</html>")

    with pytest.raises(BadReply):
        await make_api(handler).get_json("/me")


async def test_one_refresh_is_shared_by_concurrent_requests() -> None:
    refreshes = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal refreshes
        if req.url.path == "/api/token":
            assert "flow_refresh_token=R" in req.headers["cookie"]
            refreshes += 1
            return httpx.Response(200, json={"token": "fresh"})
        if req.headers.get("authorization") != "Bearer fresh":
            return problem(401, "expired")
        return httpx.Response(200, json={"ok": True})

    api = make_api(handler, Credentials("session", "s", token="old", refresh_token="R"))
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(api.get_json, "/me")
    assert refreshes == 1


@pytest.mark.parametrize(("kind", "reply", "refreshed"), [
    ("session", httpx.Response(403), True),  # real Flow's answer to an expired token, too
    ("session", httpx.Response(404), True),
    ("session", problem(403, "not yours"), False),  # a refusal that says why is an answer
    ("session", problem(404, "no such sample"), False),
    ("token", httpx.Response(403), False),  # no new token to be had
])
async def test_an_empty_403_or_404_is_refreshed_once_when_a_new_token_can_be_had(
        kind: str, reply: httpx.Response, refreshed: bool) -> None:
    refreshes = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal refreshes
        if req.url.path == "/api/token":
            refreshes += 1
            return httpx.Response(200, json={"token": "fresh"})
        if req.headers.get("authorization") != "Bearer fresh":
            return httpx.Response(reply.status_code, content=reply.content)
        return httpx.Response(200, json={"ok": True})

    api = make_api(handler, Credentials(kind, "s", token="old", refresh_token="R"))
    if refreshed:
        assert await api.get_json("/samples/1") == {"ok": True}
    else:
        with pytest.raises((Forbidden, NotFound)):
            await api.get_json("/samples/1")
    assert refreshes == int(refreshed)


async def test_a_refused_static_token_asks_to_log_in_again() -> None:
    with pytest.raises(AuthExpired, match="log in again"):
        await make_api(lambda req: problem(401)).get_json("/me")


async def test_password_credentials_log_in_again_when_refresh_fails() -> None:
    logins = refreshes = 0
    expired: set[str] = set()

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal logins, refreshes
        if req.url.path == "/api/login":
            logins += 1
            assert json.loads(req.content) == {"username": "alice", "password": "pw"}
            return httpx.Response(200, json={"token": f"t{logins}"},
                                  headers={"set-cookie": "flow_refresh_token=R; Path=/"})
        if req.url.path == "/api/token":
            refreshes += 1
            return problem(400, "Refresh token not valid")
        if req.headers["authorization"] in expired:
            return problem(401, "expired")
        return httpx.Response(200, json={"me": req.headers["authorization"]})

    api = make_api(handler, Credentials("password", "env", username="alice", password="pw"))
    assert (await api.get_json("/me"))["me"] == "Bearer t1"
    assert logins == 1
    # t1 expires, and the refresh cookie is refused too: the password logs in again.
    expired.add("Bearer t1")
    assert (await api.get_json("/me"))["me"] == "Bearer t2"
    assert (logins, refreshes) == (2, 1)


def body(status: int, data: bytes, headers: dict[str, str]) -> httpx.Response:
    """A streamed reply, as from a real server (the client reads it chunk by chunk)."""
    return httpx.Response(status, stream=httpx.ByteStream(data), headers=headers)


def ranged(data: bytes) -> Handler:
    def handler(req: httpx.Request) -> httpx.Response:
        first, last = req.headers["range"].removeprefix("bytes=").split("-")
        a, b = int(first), int(last) + 1
        return body(206, data[a:b], {"Content-Range": f"bytes {a}-{b - 1}/{len(data)}"})
    return handler


async def test_range_reads_return_exact_bytes() -> None:
    data = bytes(range(256)) * 100
    assert await make_api(ranged(data)).fetch_range(f"{FILES}/x", 1000, 5000) == data[1000:5000]


# Stopping early leaves httpx's own inner body generators to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_server_ignoring_range_still_gives_the_right_bytes() -> None:
    data = bytes(range(256)) * 100

    def handler(req: httpx.Request) -> httpx.Response:
        return body(200, data, {"Content-Length": str(len(data))})

    assert await make_api(handler).fetch_range(f"{FILES}/x", 300, 700) == data[300:700]


async def test_a_wrong_content_range_is_never_served(autojump_clock: object) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return body(206, b"x" * 10, {"Content-Range": "bytes 1-10/100"})

    with pytest.raises(BadReply):
        await make_api(handler).fetch_range(f"{FILES}/x", 0, 10)


async def test_a_short_body_behind_a_correct_header_is_retried(autojump_clock: object) -> None:
    data = b"abcdefghij" * 10
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return body(206, data[:5], {"Content-Range": "bytes 0-9/100"})
        return ranged(data)(req)

    assert await make_api(handler).fetch_range(f"{FILES}/x", 0, 10) == data[:10]
    assert calls == 2


def test_content_range_parsing() -> None:
    assert parse_content_range("bytes 0-9/100") == (0, 10, 100)
    assert parse_content_range("bytes 5-5/*") == (5, 6, None)
    assert parse_content_range("bytes */100") is None
    assert parse_content_range(None) is None


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    assert 0 < backoff_delay(1) <= 0.1
    assert backoff_delay(30) <= 5.0
    assert backoff_delay(1, "7") == 7.0


async def test_a_range_that_keeps_failing_costs_one_budget_not_a_product(
        autojump_clock: object) -> None:
    # Bodies cut short, then 503s, then refused connections: one loop, one budget of
    # exchanges for all of them (the retry loops once nested: up to 6 x 6 requests).
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) % 3 == 0:
            raise httpx.ConnectError("refused")
        if len(calls) % 3 == 1:
            return httpx.Response(206, content=b"short",
                                  headers={"Content-Range": "bytes 0-99/1000"})
        return problem(503)

    api = make_api(handler)
    with pytest.raises(Transient):
        await api.fetch_range(f"{FILES}/downloads/1/f", 0, 100)
    assert len(calls) == 6


async def test_a_request_near_its_deadline_reports_the_real_cause(
        autojump_clock: object) -> None:
    api = make_api(lambda req: problem(503, "maintenance"))
    with trio.move_on_after(0.5):
        with pytest.raises(Transient, match="maintenance"):
            await api.get_json("/me")
        return
    raise AssertionError("the request waited into its caller's deadline")
