"""The files server: Range and If-Range rules, HEAD, permissions, memory while streaming."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import httpx
import pytest

BIG = "141"  # alice's loose 3 MiB + 17 bytes file
BIG_URL = "/downloads/141/big.bin"
RSS_LIMIT = 200 * 2**20


def _get(server, http, tokens, headers=None, user="alice", path=BIG_URL, method="GET"):
    return http.request(method, f"{server.files}{path}", headers={**tokens[user],
                                                                   **(headers or {})})


def test_whole_file_with_validators(server, http, tokens, catalog):
    reply = _get(server, http, tokens)
    content = catalog.content(BIG)
    assert reply.status_code == 200
    assert reply.content == content
    assert reply.headers["accept-ranges"] == "bytes"
    assert reply.headers["content-length"] == str(len(content))
    assert reply.headers["etag"].startswith('"') and not reply.headers["etag"].startswith("W/")
    assert reply.headers["last-modified"].endswith("GMT")
    assert "content-range" not in reply.headers


@pytest.mark.parametrize("spec,first,last", [
    ("bytes=0-99", 0, 99),
    ("bytes=100-", 100, None),
    ("bytes=-500", -500, None),
    ("bytes=3145700-3145999999", 3145700, None),  # end past the file is clipped
    ("bytes=-99999999", 0, None),  # suffix longer than the file: the whole file
    ("bytes=5-5", 5, 5),
    ("BYTES = 7 - 9", 7, 9),
])
def test_single_ranges_are_206(server, http, tokens, catalog, spec, first, last):
    content = catalog.content(BIG)
    size = len(content)
    reply = _get(server, http, tokens, {"Range": spec})
    start = first if first >= 0 else size + first
    end = size - 1 if last is None else last
    assert reply.status_code == 206
    assert reply.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert reply.headers["content-length"] == str(end - start + 1)
    assert reply.content == content[start:end + 1]


@pytest.mark.parametrize("spec", ["bytes=-0", "bytes=3145745-", "bytes=99999999-100000000"])
def test_unsatisfiable_ranges_are_416(server, http, tokens, catalog, spec):
    reply = _get(server, http, tokens, {"Range": spec})
    assert reply.status_code == 416
    assert reply.headers["content-range"] == f"bytes */{len(catalog.content(BIG))}"
    assert reply.json()["status"] == 416


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=abc", "items=0-5", "bytes=9-3",
                                  "bytes=-", "bytes=0-1, 3-"])
def test_multi_and_malformed_ranges_are_ignored(server, http, tokens, catalog, spec):
    reply = _get(server, http, tokens, {"Range": spec})
    assert reply.status_code == 200
    assert reply.content == catalog.content(BIG)


def test_if_range(server, http, tokens, catalog):
    first = _get(server, http, tokens, method="HEAD")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    content = catalog.content(BIG)
    cases = [
        (etag, 206), (modified, 206), ('"something-else"', 200), (f"W/{etag}", 200),
        (formatdate(1_000_000, usegmt=True), 200), ("not a date", 200),
    ]
    for if_range, status in cases:
        reply = _get(server, http, tokens, {"Range": "bytes=10-19", "If-Range": if_range})
        assert reply.status_code == status, if_range
        assert reply.content == (content[10:20] if status == 206 else content)


def test_head_gives_headers_without_body(server, http, tokens, catalog):
    size = len(catalog.content(BIG))
    whole = _get(server, http, tokens, method="HEAD")
    assert whole.status_code == 200 and whole.content == b""
    assert whole.headers["content-length"] == str(size)
    part = _get(server, http, tokens, {"Range": "bytes=-10"}, method="HEAD")
    assert part.status_code == 206 and part.content == b""
    assert part.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"


def test_empty_file(server, http, tokens):
    path = "/downloads/140/empty.txt"
    reply = _get(server, http, tokens, path=path)
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["content-length"] == "0"
    head = _get(server, http, tokens, path=path, method="HEAD")
    assert head.status_code == 200 and head.headers["content-length"] == "0"
    ranged = _get(server, http, tokens, {"Range": "bytes=0-"}, path=path)
    assert ranged.status_code == 416 and ranged.headers["content-range"] == "bytes */0"


def test_filename_must_match(server, http, tokens):
    assert _get(server, http, tokens, path="/downloads/141/other.bin").status_code == 404
    assert _get(server, http, tokens, path="/downloads/999/big.bin").status_code == 404
    assert _get(server, http, tokens, path="/downloads/141/big.bin/x").status_code == 404


def test_execution_outputs_by_path(server, http, tokens, catalog):
    url = "/api/executions/20/results/counts/all.gene_counts.tsv"
    content = catalog.content("111")
    whole = _get(server, http, tokens, path=url, user="bob")
    assert whole.status_code == 200 and whole.content == content
    part = _get(server, http, tokens, {"Range": "bytes=5-24"}, path=url)
    assert part.status_code == 206 and part.content == content[5:25]
    assert _get(server, http, tokens, path=url, user="carol").status_code == 403
    assert _get(server, http, tokens, path=url, user=None).status_code == 401
    assert _get(server, http, tokens, path="/api/executions/20/results/nope.tsv").status_code \
        == 404
    assert _get(server, http, tokens, path="/api/executions/21/peaks/peaks.bed",
                user="carol").content == catalog.content("131")


DOWNLOADS = {  # data id -> users allowed
    "100": {"alice", "bob"}, "120": {"alice", "bob", "carol", None}, "130": {"carol"},
    "142": {"bob"}, "143": {"bob", "carol"}, "150": {"alice", "bob", "carol", None},
}


@pytest.mark.parametrize("user", ["alice", "bob", "carol", None])
@pytest.mark.parametrize("data_id", sorted(DOWNLOADS))
def test_download_permissions(server, http, tokens, catalog, data_id, user):
    filename = catalog.record(data_id)["filename"]
    reply = _get(server, http, tokens, path=f"/downloads/{data_id}/{filename}", user=user)
    if user in DOWNLOADS[data_id]:
        assert reply.status_code == 200
        assert reply.content == catalog.content(data_id)
    else:
        expected = (401, "UNAUTHENTICATED") if user is None else (403, "FORBIDDEN")
        assert (reply.status_code, reply.json()["code"]) == expected


def test_etag_is_stable_across_server_processes(server, server_factory, http, tokens):
    other = server_factory()
    token = http.post(f"{other.api}/login",
                      json={"username": "alice", "password": "alice-pw"}).json()["token"]
    theirs = http.head(f"{other.files}{BIG_URL}", headers={"Authorization": f"Bearer {token}"})
    ours = _get(server, http, tokens, method="HEAD")
    assert theirs.headers["etag"] == ours.headers["etag"]
    assert theirs.headers["last-modified"] == ours.headers["last-modified"]


def test_concurrent_random_ranges(server, tokens, catalog):
    content = catalog.content(BIG)
    rng = random.Random(7)
    spans = [(start, start + rng.randrange(1, 300_000))
             for start in (rng.randrange(len(content)) for _ in range(40))]

    def fetch(span: tuple[int, int]) -> bool:
        start, end = span
        with httpx.Client(timeout=30) as client:
            reply = client.get(f"{server.files}{BIG_URL}",
                               headers={**tokens["alice"], "Range": f"bytes={start}-{end}"})
        return reply.status_code == 206 and reply.content == content[start:end + 1]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(fetch, spans))


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_streaming_a_large_file_keeps_memory_bounded(server, tokens, catalog):
    size = catalog.files["160"].stat().st_size
    received, peak = 0, _rss(server.pid)
    with httpx.Client(timeout=60) as client, client.stream(
            "GET", f"{server.files}/downloads/160/sparse.img", headers=tokens["alice"]) as reply:
        assert reply.status_code == 200
        for index, chunk in enumerate(reply.iter_raw(2**20)):
            received += len(chunk)
            if index % 16 == 0:
                peak = max(peak, _rss(server.pid))
    assert received == size
    assert peak < RSS_LIMIT, f"server RSS reached {peak / 2**20:.0f} MiB"


def test_a_client_leaving_mid_stream_does_not_hurt_the_server(server, http, tokens, catalog):
    with httpx.Client(timeout=60) as client, client.stream(
            "GET", f"{server.files}/downloads/160/sparse.img", headers=tokens["alice"]) as reply:
        next(reply.iter_raw(2**20))
    again = _get(server, http, tokens, {"Range": "bytes=0-9"})
    assert again.status_code == 206 and again.content == catalog.content(BIG)[:10]
