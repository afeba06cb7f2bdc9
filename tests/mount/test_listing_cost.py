"""What listing a big directory costs: a page per 100 entries, nothing per file, once per TTL.

One sample of 2,000 files on a server of its own; the access log counts the requests.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Mount, Processes, Server, sh

N_FILES = 2000
PAGE = 100
SAMPLE_ID = "10000"  # many_files_catalog's first (here: only) sample
DIR = "projects/Many files/samples/sample_00000"

MountFactory = Callable[..., Mount]


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flowfs.server.demodata import many_files_catalog

    return many_files_catalog(tmp_path_factory.mktemp("many"), n_files=N_FILES,
                              per_sample=N_FILES)


@pytest.fixture(scope="module")
def many_server(many: Path, module_processes: Processes) -> Server:
    return module_processes.server(many)


@pytest.fixture(scope="module")
def many_mount(many_server: Server, mounts: MountFactory) -> Mount:
    return mounts(many_server, "alice")


def ls_l(m: Mount) -> dict[str, tuple[str, int]]:
    """`ls -l` of the big directory: {name: (mode, size)}."""
    out = sh("ls", "-l", m.p(DIR), timeout=60).stdout.decode().splitlines()
    assert out[0].startswith("total ")
    entries = {}
    for line in out[1:]:
        fields = line.split(None, 8)
        entries[fields[8]] = (fields[0], int(fields[4]))
    return entries


def since(srv: Server, mark: int) -> list[dict[str, Any]]:
    return srv.requests()[mark:]


def is_list(request: dict[str, Any]) -> bool:
    return request["path"].startswith("/api/") and "page=" in (request["query"] or "")


def test_ls_l_of_2000_files_costs_a_request_per_page(many: Path, many_server: Server,
                                                     many_mount: Mount) -> None:
    catalog = json.loads(many.read_text())
    sizes = {d["filename"]: d["size"] for d in catalog["data"]}
    mark = len(many_server.requests())
    entries = ls_l(many_mount)
    assert len(entries) == N_FILES
    assert {name: size for name, (_, size) in entries.items()} == sizes
    umask = os.umask(0o022)  # the daemon's, inherited from this process
    os.umask(umask)
    assert {mode for mode, _ in entries.values()} == {stat.filemode(stat.S_IFREG | 0o666 & ~umask)}

    requests = since(many_server, mark)
    pages = [r for r in requests if r["path"] == f"/api/samples/{SAMPLE_ID}/data"]
    assert 1 <= len(pages) <= math.ceil(N_FILES / PAGE), pages
    assert all(r["status"] == 200 for r in pages)
    per_file = [r["path"] for r in requests
                if r["path"].startswith(("/api/data/", "/downloads/"))]
    assert per_file == [], f"{len(per_file)} requests for single files: {per_file[:5]}"
    others = [r["path"] for r in requests if r not in pages]
    assert len(others) <= 10, others  # the parents' listings, a login: a handful


def test_a_second_ls_l_within_the_ttl_asks_nothing(many_server: Server,
                                                   many_mount: Mount) -> None:
    first = ls_l(many_mount)
    mark = len(many_server.requests())
    assert ls_l(many_mount) == first
    requests = since(many_server, mark)
    assert [r for r in requests if is_list(r)] == [], requests
    assert requests == [], "a listing within its TTL should not reach the server"
