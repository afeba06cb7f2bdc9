"""The tree through a real mount: what each user sees, names, attributes, real tools."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from expect import WALKER, readable_data_ids, shown_data_ids, source_md5s
from harness import Mount, sh


def walk(m: Mount) -> list[dict[str, Any]]:
    out = sh(sys.executable, "-c", WALKER, str(m.path), timeout=120).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def alice_files(alice: Mount) -> list[dict[str, Any]]:
    return walk(alice)


def test_root_shows_the_documented_tree(alice: Mount) -> None:
    names = sh("ls", str(alice.path)).stdout.decode().split()
    assert names == ["README.txt", "by-id", "data", "executions", "projects", "samples"]
    readme = sh("cat", alice.p("README.txt")).stdout.decode()
    assert "by-id" in readme and "read-only" in readme


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_each_user_sees_exactly_what_they_may_read(
    user: str, request: pytest.FixtureRequest, catalog: dict[str, Any]
) -> None:
    m: Mount = request.getfixturevalue(user)
    seen = {f["id"] for f in walk(m)}
    assert seen == shown_data_ids(catalog, user)
    assert seen <= readable_data_ids(catalog, user)


def test_every_file_is_byte_identical(alice_files: list[dict[str, Any]], demo: Path) -> None:
    sources = source_md5s(demo)
    assert alice_files, "the walk found no files"
    for f in alice_files:
        assert f["md5"] == sources[f["id"]], f["path"]
        assert f["xmd5"] in (None, f["md5"]), f["path"]
    assert sum(1 for f in alice_files if f["xmd5"]) == len(alice_files)


def test_sizes_are_exact_and_du_counts_them(alice: Mount, demo: Path,
                                            alice_files: list[dict[str, Any]]) -> None:
    catalog = json.loads(demo.read_text())
    on_disk = {d["id"]: (demo.parent / d["path"]).stat().st_size for d in catalog["data"]}
    for f in alice_files:
        assert f["size"] == on_disk[f["id"]], f["path"]
    du = int(sh("du", "-s", "--apparent-size", "-B1", alice.p("data")).stdout.split()[0])
    loose = sum(f["size"] for f in alice_files if f["path"].startswith("data/"))
    assert du >= loose > 0


def test_same_named_samples_get_distinct_directories(alice: Mount,
                                                     catalog: dict[str, Any]) -> None:
    by_project: dict[tuple[str, str], list[str]] = {}
    for s in catalog["samples"]:
        by_project.setdefault((s["project"], s["name"]), []).append(s["id"])
    dupes = [(p, n, ids) for (p, n), ids in by_project.items() if len(ids) > 1]
    assert dupes, "the demo catalog should contain a name collision"
    project_id, name, ids = dupes[0]
    first, *others = sorted(ids, key=int)
    found = sh("find", str(alice.path / "projects"), "-maxdepth", "3", "-type", "d",
               "-name", f"{name}*").stdout.decode().split()
    tails = sorted(Path(p).name for p in found)
    assert name in tails
    for other in others:
        assert f"{name}~{other}" in tails


def test_sample_names_with_a_slash_are_sanitised(alice_files: list[dict[str, Any]],
                                                 catalog: dict[str, Any]) -> None:
    slashed = [s["name"] for s in catalog["samples"] if "/" in s["name"]]
    paths = {f["path"] for f in alice_files}
    for name in slashed:
        safe = name.replace("/", "_")
        assert any(f"/{safe}/" in f"/{p}" for p in paths), name


def test_execution_outputs_are_nested_directories(alice_files: list[dict[str, Any]]) -> None:
    outputs = [f["path"] for f in alice_files if f["kind"] == "data" and "/executions/" in
               "/" + f["path"] and f["path"].count("/") >= 4]
    assert any("brave_turing/results/" in p for p in outputs), outputs[:10]


def test_xattrs_describe_each_file(alice: Mount, alice_files: list[dict[str, Any]]) -> None:
    f = next(x for x in alice_files if x["path"].endswith(".bam"))
    out = sh("getfattr", "-d", alice.p(f["path"])).stdout.decode()
    for key in ("user.flow.id", "user.flow.md5", "user.flow.url", "user.flow.kind"):
        assert key in out
    missing = sh("getfattr", "-n", "user.flow.nope", alice.p(f["path"]), check=False)
    assert missing.returncode != 0 and b"No such attribute" in missing.stderr


def test_by_id_finds_files_but_lists_nothing(alice: Mount,
                                             alice_files: list[dict[str, Any]]) -> None:
    f = alice_files[0]
    assert sh("ls", "-A", alice.p("by-id")).stdout == b""
    md5 = sh("md5sum", alice.p(f"by-id/{f['id']}")).stdout.split()[0].decode()
    assert md5 == f["md5"]
    gone = sh("cat", alice.p("by-id/999999999"), check=False)
    assert gone.returncode != 0 and b"No such file" in gone.stderr


def test_stat_and_modes(alice: Mount, alice_files: list[dict[str, Any]]) -> None:
    umask = os.umask(0o022)  # the daemon's, inherited from this process: 022 as a rule
    os.umask(umask)
    f = alice_files[0]
    st = os_stat(alice.p(f["path"]))
    assert st["mode"] == f"{0o666 & ~umask:o}" and st["size"] == f["size"]
    assert st["uid"] == os.getuid()
    assert os_stat(alice.p("projects"))["mode"] == f"{0o777 & ~umask:o}"


def os_stat(path: str) -> dict[str, Any]:
    out = sh("stat", "-c", "%a %s %u", path).stdout.decode().split()
    return {"mode": out[0], "size": int(out[1]), "uid": int(out[2])}


@pytest.mark.parametrize(
    "cmd",
    [
        ["touch", "{f}"],
        ["mkdir", "{d}/new"],
        ["rm", "-f", "{f}"],
        ["mv", "{f}", "{d}/moved"],
        ["sh", "-c", "echo x > {d}/new.txt"],
        ["sh", "-c", "echo x >> {f}"],
        ["setfattr", "-n", "user.x", "-v", "1", "{f}"],
    ],
)
def test_writes_are_refused_as_read_only(alice: Mount, alice_files: list[dict[str, Any]],
                                         cmd: list[str]) -> None:
    f = alice.p(alice_files[0]["path"])
    d = str(Path(f).parent)
    proc = sh(*[c.format(f=f, d=d) for c in cmd], check=False)
    assert proc.returncode != 0
    assert os.strerror(errno.EROFS).encode() in proc.stderr, proc.stderr
