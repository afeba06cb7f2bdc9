"""Bulk download jobs: creation rules, lifecycle, archives, restarts and expiry."""

from __future__ import annotations

import hashlib
import io
import signal
import uuid
import zipfile

import pytest

JOB_DEADLINE = 30.0
LIVER = ["100", "101", "102", "103", "110", "140", "141"]
LIVER_NAMES = {
    "liver_1/liver_1_R1.fastq.gz": "100", "liver_1/liver_1_R2.fastq.gz": "101",
    "liver_1/notes.txt": "102", "liver_1/notes~103.txt": "103",
    "unassigned/multiqc_report.html": "110", "unassigned/empty.txt": "140",
    "unassigned/big.bin": "141",
}


def _create(http, srv, headers, ids, name="liver.zip", **extra):
    return http.post(f"{srv.api}/downloads", json={"data_ids": ids, "name": name, **extra},
                     headers=headers)


def _job(http, srv, headers, job_id):
    return http.get(f"{srv.api}/downloads/{job_id}", headers=headers)


def _wait_status(http, srv, headers, job_id, poll, status="completed"):
    def reached():
        job = _job(http, srv, headers, job_id).json()
        assert job["status"] != "failed", job
        return job if job["status"] == status else None

    return poll(reached, JOB_DEADLINE, f"job {job_id} to be {status}", interval=0.05)


def _headers(http, srv, log_in, user):
    return {"Authorization": f"Bearer {log_in(http, srv.api, user)}"}


def _check_zip(data: bytes, catalog, names: dict[str, str]) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == sorted(names)
    for name, data_id in names.items():
        got = hashlib.md5(archive.read(name)).hexdigest()
        assert got == hashlib.md5(catalog.content(data_id)).hexdigest(), name
    return archive


def test_job_lifecycle_and_archive(server, http, tokens, catalog, poll):
    reply = _create(http, server, tokens["alice"], LIVER)
    assert reply.status_code == 201
    job = reply.json()
    assert set(job) == {"id", "name", "status", "progress", "created", "started", "finished",
                        "expires", "by_execution", "data", "user", "size", "download_url",
                        "error"}
    assert uuid.UUID(job["id"]) and job["name"] == "liver.zip" and job["user"] == "alice"
    assert job["data"] == LIVER and job["by_execution"] is False and job["error"] is None
    assert isinstance(job["created"], int)
    done = _wait_status(http, server, tokens["alice"], job["id"], poll)
    assert done["progress"] == 100 and done["finished"] >= done["started"] >= done["created"]
    assert done["expires"] == done["finished"] + 86400
    assert done["download_url"] == f"{server.files}/downloads/{job['id']}"
    zipped = http.get(done["download_url"], headers=tokens["alice"])
    assert zipped.status_code == 200
    assert zipped.headers["content-type"] == "application/zip"
    assert len(zipped.content) == done["size"]
    archive = _check_zip(zipped.content, catalog, LIVER_NAMES)
    kinds = {info.filename: info.compress_type for info in archive.infolist()}
    assert kinds["liver_1/liver_1_R1.fastq.gz"] == zipfile.ZIP_STORED
    assert kinds["liver_1/notes.txt"] == zipfile.ZIP_DEFLATED
    listed = http.get(f"{server.api}/downloads", headers=tokens["alice"]).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]] and listed["page"] == 1


def test_archive_range_reads(server, http, tokens, poll):
    job = _create(http, server, tokens["bob"], ["120", "150"], name="bob.zip").json()
    done = _wait_status(http, server, tokens["bob"], job["id"], poll)
    url = done["download_url"]
    whole = http.get(url, headers=tokens["bob"]).content
    head = http.get(url, headers={**tokens["bob"], "Range": "bytes=0-3"})
    assert head.status_code == 206 and head.content == b"PK\x03\x04"
    tail = http.get(url, headers={**tokens["bob"], "Range": "bytes=-22"})
    assert tail.status_code == 206 and tail.content == whole[-22:]
    assert tail.content.startswith(b"PK\x05\x06")
    assert tail.headers["content-range"] == f"bytes {len(whole) - 22}-{len(whole) - 1}/" \
        f"{len(whole)}"
    etag = tail.headers["etag"]
    ranged = http.get(url, headers={**tokens["bob"], "Range": "bytes=10-19", "If-Range": etag})
    assert ranged.content == whole[10:20]
    beyond = http.get(url, headers={**tokens["bob"], "Range": f"bytes={len(whole)}-"})
    assert beyond.status_code == 416
    assert http.head(url, headers=tokens["bob"]).headers["content-length"] == str(len(whole))


def test_by_execution_names_and_alias(server, http, tokens, catalog, poll):
    reply = http.post(f"{server.api}/downloads", headers=tokens["bob"],
                      json={"data": ["110", "111", "100"], "name": "run.zip",
                            "by_execution": True})
    assert reply.status_code == 201
    done = _wait_status(http, server, tokens["bob"], reply.json()["id"], poll)
    _check_zip(http.get(done["download_url"], headers=tokens["bob"]).content, catalog, {
        "brave_turing/multiqc/multiqc_report.html": "110",
        "brave_turing/results/counts/all.gene_counts.tsv": "111",
        "liver_1/liver_1_R1.fastq.gz": "100",
    })


@pytest.mark.parametrize("body", [
    {"data_ids": [], "name": "a.zip"},
    {"name": "a.zip"},
    {"data_ids": "100", "name": "a.zip"},
    {"data_ids": [None], "name": "a.zip"},
    {"data_ids": ["100"], "name": "a.tar"},
    {"data_ids": ["100"], "name": "../a.zip"},
    {"data_ids": ["100"], "name": "a b.zip"},
    {"data_ids": ["100"], "name": ".hidden.zip"},
    {"data_ids": ["100"], "name": "x" * 101 + ".zip"},
    {"data_ids": ["100"], "name": 5},
    {"data_ids": ["100"], "name": "a.zip", "by_execution": "yes"},
])
def test_bad_job_requests_are_400(server, http, tokens, body):
    reply = http.post(f"{server.api}/downloads", json=body, headers=tokens["alice"])
    assert reply.status_code == 400
    assert reply.json()["code"] == "BAD_REQUEST"


def test_job_name_limit_is_inclusive(server, http, tokens):
    reply = _create(http, server, tokens["alice"], ["140"], name="x" * 100 + ".zip")
    assert reply.status_code == 201


def test_job_ids_must_exist_and_be_readable(server, http, tokens):
    missing = _create(http, server, tokens["alice"], ["100", "999", "998"])
    assert missing.status_code == 404
    assert "999" in missing.json()["error"] and missing.json()["ids"] == ["999", "998"]
    denied = _create(http, server, tokens["alice"], ["100", "130", "142"])
    assert denied.status_code == 403
    assert denied.json()["code"] == "FORBIDDEN" and denied.json()["ids"] == ["130", "142"]
    anonymous = _create(http, server, {}, ["150"])
    assert anonymous.status_code == 401
    assert http.get(f"{server.api}/downloads").status_code == 401


READABLE = {  # data id -> users who may put it in a job
    "100": {"alice", "bob"}, "120": {"alice", "bob", "carol"}, "130": {"carol"},
    "142": {"bob"}, "143": {"bob", "carol"}, "150": {"alice", "bob", "carol"},
}


@pytest.mark.parametrize("user", ["alice", "bob", "carol", None])
@pytest.mark.parametrize("data_id", sorted(READABLE))
def test_job_creation_follows_the_permission_matrix(server, http, tokens, data_id, user):
    reply = _create(http, server, tokens[user], [data_id], name="matrix.zip")
    if user is None:
        assert reply.status_code == 401
    elif user in READABLE[data_id]:
        assert reply.status_code == 201
        assert http.delete(f"{server.api}/downloads/{reply.json()['id']}",
                           headers=tokens[user]).status_code == 204
    else:
        assert reply.status_code == 403 and reply.json()["ids"] == [data_id]


def test_jobs_are_private_to_their_owner(server, http, tokens, poll):
    job = _create(http, server, tokens["alice"], ["150"], name="mine.zip").json()
    _wait_status(http, server, tokens["alice"], job["id"], poll)
    for user in ("bob", "carol"):
        assert _job(http, server, tokens[user], job["id"]).status_code == 404
        assert http.get(f"{server.files}/downloads/{job['id']}",
                        headers=tokens[user]).status_code == 404
        assert http.delete(f"{server.api}/downloads/{job['id']}",
                           headers=tokens[user]).status_code == 404
        listed = http.get(f"{server.api}/downloads", headers=tokens[user]).json()["jobs"]
        assert job["id"] not in [j["id"] for j in listed]
    assert http.get(f"{server.files}/downloads/{job['id']}").status_code == 401
    assert _job(http, server, tokens["alice"], job["id"]).json()["status"] == "completed"


def test_delete_removes_job_and_archive(server, http, tokens, poll):
    job = _create(http, server, tokens["alice"], ["141"], name="gone.zip").json()
    _wait_status(http, server, tokens["alice"], job["id"], poll)
    archive = server.state_dir / "archives" / f"{job['id']}.zip"
    assert archive.exists()
    reply = http.delete(f"{server.api}/downloads/{job['id']}", headers=tokens["alice"])
    assert reply.status_code == 204 and reply.content == b""
    assert _job(http, server, tokens["alice"], job["id"]).status_code == 404
    assert http.get(f"{server.files}/downloads/{job['id']}",
                    headers=tokens["alice"]).status_code == 404
    assert not archive.exists()


def test_pending_and_processing_jobs_are_not_ready(server_factory, http, log_in, catalog,
                                                   poll):
    srv = server_factory("--job-delay", "2", "--workers", "1")
    alice = _headers(http, srv, log_in, "alice")
    first = _create(http, srv, alice, ["141"], name="first.zip").json()
    second = _create(http, srv, alice, ["150"], name="second.zip").json()
    running = _wait_status(http, srv, alice, first["id"], poll, "processing")
    assert 0 <= running["progress"] < 100 and running["started"] is not None
    assert _job(http, srv, alice, second["id"]).json()["status"] == "pending"
    for job in (first, second):
        reply = http.get(f"{srv.files}/downloads/{job['id']}", headers=alice)
        assert reply.status_code == 409 and reply.json()["code"] == "NOT_READY"
    poll(lambda: 0 < _job(http, srv, alice, first["id"]).json()["progress"] < 100,
         JOB_DEADLINE, "progress to advance", interval=0.05)
    done = _wait_status(http, srv, alice, first["id"], poll)
    assert done["finished"] - done["started"] >= 1  # whole seconds of a >= 2 s delay
    _check_zip(http.get(done["download_url"], headers=alice).content, catalog,
               {"unassigned/big.bin": "141"})
    _wait_status(http, srv, alice, second["id"], poll)


def test_restart_mid_job_completes_it_exactly_once(server_factory, http, log_in, catalog,
                                                   poll, tmp_path):
    state = tmp_path / "state-kept"
    first = server_factory("--job-delay", "30", state_dir=state)
    alice = _headers(http, first, log_in, "alice")
    job = _create(http, first, alice, LIVER, name="crash.zip").json()
    _wait_status(http, first, alice, job["id"], poll, "processing")
    first.stop(signal.SIGKILL)
    second = server_factory(state_dir=state)  # same secret: the old token still works
    done = _wait_status(http, second, alice, job["id"], poll)
    listed = http.get(f"{second.api}/downloads", headers=alice).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["count"] == 1
    _check_zip(http.get(f"{second.files}/downloads/{job['id']}", headers=alice).content,
               catalog, LIVER_NAMES)
    assert sorted(p.name for p in (state / "archives").iterdir()) == [f"{job['id']}.zip"]
    assert done["size"] == (state / "archives" / f"{job['id']}.zip").stat().st_size


def test_graceful_stop_mid_job_then_restart(server_factory, http, log_in, poll, tmp_path):
    state = tmp_path / "state-graceful"
    first = server_factory("--job-delay", "30", state_dir=state)
    alice = _headers(http, first, log_in, "alice")
    job = _create(http, first, alice, ["150"], name="again.zip").json()
    _wait_status(http, first, alice, job["id"], poll, "processing")
    assert first.stop() == 0
    second = server_factory(state_dir=state)
    _wait_status(http, second, alice, job["id"], poll)


def test_completed_jobs_expire(server_factory, http, log_in, poll):
    srv = server_factory("--job-ttl", "2")
    alice = _headers(http, srv, log_in, "alice")
    job = _create(http, srv, alice, ["150"], name="short.zip").json()
    done = _wait_status(http, srv, alice, job["id"], poll)
    assert done["expires"] - done["finished"] == 2
    assert http.get(done["download_url"], headers=alice).status_code == 200
    archive = srv.state_dir / "archives" / f"{job['id']}.zip"
    assert archive.exists()
    # The sweeper deletes the archive by itself, without any request for the job.
    poll(lambda: not archive.exists(), JOB_DEADLINE, "the expired archive to be deleted")
    expired = _job(http, srv, alice, job["id"]).json()
    assert expired["status"] == "expired" and expired["download_url"] is None
    reply = http.get(f"{srv.files}/downloads/{job['id']}", headers=alice)
    assert reply.status_code == 410 and reply.json()["code"] == "EXPIRED"


def test_job_list_is_paginated(server, http, tokens):
    for index in range(3):
        assert _create(http, server, tokens["carol"], ["131"],
                       name=f"c{index}.zip").status_code == 201
    page = http.get(f"{server.api}/downloads", params={"count": 2, "page": 2},
                    headers=tokens["carol"]).json()
    assert page["count"] >= 3 and page["page"] == 2 and len(page["jobs"]) >= 1
    too_many = http.get(f"{server.api}/downloads", params={"count": 101},
                        headers=tokens["carol"])
    assert too_many.status_code == 400


def test_failed_job_carries_error(server_factory, http, log_in, catalog, poll, tmp_path):
    """A job whose file vanished before it was archived fails with a message."""
    root = tmp_path / "vanishing"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    path = root / "catalog.json"
    path.write_text(
        '{"users": [{"username": "alice", "password": "alice-pw"}],'
        ' "data": [{"id": "1", "path": "a.txt", "owner": "alice"}]}')
    srv = server_factory("--job-delay", "1", catalog_path=path)
    alice = _headers(http, srv, log_in, "alice")
    (root / "a.txt").unlink()
    job = _create(http, srv, alice, ["1"], name="gone.zip").json()

    def failed():
        current = _job(http, srv, alice, job["id"]).json()
        return current if current["status"] == "failed" else None

    current = poll(failed, JOB_DEADLINE, "the job to fail")
    assert "a.txt" in current["error"]
    reply = http.get(f"{srv.files}/downloads/{job['id']}", headers=alice)
    assert reply.status_code == 409


def _create_keyed(http, srv, headers, key, ids, name="keyed.zip"):
    return http.post(f"{srv.api}/downloads", json={"data_ids": ids, "name": name},
                     headers={**headers, "Idempotency-Key": key})


def _jobs_named(http, srv, headers, name):
    jobs = http.get(f"{srv.api}/downloads", params={"count": 100}, headers=headers).json()
    return [j for j in jobs["jobs"] if j["name"] == name]


def test_a_job_request_sent_again_with_its_key_answers_the_same_job(server, http, tokens):
    key = uuid.uuid4().hex
    first = _create_keyed(http, server, tokens["alice"], key, ["150"], name="once.zip")
    again = _create_keyed(http, server, tokens["alice"], key, ["150"], name="once.zip")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(_jobs_named(http, server, tokens["alice"], "once.zip")) == 1


def test_an_idempotency_key_is_per_user_and_per_job(server, http, tokens):
    key = uuid.uuid4().hex
    mine = _create_keyed(http, server, tokens["alice"], key, ["150"], name="k.zip").json()
    theirs = _create_keyed(http, server, tokens["bob"], key, ["150"], name="k.zip")
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]
    other = _create_keyed(http, server, tokens["alice"], key, ["141"], name="k.zip")
    assert other.status_code == 422
    assert _create_keyed(http, server, tokens["alice"], "", ["150"]).status_code == 400
    assert _create_keyed(http, server, tokens["alice"], "a b", ["150"]).status_code == 400


def test_a_deleted_job_is_made_anew_for_its_key(server, http, tokens):
    key = uuid.uuid4().hex
    job = _create_keyed(http, server, tokens["alice"], key, ["150"], name="del.zip").json()
    assert http.delete(f"{server.api}/downloads/{job['id']}",
                       headers=tokens["alice"]).status_code == 204
    again = _create_keyed(http, server, tokens["alice"], key, ["150"], name="del.zip").json()
    assert again["id"] != job["id"]


def test_concurrent_requests_with_one_key_make_one_job(server, http, tokens):
    from concurrent.futures import ThreadPoolExecutor

    key = uuid.uuid4().hex
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda _: _create_keyed(http, server, tokens["alice"], key, ["150"], name="race.zip"),
            range(8)))
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 1
    assert len(_jobs_named(http, server, tokens["alice"], "race.zip")) == 1


def test_a_jobs_database_from_before_idempotency_keys_is_upgraded(tmp_path):
    import sqlite3

    from flowfs.server.jobs import JobStore

    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            user TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
            progress INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, started REAL,
            finished REAL, expires REAL, by_execution INTEGER NOT NULL, data TEXT NOT NULL,
            size INTEGER, error TEXT, attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, user, name, status, created, by_execution, data)
            VALUES ('old', 'alice', 'old.zip', 'pending', 1, 0, '["150"]');
    """)
    old.close()
    store = JobStore(path)
    try:
        assert store.get("old") is not None
        job, made = store.create_once("alice", "k", "new.zip", ["150"], False, 2.0)
        again, made_again = store.create_once("alice", "k", "new.zip", ["150"], False, 3.0)
        assert made and not made_again and again.id == job.id
    finally:
        store.close()
