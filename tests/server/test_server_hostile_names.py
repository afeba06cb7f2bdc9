"""The reference server under hostile names.

Bulk ZIPs that ``unzip`` extracts whatever the catalog's names hold, a valid
``Content-Disposition`` for every file name, and an access log that tells what
the client really got, even when a reply fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import unicodedata
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowfs import names as mount_names
from flowfs.server import safenames
from flowfs.server.accesslog import AccessLog, AccessLogMiddleware
from flowfs.server.archive import plan_entries, unique_paths, write_zip
from flowfs.server.catalog import load_catalog
from flowfs.server.digests import DigestCache
from flowfs.server.safenames import MAX_NAME_BYTES, safe_component
from flowfs.server.streaming import disposition

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
UNSAFE = re.compile(f"[/\\\\\x00-\x1f\x7f-\x9f{BIDI}\u2028\u2029\ud800-\udfff]")
LONG = "é" * 200 + ".fastq.gz"  # 409 bytes

# Names a catalog accepts (no '/', NUL, '.' or '..' in a file name) that break tools.
HOSTILE_FILENAMES = [
    "bad\nname.txt", "tab\there.txt", "esc\x1b[31mred.txt", "c1\x85\x9b.txt", "del\x7f.txt",
    "evil\u202etxt.exe", "lrm\u200e\u200f\u061c.txt", "iso\u2066x\u2069.txt",
    "ls\u2028ps\u2029.txt", "lone\ud800.txt", 'quote"back\\slash.txt', "café ü.txt",
    "percent%41;x.txt", " ", "x" * 300 + ".bam", LONG,
]


def _write_catalog(root: Path, document: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "f.txt").write_text("content\n")
    path = root / "catalog.json"
    path.write_text(json.dumps(document))
    return path


def _hostile_document() -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for index, filename in enumerate(HOSTILE_FILENAMES):
        data.append({"id": str(100 + index), "path": "f.txt", "filename": filename,
                     "sample": "1"})
    data += [
        # The same name twice, and the sanitised forms of two different names meeting.
        {"id": "200", "path": "f.txt", "filename": "dup.txt", "sample": "1"},
        {"id": "201", "path": "f.txt", "filename": "dup.txt", "sample": "1"},
        {"id": "202", "path": "f.txt", "filename": "a\nb.txt", "sample": "1"},
        {"id": "203", "path": "f.txt", "filename": "a\tb.txt", "sample": "1"},
        # A file and a directory with the same path in one execution.
        {"id": "300", "path": "f.txt", "filename": "results", "execution": "5",
         "output_path": "results"},
        {"id": "301", "path": "f.txt", "filename": "x.txt", "execution": "5",
         "output_path": "results/x.txt"},
        {"id": "302", "path": "f.txt", "filename": "deep.txt", "execution": "5",
         "output_path": "o" * 300 + "/\u202edeep.txt"},
        {"id": "303", "path": "f.txt", "filename": "in-other-sample.txt", "sample": "2"},
    ]
    return {
        "users": [{"username": "alice", "password": "alice-pw"}],
        "samples": [{"id": "1", "name": "..", "owner": "alice"},
                    {"id": "2", "name": "s\n" + "ß" * 200, "owner": "alice"}],
        "executions": [{"id": "5", "identifier": "run\u202e\x01", "owner": "alice"}],
        "data": data,
    }


@pytest.fixture(scope="module")
def hostile_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_catalog(tmp_path_factory.mktemp("hostile"), _hostile_document())


def _check_names(names: list[str]) -> None:
    """What unzip needs: unique paths, no file where a directory is, safe components."""
    assert len(set(names)) == len(names), names
    dirs = {"/".join(name.split("/")[:depth]) for name in names
            for depth in range(1, name.count("/") + 1)}
    assert not dirs & set(names), dirs & set(names)
    for name in names:
        for part in name.split("/"):
            assert part not in ("", ".", ".."), name
            assert not UNSAFE.search(part), name
            assert len(part.encode()) <= MAX_NAME_BYTES, name


# -- bulk ZIPs --------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("unzip") is None, reason="needs unzip")
@pytest.mark.parametrize("by_execution", [False, True])
def test_a_zip_of_hostile_names_is_extracted_by_unzip(hostile_catalog: Path, tmp_path: Path,
                                                      by_execution: bool) -> None:
    catalog = load_catalog(hostile_catalog, DigestCache(tmp_path))
    entries = plan_entries(catalog, sorted(catalog.data), by_execution)
    _check_names([e.name for e in entries])
    archive = tmp_path / "hostile.zip"
    write_zip(entries, archive, lambda count: None, lambda: False)

    tested = subprocess.run(["unzip", "-t", str(archive)], capture_output=True, timeout=60)
    assert tested.returncode == 0, tested.stdout.decode(errors="replace")
    assert b"No errors detected" in tested.stdout
    out = tmp_path / "out"
    extracted = subprocess.run(["unzip", "-q", str(archive), "-d", str(out)],
                               capture_output=True, timeout=60)
    assert extracted.returncode == 0, extracted.stderr.decode(errors="replace")
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(e.name for e in entries)  # unzip made every one, as named
    assert all((out / e.name).read_bytes() == b"content\n" for e in entries)
    with zipfile.ZipFile(archive) as opened:
        assert opened.testzip() is None
        assert sorted(opened.namelist()) == on_disk


def test_hostile_names_become_the_mounts_names(hostile_catalog: Path, tmp_path: Path) -> None:
    catalog = load_catalog(hostile_catalog, DigestCache(tmp_path))
    names = {e.data_id: e.name for e in plan_entries(catalog, sorted(catalog.data), True)}

    def named(filename: str) -> str:
        return names[str(100 + HOSTILE_FILENAMES.index(filename))]

    assert named("bad\nname.txt") == "_../bad_name.txt"
    assert named("evil\u202etxt.exe") == "_../evil_txt.exe"
    assert named('quote"back\\slash.txt') == '_../quote"back_slash.txt'
    assert named(LONG) == "_../" + "é" * 123 + ".fastq.gz"  # 255 bytes, extension kept
    assert (names["200"], names["201"]) == ("_../dup.txt", "_../dup~201.txt")
    assert (names["202"], names["203"]) == ("_../a_b.txt", "_../a_b~203.txt")
    assert names["300"] == "run__/results~300"  # the directory keeps the name
    assert names["301"] == "run__/results/x.txt"
    assert names["302"] == "run__/" + "o" * 255 + "/_deep.txt"


ID = st.integers(min_value=1, max_value=10**20).map(str)
COMPONENT = st.text(st.characters(codec="utf-8") | st.sampled_from(list(BIDI + "/\\.\0\n")),
                    max_size=40) | st.sampled_from(["", ".", "..", "x" * 300, "é" * 200 + ".gz"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(ID, st.lists(COMPONENT, min_size=1, max_size=4), max_size=12),
       st.randoms())
def test_unique_paths_are_safe_unique_and_stable(items: dict[str, list[str]], rng: Any) -> None:
    safe = [(item_id, tuple(safe_component(p) for p in parts)) for item_id, parts in items.items()]
    names = unique_paths(safe)
    _check_names(list(names.values()))
    shuffled = list(safe)
    rng.shuffle(shuffled)
    assert unique_paths(shuffled) == names  # the order of the request does not matter
    for item_id, parts in safe:  # a name differs from its own path by a suffix at most
        assert names[item_id].rpartition("/")[0] == "/".join(parts[:-1])


@given(st.text(st.characters(codec="utf-8") | st.sampled_from(list(BIDI + "\ud800\udfff"))))
def test_safe_component_applies_the_mounts_rules(text: str) -> None:
    safe = safe_component(text)
    assert not UNSAFE.search(safe) and safe not in ("", ".", "..")
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert safe_component(safe) == safe


# Extensions at the limits of what counts as one (32 bytes), names at the 255-byte cut.
EDGES = st.sampled_from(["a." + "e" * 31, "a." + "e" * 32, "a." + "e" * 33, "a.b" + "é" * 16,
                         "x" * 250 + ".txt", "é" * 126 + ".fastq.gz", "." + "x" * 300])


@settings(max_examples=300)
@given(COMPONENT | EDGES | st.text(st.characters(codec="utf-8")
                                   | st.sampled_from(list(BIDI + "\\.\u2028\u2029"))), ID)
def test_the_servers_names_are_the_mounts_with_backslash_made_safe(text: str, item_id: str) -> None:
    # The server keeps its own copy of the mount's rule (it imports nothing from the
    # daemon): the copies must agree, but for `\`, which ZIP tools read as a separator.
    assert safe_component(text) == mount_names.sanitize(text.replace("\\", "_"))
    safe = safe_component(text)
    suffix = f"~{item_id}"
    assert safenames.with_suffix(safe, suffix) == mount_names.with_suffix(safe, suffix)


def test_the_server_and_the_mount_make_the_same_characters_safe() -> None:
    for code in range(0x10000):  # every unsafe character is in the BMP (surrogates too)
        name = f"a{chr(code)}b.txt"
        assert safe_component(name) == mount_names.sanitize(name.replace("\\", "_")), hex(code)


# -- Content-Disposition ----------------------------------------------------------------------

_TOKEN_VALUE = re.compile(r'attachment; filename="([\x20-\x7e]*)"(?:; filename\*=UTF-8\'\'(\S+))?')


@given(st.text(st.characters(codec="utf-8") | st.sampled_from(list(BIDI + "\ud800\"\\%;")),
               min_size=1))
def test_content_disposition_is_valid_for_any_name(filename: str) -> None:
    value = disposition(filename)
    match = _TOKEN_VALUE.fullmatch(value)
    assert match, value
    fallback, extended = match.groups()
    assert '"' not in fallback and "\\" not in fallback and "%" not in fallback
    shown = unquote(extended, errors="strict") if extended else fallback
    assert shown == safe_component(filename)
    if extended:
        assert re.fullmatch(r"[A-Za-z0-9!#$&+\-.^_`|~%]+", extended)  # RFC 8187 attr-chars


def _download(http: httpx.Client, url: str, token: str) -> httpx.Response:
    return http.get(url, headers={"Authorization": f"Bearer {token}", "Range": "bytes=0-3"})


def test_every_hostile_name_is_downloadable(server_factory: Any, hostile_catalog: Path,
                                            http: httpx.Client, log_in: Any) -> None:
    srv = server_factory(catalog_path=hostile_catalog)
    token = log_in(http, srv.api, "alice")
    document = _hostile_document()
    mark = len(srv.log_lines())
    for record in document["data"]:
        if "execution" in record:
            url = f"{srv.api}/executions/5/{quote(record['output_path'])}"
        else:
            name = quote(record["filename"], errors="surrogatepass")
            url = f"{srv.files}/downloads/{record['id']}/{name}"
        reply = _download(http, url, token)
        if "\ud800" in record["filename"]:
            assert reply.status_code == 404  # no URL can name it: not UTF-8
            continue
        assert reply.status_code == 206, (record, reply.text)
        assert reply.content == b"cont"
        fallback, extended = _TOKEN_VALUE.fullmatch(reply.headers["content-disposition"]).groups()
        shown = unquote(extended) if extended else fallback
        assert shown == safe_component(record["filename"])
        assert unicodedata.category(shown[0]) != "Cc"
    lines = srv.log_lines()[mark:]
    assert [line["error"] for line in lines] == [None] * len(lines)
    assert {line["status"] for line in lines} == {206, 404}
    assert srv.stderr() == ""


# -- the access log -----------------------------------------------------------------------------

class _Refusing:
    """The server's send: refuses a bad head as uvicorn does, records what went out."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and any(
                b"\n" in value for _, value in message["headers"]):
            raise RuntimeError("Invalid HTTP header value.")
        self.sent.append(message)


async def _receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _start(status: int, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def _body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send(_start(206))
    await send(_body(b"ab", more=True))
    await send(_body(b"cd"))


async def _bad_header(scope: Any, receive: Any, send: Any) -> None:
    await send(_start(206, (b"content-disposition", b'attachment; filename="a\nb"')))


async def _raises(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError("boom")


async def _cut(scope: Any, receive: Any, send: Any) -> None:
    await send(_start(200))
    await send(_body(b"ab", more=True))  # and never the rest: the file was short


@pytest.mark.parametrize("app, status, error", [
    (_ok, 206, None),
    (_bad_header, None, "the reply could not be sent: Invalid HTTP header value."),
    (_raises, 500, "the handler failed: ValueError"),
    (_cut, 200, "the reply ended before its last byte"),
])
def test_the_access_log_tells_what_the_client_got(tmp_path: Path, app: Any, status: int | None,
                                                  error: str | None) -> None:
    log = AccessLog(tmp_path / "access.log")
    scope = {"type": "http", "method": "GET", "path": "/downloads/1/x", "query_string": b"",
             "headers": [(b"range", b"bytes=0-3")], "state": {"user": "alice"}}
    send = _Refusing()
    with contextlib.suppress(RuntimeError, ValueError):  # the server's handlers take over
        asyncio.run(AccessLogMiddleware(app, log)(scope, _receive, send))
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert len(lines) == 1
    assert (lines[0]["status"], lines[0]["error"], lines[0]["user"]) == (status, error, "alice")
    assert lines[0]["range"] == "bytes=0-3"


def test_a_file_cut_short_on_disk_is_logged_as_cut(server_factory: Any, tmp_path: Path,
                                                   http: httpx.Client, log_in: Any) -> None:
    catalog = _write_catalog(tmp_path / "cat", {
        "users": [{"username": "alice", "password": "alice-pw"}],
        "data": [{"id": "1", "path": "f.txt", "owner": "alice"}]})
    srv = server_factory(catalog_path=catalog)
    token = log_in(http, srv.api, "alice")
    (tmp_path / "cat" / "f.txt").write_text("co")  # shorter than the catalog says
    with pytest.raises(httpx.RemoteProtocolError):
        _download(http, f"{srv.files}/downloads/1/f.txt", token)
    line = srv.log_lines()[-1]
    assert (line["path"], line["status"]) == ("/downloads/1/f.txt", 206)
    assert line["error"] == "the reply ended before its last byte"
