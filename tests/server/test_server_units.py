"""Pure units of the reference server: ranges, names, catalog defaults, tokens, passwords."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import jwt
import pytest

from flowfs.server.access import Access
from flowfs.server.archive import plan_entries, write_zip
from flowfs.server.catalog import filetype_of, id_order, load_catalog
from flowfs.server.digests import DigestCache, md5_of_file
from flowfs.server.passwords import hash_password, verify_password
from flowfs.server.ranges import Slice, Unsatisfiable, Validators, choose_slice, etag_for
from flowfs.server.safenames import safe_component
from flowfs.server.tokens import ACCESS, REFRESH, TokenError, TokenIssuer

V = Validators(etag='"abc-10"', mtime=1_700_000_000)


@pytest.mark.parametrize("header,size,expected", [
    (None, 10, Slice(0, 10, False)),
    ("bytes=0-0", 10, Slice(0, 1, True)),
    ("bytes=2-", 10, Slice(2, 8, True)),
    ("bytes=-3", 10, Slice(7, 3, True)),
    ("bytes=-30", 10, Slice(0, 10, True)),
    ("bytes=8-100", 10, Slice(8, 2, True)),
    ("bytes=0-1,4-5", 10, Slice(0, 10, False)),
    ("bytes=5-2", 10, Slice(0, 10, False)),
    ("pages=1-2", 10, Slice(0, 10, False)),
    ("bytes=x-y", 10, Slice(0, 10, False)),
])
def test_choose_slice(header, size, expected):
    assert choose_slice(size, header, None, V) == expected


@pytest.mark.parametrize("header,size", [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0),
                                          ("bytes=-5", 0), ("bytes=11-12", 10)])
def test_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        choose_slice(size, header, None, V)


def test_if_range_by_etag_and_date():
    assert choose_slice(10, "bytes=1-2", '"abc-10"', V).partial
    assert not choose_slice(10, "bytes=1-2", '"other"', V).partial
    assert not choose_slice(10, "bytes=1-2", 'W/"abc-10"', V).partial
    assert choose_slice(10, "bytes=1-2", V.last_modified, V).partial
    assert not choose_slice(10, "bytes=1-2", "Mon, 01 Jan 2001 00:00:00 GMT", V).partial


def test_etag_format():
    assert etag_for(255, 16) == '"ff-10"'


@pytest.mark.parametrize("raw,safe", [("a/b", "a_b"), ("..", "_.."), ("", "_"), ("x\0y", "x_y"),
                                      ("back\\slash", "back_slash"), ("ok name", "ok name")])
def test_safe_component(raw, safe):
    assert safe_component(raw) == safe


@pytest.mark.parametrize("name,filetype", [("a.fastq.gz", "fastq.gz"), ("a.bam", "bam"),
                                           ("README", ""), ("x.vcf.gz.tbi", "tbi"),
                                           ("A.TSV", "tsv")])
def test_filetype(name, filetype):
    assert filetype_of(name) == filetype


def test_id_order_compares_big_ids_as_integers():
    class Obj:
        def __init__(self, ident: str) -> None:
            self.id = ident

    ids = ["10", "9", "18446744073709551617", "100", "007"]
    assert [o.id for o in sorted(map(Obj, ids), key=id_order)] == [
        "007", "9", "10", "100", "18446744073709551617"]


def test_passwords():
    stored = hash_password("s3cret")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)
    assert not verify_password("s3cret", None)
    assert "s3cret" not in repr(stored)


def test_tokens_kinds_and_expiry():
    issuer = TokenIssuer(b"k" * 32, access_ttl=60, refresh_ttl=3600)
    access = issuer.issue("alice", ACCESS)
    assert issuer.verify(access, ACCESS) == "alice"
    with pytest.raises(TokenError):
        issuer.verify(access, REFRESH)
    expired = jwt.encode({"sub": "alice", "typ": ACCESS, "exp": int(time.time()) - 1},
                         b"k" * 32, "HS256")
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(expired, ACCESS)
    claims = jwt.decode(access, b"k" * 32, algorithms=["HS256"])
    assert claims["exp"] - time.time() >= 59


def _catalog(tmp_path: Path, document: dict):
    (tmp_path / "f.txt").write_text("x")
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document))
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return load_catalog(path, DigestCache(state))


def test_privacy_and_owner_are_inherited_from_containers(tmp_path):
    catalog = _catalog(tmp_path, {
        "users": [{"username": "a", "password": "p"}, {"username": "b", "password": "p"}],
        "projects": [{"id": "1", "name": "pub", "owner": "a", "private": False},
                     {"id": "2", "name": "priv", "owner": "a"}],
        "samples": [{"id": "1", "name": "s1", "project": "1"},
                    {"id": "2", "name": "s2", "project": "2", "shared_with": ["b"]}],
        "executions": [{"id": "5", "sample": "2"}],
        "data": [{"id": "1", "path": "f.txt", "sample": "1"},
                 {"id": "2", "path": "f.txt", "sample": "2"},
                 {"id": "3", "path": "f.txt", "execution": "5"},
                 {"id": "4", "path": "f.txt", "owner": "b"}],
    })
    data = catalog.data
    assert [data[i].private for i in "1234"] == [False, True, True, True]
    assert {data[i].owner for i in "123"} == {"a"} and data["4"].owner == "b"
    assert data["3"].project == "2" and data["3"].output_path == "f.txt"
    access = Access(catalog)
    assert access.can_read(None, data["1"]) and not access.can_read(None, data["2"])
    assert access.can_read("b", data["2"]) and access.can_read("b", data["3"])
    assert not access.can_read("a", data["4"])
    assert access.shared_not_owned("b", catalog.samples["2"])
    assert not access.shared_not_owned("a", catalog.samples["2"])


def test_archive_names_and_duplicates(tmp_path):
    catalog = _catalog(tmp_path, {
        "users": [{"username": "a", "password": "p"}],
        "samples": [{"id": "1", "name": "../evil/name", "owner": "a"}],
        "executions": [{"id": "5", "pipeline_name": "RNA", "owner": "a"}],
        "data": [{"id": "10", "path": "f.txt", "filename": "r.fastq.gz", "sample": "1"},
                 {"id": "2", "path": "f.txt", "filename": "r.fastq.gz", "sample": "1"},
                 {"id": "3", "path": "f.txt", "filename": "r.txt", "execution": "5",
                  "output_path": "/deep//dir/r.txt"},
                 {"id": "4", "path": "f.txt", "filename": "loose", "owner": "a"}],
    })
    names = [e.name for e in plan_entries(catalog, ["10", "2", "3", "4", "2"], False)]
    assert names == [".._evil_name/r.fastq.gz", "unassigned/r.txt", "unassigned/loose",
                     ".._evil_name/r~10.fastq.gz"]
    by_run = [e.name for e in plan_entries(catalog, ["3"], True)]
    assert by_run == ["RNA-5/deep/dir/r.txt"]
    entries = plan_entries(catalog, ["10", "2", "3"], False)
    assert [e.deflate for e in entries] == [False, True, False]
    out = tmp_path / "out.zip"
    seen = []
    write_zip(entries, out, seen.append, lambda: False)
    with zipfile.ZipFile(out) as archive:
        assert archive.read("unassigned/r.txt") == b"x"
    assert sum(seen) == 3


def test_digest_cache_hashes_once(tmp_path):
    from flowfs.server.digests import FileKey

    target = tmp_path / "f.bin"
    target.write_bytes(b"abc" * 1000)
    st = target.stat()
    key = FileKey(str(target), st.st_size, st.st_mtime_ns)
    first = DigestCache(tmp_path).md5s([key])
    assert first[key] == md5_of_file(target)
    target.write_bytes(b"changed")  # same key (stale stat): answered from the cache
    assert DigestCache(tmp_path).md5s([key]) == first
