"""``flowfs serve`` as a command: catalog errors, signals, announcements, logs, export."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowfs import processes
from flowfs.server.cli import main

USERS = [{"username": "alice", "password": "pw"}, {"username": "bob", "password": "pw"}]


def _write_catalog(root: Path, document: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "b.txt").write_text("beta\n")
    path = root / "catalog.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def _doc(**sections: object) -> dict:
    return {"users": USERS, **sections}


def _data(**fields: object) -> dict:
    return {"id": "1", "path": "a.txt", "owner": "alice", **fields}


BAD_CATALOGS = {
    "bad-json": ('{"users": [', "is not valid JSON"),
    "top-level-list": ("[]", "top level must be a JSON object"),
    "section-not-list": (_doc(projects={}), "'projects' must be a list"),
    "unknown-section": ({"users": USERS, "groups": []}, "unknown section 'groups'"),
    "missing-data-file": (_doc(data=[_data(path="nope.txt")]), "file not found"),
    "data-is-directory": (_doc(data=[_data(path=".")]), "not a regular file"),
    "duplicate-data-id": (_doc(data=[_data(), _data(path="b.txt")]), "duplicate data id '1'"),
    "duplicate-project-id": (_doc(projects=[{"id": "5", "name": "p", "owner": "bob"}] * 2),
                             "duplicate project id '5'"),
    "duplicate-username": ({"users": USERS + USERS[:1]}, "duplicate username 'alice'"),
    "unknown-owner": (_doc(projects=[{"id": "5", "name": "p", "owner": "zed"}]),
                      "unknown owner 'zed'"),
    "unknown-project": (_doc(samples=[{"id": "7", "name": "s", "project": "9",
                                       "owner": "bob"}]), "unknown project '9'"),
    "unknown-sample": (_doc(data=[_data(sample="8")]), "unknown sample '8'"),
    "unknown-execution": (_doc(data=[_data(execution="8")]), "unknown execution '8'"),
    "unknown-shared-user": (_doc(projects=[{"id": "5", "name": "p", "owner": "bob",
                                            "shared_with": ["eve"]}]), "unknown user 'eve'"),
    "private-not-bool": (_doc(data=[_data(private="yes")]), "'private' must be true or false"),
    "id-not-digits": (_doc(data=[_data(id="x1")]), "must be an id"),
    "id-float": (_doc(data=[_data(id=1.5)]), "must be an id"),
    "size-wrong-type": (_doc(data=[_data(size="6")]), "'size' must be a non-negative integer"),
    "size-mismatch": (_doc(data=[_data(size=99)]), "size 99 does not match the file (6 bytes)"),
    "bad-md5": (_doc(data=[_data(md5="xyz")]), "'md5' must be 32 lowercase hex digits"),
    "bad-created": (_doc(data=[_data(created="yesterday")]), "'created'"),
    "missing-password": ({"users": [{"username": "alice"}]}, "missing field 'password'"),
    "missing-owner": (_doc(projects=[{"id": "5", "name": "p"}]), "missing field 'owner'"),
    "unknown-field": (_doc(data=[_data(privte=True)]), "unknown field 'privte'"),
    "slash-in-filename": (_doc(data=[_data(filename="a/b.txt")]), "bad filename"),
    "output-path-escapes": (_doc(executions=[{"id": "3", "owner": "bob"}],
                                 data=[_data(execution="3", output_path="../x")]),
                            "bad output_path"),
    "output-without-execution": (_doc(data=[_data(output_path="x/y")]),
                                 "output_path given without an execution"),
    "duplicate-output": (_doc(executions=[{"id": "3", "owner": "bob"}],
                              data=[_data(execution="3", output_path="o/x"),
                                    _data(id="2", path="b.txt", execution="3",
                                          output_path="o/x")]), "already has an output 'o/x'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CATALOGS))
def test_bad_catalogs_exit_2_with_one_line(tmp_path, capsys, case):
    document, expected = BAD_CATALOGS[case]
    path = _write_catalog(tmp_path / "cat", document)
    code = main(["--catalog", str(path), "--port", "0", "--state-dir", str(tmp_path / "st")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowfs serve: "), err
    assert expected in lines[0]
    assert "Traceback" not in err


def test_missing_catalog_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flowfs.server", "--catalog", str(tmp_path / "none.json"),
         "--port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"flowfs serve: catalog not found: {tmp_path / 'none.json'}"
    assert result.stdout == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_after_announcing(server_factory, sig):
    srv = server_factory()
    port = srv.files.rsplit(":", 1)[1]
    assert srv.stop(sig) == 0
    assert srv.stdout_path.read_text() == (f"API:   http://127.0.0.1:{port}/api\n"
                                           f"Files: http://127.0.0.1:{port}\n")
    assert "Traceback" not in srv.stderr()
    ready = json.loads((srv.stdout_path.parent / "ready.json").read_text())
    assert ready == {"api": srv.api, "files": srv.files, "pid": srv.pid}


def test_sigterm_with_a_stalled_download_in_flight_is_quiet(server_factory, http, log_in):
    srv = server_factory()
    token = log_in(http, srv.api, "alice")
    host, port = srv.files.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        # A 512 MiB download that the client stops reading: the server's socket
        # buffer fills and its stream waits until the grace period ends.
        stalled.sendall(f"GET /downloads/160/sparse.img HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {token}\r\n\r\n".encode())
        assert stalled.recv(12) == b"HTTP/1.1 200"
        assert srv.stop(signal.SIGTERM) == 0
    assert srv.stderr() == ""


def test_access_log_has_one_line_per_request(server_factory, http, log_in):
    srv = server_factory()
    token = log_in(http, srv.api, "bob")
    http.get(f"{srv.api}/projects/owned", params={"count": 5},
             headers={"Authorization": f"Bearer {token}"})
    http.get(f"{srv.files}/downloads/150/public.txt", headers={"Range": "bytes=0-3"})
    http.get(f"{srv.api}/me")
    lines = srv.log_lines()
    assert [(x["method"], x["path"], x["status"], x["user"]) for x in lines] == [
        ("POST", "/api/login", 200, "bob"),
        ("GET", "/api/projects/owned", 200, "bob"),
        ("GET", "/downloads/150/public.txt", 206, None),
        ("GET", "/api/me", 401, None),
    ]
    assert lines[1]["query"] == "count=5" and lines[2]["range"] == "bytes=0-3"


def test_export_dir_and_files_url(server_factory, http, log_in, catalog, poll, tmp_path):
    export = tmp_path / "export"
    stale = export / "downloads" / "999"
    stale.mkdir(parents=True)
    (stale / "old.txt").symlink_to("/nonexistent")
    srv = server_factory("--export-dir", str(export), "--files-url", "http://files.test:81/")
    link = export / "downloads" / "141" / "big.bin"
    assert link.is_symlink() and link.read_bytes() == catalog.content("141")
    assert not stale.exists()
    token = log_in(http, srv.api, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    job = http.post(f"{srv.api}/downloads", json={"data_ids": ["150"], "name": "e.zip"},
                    headers=headers).json()

    def completed():
        current = http.get(f"{srv.api}/downloads/{job['id']}", headers=headers).json()
        return current if current["status"] == "completed" else None

    done = poll(completed, 30, "the job to complete")
    assert done["download_url"] == f"http://files.test:81/downloads/{job['id']}"
    archive_link = export / "downloads" / job["id"]
    assert archive_link.is_symlink() and archive_link.read_bytes()[:2] == b"PK"
    http.delete(f"{srv.api}/downloads/{job['id']}", headers=headers)
    assert not archive_link.is_symlink()


def test_busy_port_exits_1(tmp_path, catalog, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["--catalog", str(catalog.path), "--port", str(port),
                     "--state-dir", str(tmp_path / "st")])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_default_state_dir_is_temporary(tmp_path, catalog, poll):
    temp = tmp_path / "tmp"
    temp.mkdir()
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfs.server", "--catalog", str(catalog.path), "--port", "0",
         "--ready-file", str(ready)], env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poll(ready.exists, 20, "the ready file")
        made = list(temp.iterdir())
        assert len(made) == 1 and (made[0] / "jwt-secret").exists()
        assert (made[0] / "md5-cache.json").exists()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and b"Traceback" not in err
    assert list(temp.iterdir()) == []


def test_md5s_are_cached_in_the_state_dir(server_factory, catalog):
    srv = server_factory()
    cache = json.loads((srv.state_dir / "md5-cache.json").read_text())
    assert any(key.endswith(str(catalog.files["141"])) for key in cache)
    # The sparse file's md5 came from the catalog: it was never hashed.
    assert not any(key.endswith(str(catalog.files["160"])) for key in cache)


def test_flowfs_serve_takes_the_servers_flags(tmp_path, catalog, poll):
    """`flowfs serve --catalog FILE` (the daemon's command) runs the same server."""
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowfs", "serve", "--catalog", str(catalog.path), "--port", "0",
         "--state-dir", str(tmp_path / "st"), "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(ready.exists, 20, "the ready file")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    info = json.loads(ready.read_text())
    assert proc.returncode == 0, err
    assert out == f"API:   {info['api']}\nFiles: {info['files']}\n"


@pytest.mark.parametrize("command", [["flowfs", "serve"], ["flowfs.server"]])
def test_serve_help_lists_the_flags_but_not_the_test_knobs(command):
    result = subprocess.run([sys.executable, "-m", *command, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flowfs serve ")
    for flag in ("--catalog FILE", "--port PORT", "--state-dir DIR", "--job-ttl S",
                 "--ready-file PATH", "--access-log FILE", "--export-dir DIR"):
        assert flag in result.stdout
    assert "--job-delay" not in result.stdout


def test_flowfs_serve_refuses_a_bad_flag_value_in_one_line(tmp_path, catalog):
    result = subprocess.run(
        [sys.executable, "-m", "flowfs", "serve", "--catalog", str(catalog.path),
         "--port", "70000"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "flowfs serve: error: argument --port: must be 0-65535")


def test_a_server_that_cannot_start_is_reported_at_once_with_its_message(tmp_path):
    start = time.monotonic()
    with pytest.raises(processes.ChildExited, match="catalog"):
        processes.start_server(tmp_path / "missing.json", tmp_path / "srv", timeout=60)
    assert time.monotonic() - start < 30  # not the deadline: the exit ends the wait
