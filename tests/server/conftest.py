"""Fixtures for the reference server tests: a small catalog and real server processes.

Every server runs as ``python -m flowfs.server --port 0`` in a subprocess and is
waited for through its ready file (with a deadline), and stopped by the fixture
that started it.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowfs import processes

STARTUP_DEADLINE = 20.0
STOP_DEADLINE = 15.0
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
CAROL_API_KEY = "carol-static-api-key"
SPARSE_SIZE = 512 * 2**20
EXTRA_ALICE_PROJECTS = 22  # alice owns 23 projects: more than one default page


@dataclass
class Catalog:
    """The test catalog on disk, and what the tests need to know about it."""

    path: Path
    files: dict[str, Path]  # data id -> file
    raw: dict[str, Any]

    def content(self, data_id: str) -> bytes:
        return self.files[data_id].read_bytes()

    def record(self, data_id: str) -> dict[str, Any]:
        return next(d for d in self.raw["data"] if d["id"] == data_id)


def _write(root: Path, rel: str, content: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _sparse_md5(size: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    zeros = bytes(2**20)
    for _ in range(size // len(zeros)):
        digest.update(zeros)
    return digest.hexdigest()


def _catalog_document() -> dict[str, Any]:
    users = [
        {"username": "alice", "password": PASSWORDS["alice"], "name": "Alice A."},
        {"username": "bob", "password": PASSWORDS["bob"], "name": "Bob B."},
        {"username": "carol", "password": PASSWORDS["carol"], "name": "Carol C.",
         "api_key": CAROL_API_KEY},
    ]
    projects = [
        {"id": "1", "name": "Liver RNA-seq", "owner": "alice", "private": True,
         "shared_with": ["bob"], "description": "livers"},
        {"id": "2", "name": "Public atlas", "owner": "bob", "private": False},
        {"id": "3", "name": "Carol secret", "owner": "carol", "private": True},
    ] + [{"id": str(1000 + i), "name": f"Alice extra {i}", "owner": "alice"}
         for i in range(EXTRA_ALICE_PROJECTS)]
    samples = [
        {"id": "10", "name": "liver_1", "project": "1"},
        {"id": "11", "name": "liver_2", "project": "1"},
        {"id": "12", "name": "atlas_1", "project": "2"},
        {"id": "13", "name": "carol_s", "project": "3"},
        {"id": "14", "name": "bob_solo", "owner": "bob", "private": True,
         "shared_with": ["carol"]},
    ]
    executions = [
        {"id": "20", "identifier": "brave_turing", "pipeline_name": "RNA-Seq",
         "pipeline_version": "3.8.1", "project": "1", "status": "OK",
         "created": "2024-01-02T03:04:05Z"},
        {"id": "21", "identifier": "calm_curie", "pipeline_name": "ChIP-Seq",
         "pipeline_version": "2.0", "project": "3"},
    ]
    return {"users": users, "projects": projects, "samples": samples,
            "executions": executions, "data": []}


def _data_files(rng: random.Random) -> list[tuple[dict[str, Any], bytes | None]]:
    """(catalog record without path, content) for each data file; None = sparse."""
    text = b"gene\tliver_1\tliver_2\n" + b"".join(
        b"G%05d\t%d\t%d\n" % (i, rng.randrange(1000), rng.randrange(1000)) for i in range(2000))
    return [
        ({"id": "100", "filename": "liver_1_R1.fastq.gz", "sample": "10"}, rng.randbytes(300_000)),
        ({"id": "101", "filename": "liver_1_R2.fastq.gz", "sample": "10"}, rng.randbytes(200_001)),
        ({"id": "102", "filename": "notes.txt", "sample": "10"}, b"first notes\n"),
        ({"id": "103", "filename": "notes.txt", "sample": "10"}, b"second, other notes\n"),
        ({"id": "104", "filename": "liver_2_R1.fastq.gz", "sample": "11"}, rng.randbytes(1000)),
        ({"id": "110", "filename": "multiqc_report.html", "execution": "20",
          "output_path": "multiqc/multiqc_report.html"}, b"<html>report</html>\n" * 50),
        ({"id": "111", "filename": "all.gene_counts.tsv", "execution": "20",
          "output_path": "results/counts/all.gene_counts.tsv"}, text),
        ({"id": "120", "filename": "atlas.bam", "sample": "12"}, rng.randbytes(50_000)),
        ({"id": "130", "filename": "carol.fastq.gz", "sample": "13"}, rng.randbytes(5000)),
        ({"id": "131", "filename": "peaks.bed", "execution": "21",
          "output_path": "peaks/peaks.bed"}, b"chr1\t1\t100\n"),
        ({"id": "140", "filename": "empty.txt", "owner": "alice"}, b""),
        ({"id": "141", "filename": "big.bin", "owner": "alice"}, rng.randbytes(3 * 2**20 + 17)),
        ({"id": "142", "filename": "todo.txt", "owner": "bob"}, b"- todo\n"),
        ({"id": "143", "filename": "solo.txt", "sample": "14"}, b"solo data\n"),
        ({"id": "150", "filename": "public.txt", "owner": "bob", "private": False},
         b"hello, world\n"),
        ({"id": "160", "filename": "sparse.img", "owner": "alice"}, None),
    ]


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The shared test catalog (see _catalog_document and _data_files)."""
    root = tmp_path_factory.mktemp("catalog")
    document = _catalog_document()
    files: dict[str, Path] = {}
    for record, content in _data_files(random.Random(1234)):
        rel = f"files/{record['id']}/{record['filename']}"
        if content is None:
            path = root / rel
            path.parent.mkdir(parents=True)
            with open(path, "wb") as handle:
                handle.truncate(SPARSE_SIZE)
            record = {**record, "md5": _sparse_md5(SPARSE_SIZE)}
        else:
            path = _write(root, rel, content)
        files[record["id"]] = path
        document["data"].append({**record, "path": rel})
    path = root / "catalog.json"
    path.write_text(json.dumps(document, indent=1))
    return Catalog(path, files, document)


@dataclass
class Server:
    """One running server process."""

    proc: subprocess.Popen[bytes]
    api: str
    files: str
    state_dir: Path
    access_log: Path
    stdout_path: Path
    stderr_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the process (SIGKILL past the deadline); its exit code."""
        code = processes.stop(self.proc, sig, STOP_DEADLINE)
        assert code is not None
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]


ServerFactory = Callable[..., Server]


def start_server(catalog_path: Path, workdir: Path, *extra: str,
                 state_dir: Path | None = None) -> Server:
    """Start ``python -m flowfs.server`` on a free port and wait until it is ready."""
    state = state_dir or workdir / "state"
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    proc, info = processes.start_server(
        catalog_path, workdir, *extra, state_dir=state, access_log=workdir / "access.log",
        stdout=out, stderr=err, timeout=STARTUP_DEADLINE)
    return Server(proc, info["api"], info["files"], state, workdir / "access.log", out, err,
                  [str(arg) for arg in proc.args])


@pytest.fixture
def server_factory(tmp_path: Path, catalog: Catalog) -> Iterator[ServerFactory]:
    """Start servers with extra flags (``catalog_path=`` to use another catalog); all
    are stopped at teardown."""
    started: list[Server] = []

    def factory(*extra: str, catalog_path: Path | None = None, name: str = "srv",
                state_dir: Path | None = None) -> Server:
        server = start_server(catalog_path or catalog.path, tmp_path / f"{name}{len(started)}",
                              *extra, state_dir=state_dir)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Iterator[Server]:
    """The shared server with default settings (tests must not change its state much)."""
    srv = start_server(catalog.path, tmp_path_factory.mktemp("server"), "--workers", "2")
    yield srv
    assert srv.stop() == 0
    # Whatever the tests did (disconnects, refusals, forged tokens), nothing was logged.
    assert srv.stderr() == ""


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client, fresh for each test (so no cookie leaks between tests)."""
    with httpx.Client(timeout=30) as client:
        yield client


def login(http: httpx.Client, api: str, username: str) -> str:
    """An access token for ``username``."""
    reply = http.post(f"{api}/login", json={"username": username,
                                            "password": PASSWORDS[username]})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["token"])


@pytest.fixture(scope="session")
def tokens(server: Server) -> dict[str | None, dict[str, str]]:
    """Authorization headers by user (None: anonymous) for the shared server."""
    headers: dict[str | None, dict[str, str]] = {None: {}}
    with httpx.Client(timeout=30) as http:
        for user in PASSWORDS:
            headers[user] = {"Authorization": f"Bearer {login(http, server.api, user)}"}
    return headers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def poll() -> Callable[..., Any]:
    """``poll(predicate, deadline, what)``: ``flowfs.processes.wait_for`` as a fixture."""
    return processes.wait_for


@pytest.fixture(scope="session")
def log_in() -> Callable[[httpx.Client, str, str], str]:
    """``log_in(http, api, username)``: an access token."""
    return login


@pytest.fixture(scope="session")
def auth_header() -> Callable[[str], dict[str, str]]:
    """``auth_header(token)``: the Authorization header."""
    return bearer
