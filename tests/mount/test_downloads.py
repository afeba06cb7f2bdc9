"""`.downloads/` through a real mount: manifests written by real tools become ZIP archives.

A module-scoped reference server whose jobs spend at least a second processing (so a
status can be seen before completion), and its own mounts. Tests that need a server of
their own (expiry, restart, another catalog) start it with the ``own`` fixture.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import httpx
import pytest
from expect import source_md5s
from harness import Mount, MountFactory, Processes, Server, login_token, sh, user_env, wait_for

BIG_ID = "9007199254740993"
ACTIVE = ("pending", "processing")
EINVAL = os.strerror(22).encode()  # "Invalid argument"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dl_server(demo: Path, module_processes: Processes) -> Server:
    return module_processes.server(demo, "--job-delay", "1")


@pytest.fixture(scope="module")
def m(dl_server: Server, mounts: MountFactory) -> Mount:
    return mounts(dl_server, "alice")


@pytest.fixture(scope="module")
def sources(demo: Path) -> dict[str, str]:
    return source_md5s(demo)


Own = Callable[..., tuple[Server, Mount]]


@pytest.fixture
def own(processes: Processes) -> Own:
    """``make(catalog, *server_flags, mount_at=None)``: a server and an alice mount of the
    test's own; both stopped at the end of the test."""

    def make(catalog: Path, *flags: str, mount_at: Path | None = None) -> tuple[Server, Mount]:
        srv = processes.server(catalog, *flags)
        return srv, processes.mount(srv, user_env("alice", "alice-pw"), path=mount_at)

    return make


# -- helpers -------------------------------------------------------------------------------


def dl(m: Mount, name: str = "") -> str:
    return m.p(f".downloads/{name}")


def listing(m: Mount) -> list[str]:
    return sh("ls", "-A", dl(m)).stdout.decode().splitlines()


def status(m: Mount, stem: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(sh("cat", dl(m, f"{stem}.status")).stdout)
    return info


def wait_zip(m: Mount, stem: str, timeout: float = 30) -> dict[str, Any]:
    """Poll `ls` until ``<stem>.zip`` shows; the completed status."""
    wait_for(lambda: f"{stem}.zip" in listing(m), timeout, what=f"{stem}.zip")
    info = status(m, stem)
    assert info["status"] == "completed", info
    return info


_WRITERS: dict[str, Callable[[str, str, Path], list[str]]] = {
    "echo": lambda text, path, _: ["bash", "-c", 'echo "$1" > "$2"', "_", text.rstrip("\n"),
                                   path],
    "printf": lambda text, path, _: ["bash", "-c", 'printf "%s" "$1" > "$2"', "_", text, path],
    "cp": lambda text, path, tmp: ["cp", str(_local(tmp, text)), path],
    "tee": lambda text, path, _: ["bash", "-c", 'printf "%s" "$1" | tee "$2" > /dev/null', "_",
                                  text, path],
    "python": lambda text, path, _: [sys.executable, "-c",
                                     "import sys\nf = open(sys.argv[1], 'w')\n"
                                     "f.write(sys.argv[2])\nf.close()", path, text],
}


def _local(tmp: Path, text: str) -> Path:
    src = tmp / f"manifest-{len(list(tmp.iterdir()))}.txt"
    src.write_text(text)
    return src


def write(tool: str, path: str, text: str, tmp: Path) -> CompletedProcess[bytes]:
    """Write ``text`` to ``path`` the way a user would with ``tool``; never raises."""
    return sh(*_WRITERS[tool](text, path, tmp), check=False)


ZIP_MD5S = r"""
import hashlib, json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    out = {i.filename: hashlib.md5(z.read(i)).hexdigest() for i in z.infolist()
           if not i.is_dir()}
json.dump(out, sys.stdout)
"""


def zip_md5s(path: str) -> dict[str, str]:
    """Entry name -> md5 of its bytes, the archive read through the mount in a child."""
    out: dict[str, str] = json.loads(sh(sys.executable, "-c", ZIP_MD5S, path).stdout)
    return out


def error_lines(m: Mount, stem: str) -> dict[int, str]:
    text = sh("cat", dl(m, f"{stem}.error")).stdout.decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("line "):
            number, _, message = line[len("line "):].partition(": ")
            out[int(number)] = message
    return out


# -- the protocol --------------------------------------------------------------------------


def test_a_project_samples_directory_becomes_a_zip_identical_to_its_sources(
    m: Mount, catalog: dict[str, Any], sources: dict[str, str]
) -> None:
    proc = sh("bash", "-c", "printf 'projects/Liver RNA-seq/samples\\n' > \"$1\"", "_",
              dl(m, "liver.manifest"), check=False)
    assert proc.returncode == 0, proc.stderr
    names = listing(m)
    assert "liver.status" in names and "liver.manifest" not in names
    assert status(m, "liver")["status"] in ACTIVE

    info = wait_zip(m, "liver")
    samples = {s["id"]: s for s in catalog["samples"] if s["project"] == "1"}
    expected = [d for d in catalog["data"] if d.get("sample") in samples]
    assert info["progress"] == 100 and info["files"] == len(expected)
    assert info["zip"] == "liver.zip" and info["error"] is None
    assert info["expires"] > info["finished"] >= info["started"] >= info["created"]
    archive = dl(m, "liver.zip")
    assert int(sh("stat", "-c", "%s", archive).stdout) == info["size"]

    assert b"No errors detected" in sh("unzip", "-t", archive).stdout
    listed = sh("unzip", "-l", archive).stdout.decode()
    listed_py = sh(sys.executable, "-m", "zipfile", "-l", archive).stdout.decode()
    entries = zip_md5s(archive)
    assert len(entries) == len(expected)
    for name in entries:
        assert name in listed and name in listed_py
    assert {n.split("/")[0] for n in entries} == {"liver_1", "liver_2", "rep"}
    for d in expected:  # every source file is in the archive under its own name
        stem = d["filename"].split(".")[0]
        assert any(n.rsplit("/", 1)[1].startswith(stem) for n in entries), d["filename"]
    got = collections.Counter(entries.values())
    assert got == collections.Counter(sources[d["id"]] for d in expected)


def test_status_is_valid_json_and_fresh_on_every_read(m: Mount) -> None:
    sh("bash", "-c", 'echo samples/pilot_b > "$1"', "_", dl(m, "fresh.manifest"))
    seen: list[tuple[str, int, int]] = []
    sizes: set[int] = set()

    def size() -> int:
        return int(sh("stat", "-c", "%s", dl(m, "fresh.status")).stdout)

    def completed() -> bool:
        # The size before the read is of the state it read or an earlier one; after it,
        # of that state or a later one: so the first poll's is an active state's, and the
        # last poll's that of "completed", whenever the job moves on between stat and read.
        before = size()
        info = status(m, "fresh")  # json.loads: a read cut at a stale size would not parse
        after = size()
        seen.append((info["status"], info["progress"], after))
        sizes.update((before, after))
        return bool(info["status"] == "completed")

    wait_for(completed, 30, what="fresh.status to say completed")
    assert seen[0][0] in ACTIVE, seen
    assert seen[-1][:2] == ("completed", 100)
    progress = [p for _, p, _ in seen]
    assert progress == sorted(progress)
    assert len(sizes) >= 2, "the status's size never changed: stale attributes?"
    # Once done, its size as stat(2) sees it is that of what a read returns.
    script = ("import os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
              "data = os.read(fd, 1 << 20)\nprint(len(data), os.fstat(fd).st_size)")
    got, told = sh(sys.executable, "-c", script, dl(m, "fresh.status")).stdout.split()
    assert got == told


@pytest.mark.parametrize("tool", sorted(_WRITERS))
def test_every_writing_tool_submits_a_manifest(m: Mount, tool: str, tmp_path: Path) -> None:
    stem = f"by-{tool}"
    proc = write(tool, dl(m, f"{stem}.manifest"), "samples/pilot_a\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = listing(m)
    assert f"{stem}.status" in names
    assert f"{stem}.manifest" not in names and f"{stem}.error" not in names
    assert status(m, stem)["files"] == 6


BAD_MANIFEST: list[tuple[str, str | None]] = [
    ("# an archive with mistakes", None),
    ("samples/pilot_a", None),
    ("projects/No such project/samples", "no such file or directory"),
    ("projects/../samples", "'..' is not allowed"),
    ("id:12ab", "a data id is a number"),
    ("/etc/passwd", "outside the mount"),
    (".downloads/README.txt", "cannot archive .downloads"),
    ("by-id/999999999", "no such file or directory"),
    ("id:999999999", "no such file or directory"),
    ("by_execution: maybe", "true or false"),
    ("by-id", "no data files below it"),  # a directory that lists nothing
    ("README.txt", "not a Flow data file"),
]


@pytest.mark.parametrize("tool", ["printf", "cp", "tee", "python"])
def test_a_bad_manifest_fails_explains_each_line_and_can_be_fixed(
    m: Mount, tool: str, tmp_path: Path
) -> None:
    """cp, tee and Python write the manifest in one piece: every bad line is explained.
    bash's printf writes line by line and stops at the first refused write, so flowfs
    never sees the lines after it: only that first bad line can be explained."""
    stem = f"bad-{tool}"
    text = "".join(f"{line}\n" for line, _ in BAD_MANIFEST)
    proc = write(tool, dl(m, f"{stem}.manifest"), text, tmp_path)
    assert proc.returncode != 0
    assert EINVAL in proc.stderr, proc.stderr

    names = listing(m)
    assert f"{stem}.manifest" in names and f"{stem}.error" in names
    assert f"{stem}.status" not in names
    errors = error_lines(m, stem)
    bad = {n: why for n, (_, why) in enumerate(BAD_MANIFEST, start=1) if why}
    if tool == "printf":
        bad = {min(bad): bad[min(bad)]}
    assert sorted(errors) == sorted(bad), errors
    for number, why in bad.items():
        assert why in errors[number], (number, errors[number])
        named = BAD_MANIFEST[number - 1][0].split(":")[-1].strip()
        assert named in errors[number], (number, errors[number])  # says which entry

    fixed = write(tool, dl(m, f"{stem}.manifest"), "samples/pilot_a\nid:9007199254740993\n",
                  tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    names = listing(m)
    assert f"{stem}.status" in names
    assert f"{stem}.manifest" not in names and f"{stem}.error" not in names
    assert status(m, stem)["files"] == 7


def test_line_numbers_count_across_separate_writes(m: Mount) -> None:
    script = ('{ echo samples/pilot_a; echo id:x; echo samples/pilot_b; echo ../y; } > "$1"')
    proc = sh("bash", "-c", script, "_", dl(m, "pieces.manifest"), check=False)
    assert proc.stderr.count(b"write error: Invalid argument") == 2, proc.stderr
    errors = error_lines(m, "pieces")
    assert sorted(errors) == [2, 4], errors
    names = listing(m)
    assert "pieces.manifest" in names and "pieces.status" not in names
    # Appending good lines cannot rescue it: the refused lines would be missing silently.
    again = sh("bash", "-c", 'echo samples/pilot_b >> "$1"', "_", dl(m, "pieces.manifest"),
               check=False)
    assert again.returncode == 0  # the append itself is fine...
    assert "pieces.status" not in listing(m)  # ...but nothing is submitted
    sh("rm", dl(m, "pieces.manifest"), dl(m, "pieces.error"))
    assert not {"pieces.manifest", "pieces.error"} & set(listing(m))


def test_a_last_line_without_newline_is_checked_on_close(m: Mount, tmp_path: Path) -> None:
    proc = write("cp", dl(m, "tail.manifest"), "samples/pilot_a\nsamples/nope", tmp_path)
    assert proc.returncode != 0 and b"close" in proc.stderr and EINVAL in proc.stderr
    assert list(error_lines(m, "tail")) == [2]
    assert "tail.status" not in listing(m)


def test_an_empty_directory_is_refused(dl_server: Server, mounts: MountFactory) -> None:
    bob = mounts(dl_server, "bob")
    empty = "executions/sleepy_lovelace"  # a running execution with no outputs yet
    assert sh("ls", "-A", bob.p(empty)).stdout == b""
    proc = sh("bash", "-c", 'echo "$1" > "$2"', "_", empty, dl(bob, "empty.manifest"),
              check=False)
    assert proc.returncode != 0 and EINVAL in proc.stderr
    assert "no data files below it" in error_lines(bob, "empty")[1]


# -- names, limits and refusals ------------------------------------------------------------


@pytest.mark.parametrize("name", [".hidden.manifest", "a b.manifest", "foo.txt", "x.zip",
                                  "x.status", "a" * 101 + ".manifest", "é.manifest"])
def test_bad_names_are_invalid(m: Mount, name: str) -> None:
    proc = sh("bash", "-c", 'echo samples/pilot_a > "$1"', "_", dl(m, name), check=False)
    assert proc.returncode != 0 and EINVAL in proc.stderr, proc.stderr
    assert name not in listing(m)


def test_a_name_ending_in_a_newline_is_invalid(m: Mount) -> None:
    proc = sh("touch", dl(m, "nl\n.manifest"), check=False)
    assert proc.returncode != 0 and EINVAL in proc.stderr, proc.stderr


def test_a_hundred_character_name_is_fine(m: Mount) -> None:
    stem = "n" * 100
    sh("bash", "-c", 'echo samples/pilot_b > "$1"', "_", dl(m, f"{stem}.manifest"))
    assert f"{stem}.status" in listing(m)


def test_no_subdirectories(m: Mount) -> None:
    proc = sh("mkdir", dl(m, "sub"), check=False)
    assert proc.returncode != 0 and b"Operation not permitted" in proc.stderr


def test_the_readme_stays(m: Mount) -> None:
    proc = sh("rm", "-f", dl(m, "README.txt"), check=False)
    assert proc.returncode != 0 and b"Operation not permitted" in proc.stderr
    assert "printf" in sh("cat", dl(m, "README.txt")).stdout.decode()


def test_a_name_in_use_exists_until_its_job_is_removed(m: Mount) -> None:
    manifest = dl(m, "twice.manifest")
    sh("bash", "-c", 'echo samples/pilot_b > "$1"', "_", manifest)
    proc = sh("bash", "-c", 'echo samples/pilot_a > "$1"', "_", manifest, check=False)
    assert proc.returncode != 0 and b"File exists" in proc.stderr
    sh("rm", dl(m, "twice.status"))
    sh("bash", "-c", 'echo samples/pilot_a > "$1"', "_", manifest)
    assert status(m, "twice")["files"] == 6


def _big_manifest(tmp_path: Path, first_line: bytes) -> Path:
    """A manifest of over 11 MiB: ``first_line``, then comment lines."""
    big = tmp_path / "big.manifest"
    line = b"# " + b"padding " * 15 + b"\n"
    with big.open("wb") as fh:
        fh.write(first_line)
        fh.write(line * (11 * 2**20 // len(line) + 1))
    assert big.stat().st_size > 11 * 2**20
    return big


def test_a_manifest_over_10_mib_is_too_large(m: Mount, tmp_path: Path) -> None:
    big = _big_manifest(tmp_path, b"# a very long comment follows\n")
    proc = sh("cp", str(big), dl(m, "big.manifest"), check=False)
    try:
        assert proc.returncode != 0 and b"File too large" in proc.stderr, proc.stderr
    finally:
        sh("rm", "-f", dl(m, "big.manifest"), dl(m, "big.error"))


def test_a_manifest_too_large_is_not_submitted_cut_short(m: Mount, tmp_path: Path) -> None:
    big = _big_manifest(tmp_path, b"samples/pilot_a\n")
    proc = sh("cp", str(big), dl(m, "cut.manifest"), check=False)
    try:
        assert proc.returncode != 0 and b"File too large" in proc.stderr, proc.stderr
        assert "cut.status" not in listing(m)  # the lines past 10 MiB would be missing
    finally:
        sh("rm", "-f", dl(m, "cut.manifest"), dl(m, "cut.error"), dl(m, "cut.status"))


@pytest.mark.parametrize("where", ["x.manifest", "samples/x.manifest", "data/x.manifest"])
def test_writes_outside_downloads_are_read_only(m: Mount, where: str) -> None:
    proc = sh("bash", "-c", 'echo samples/pilot_a > "$1"', "_", m.p(where), check=False)
    assert proc.returncode != 0 and b"Read-only file system" in proc.stderr


# -- jobs ----------------------------------------------------------------------------------


def test_two_jobs_at_once_both_complete(m: Mount) -> None:
    sh("bash", "-c", 'echo samples/pilot_a > "$1"; echo samples/liver_1 > "$2"', "_",
       dl(m, "one.manifest"), dl(m, "two.manifest"))
    for stem in ("one", "two"):
        wait_zip(m, stem)
        assert b"No errors detected" in sh("unzip", "-t", dl(m, f"{stem}.zip")).stdout


def test_removing_the_zip_deletes_the_job(m: Mount, dl_server: Server) -> None:
    sh("bash", "-c", 'echo data/notes.txt > "$1"', "_", dl(m, "gone.manifest"))
    job_id = wait_zip(m, "gone")["job_id"]
    sh("rm", dl(m, "gone.zip"))
    names = listing(m)
    assert "gone.zip" not in names and "gone.status" not in names
    deletes = [r for r in dl_server.requests()
               if r["method"] == "DELETE" and r["path"] == f"/api/downloads/{job_id}"]
    assert [r["status"] for r in deletes] == [204]
    token = login_token(dl_server, "alice", "alice-pw")
    resp = httpx.get(f"{dl_server.api}/downloads/{job_id}", timeout=10,
                     headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 404


def test_by_execution_groups_entries_by_execution(m: Mount, catalog: dict[str, Any],
                                                  sources: dict[str, str]) -> None:
    text = "by_execution: true\nprojects/Liver RNA-seq/executions\nexecutions/Variant-Calling-21\n"
    sh("bash", "-c", 'printf "%s" "$1" > "$2"', "_", text, dl(m, "runs.manifest"))
    info = wait_zip(m, "runs")
    assert info["by_execution"] is True
    entries = zip_md5s(dl(m, "runs.zip"))
    folder = {"20": "brave_turing", "21": "Variant-Calling-21"}  # as the mount names them
    expected = {f"{folder[d['execution']]}/{d['output_path']}": sources[d["id"]]
                for d in catalog["data"] if d.get("execution") in folder}
    assert entries == expected


def test_ids_by_id_paths_and_duplicates(m: Mount, sources: dict[str, str]) -> None:
    lines = [
        "id:103",
        "by-id/103",                                            # the same file again
        "samples/liver_1/liver_1.bam.bai",                      # and again
        "projects/Liver RNA-seq/samples/liver_1/liver_1.bam.bai",
        f"id:{BIG_ID}",
        f"{m.path}/data/notes.txt",                             # BIG_ID, absolute path
        "samples/pilot_b",
        "samples/pilot_b/pilot_b_R1.fastq.gz",                  # inside a directory named
    ]
    sh("bash", "-c", 'printf "%s\\n" "$@" > "$0"', dl(m, "mixed.manifest"), *lines)
    info = wait_zip(m, "mixed")
    entries = zip_md5s(dl(m, "mixed.zip"))
    assert info["files"] == len(entries) == 4, entries
    assert entries == {
        "liver_1/liver_1.bam.bai": sources["103"],
        "unassigned/notes.txt": sources[BIG_ID],
        "pilot_b/pilot_b_R1.fastq.gz": sources["128"],
        "pilot_b/pilot_b_R2.fastq.gz": sources["129"],
    }


def test_a_job_made_through_the_api_appears(m: Mount, dl_server: Server,
                                           sources: dict[str, str]) -> None:
    token = login_token(dl_server, "alice", "alice-pw")
    resp = httpx.post(f"{dl_server.api}/downloads", timeout=10,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"data_ids": ["100", "101"], "name": "from-web.zip"})
    assert resp.status_code == 201, resp.text
    wait_for(lambda: "from-web.status" in listing(m), 10, what="from-web.status")
    assert status(m, "from-web")["job_id"] == resp.json()["id"]
    wait_zip(m, "from-web")
    assert sorted(zip_md5s(dl(m, "from-web.zip")).values()) == sorted(
        [sources["100"], sources["101"]])


@pytest.fixture(scope="module")
def brief(demo: Path, module_processes: Processes, mounts: MountFactory) -> Mount:
    """An alice mount of a server whose archives expire 3 s after completion."""
    return mounts(module_processes.server(demo, "--job-ttl", "3"), "alice")


def expire(m: Mount, stem: str) -> None:
    """Make a job, wait for its archive, then for the archive to leave `ls`."""
    sh("bash", "-c", 'echo samples/pilot_a > "$1"', "_", dl(m, f"{stem}.manifest"))
    wait_zip(m, stem)
    wait_for(lambda: f"{stem}.zip" not in listing(m), 20, what=f"{stem}.zip to vanish")


def test_an_expired_archive_vanishes(brief: Mount) -> None:
    expire(brief, "old")
    assert status(brief, "old")["status"] == "expired"
    assert "old.status" in listing(brief)

    def unreadable() -> bool:
        proc = sh("cat", dl(brief, "old.zip"), check=False)
        return proc.returncode != 0 and b"No such file" in proc.stderr

    wait_for(unreadable, 10, what="old.zip to be unreadable")
    waited = sh(sys.executable, "-m", "flowfs", "downloads", "wait", "old", cwd=brief.path,
                check=False)
    assert waited.returncode == 3 and b"expired" in waited.stdout, waited  # the job failed


def test_an_expired_archive_is_gone_for_stat_too(brief: Mount) -> None:
    expire(brief, "stale")
    proc = sh("stat", dl(brief, "stale.zip"), check=False)
    assert proc.returncode != 0, "ls no longer shows stale.zip, but stat still finds it"


def test_a_server_restart_during_a_job_loses_nothing(own: Own, demo: Path) -> None:
    srv, mount = own(demo, "--job-delay", "4")
    sh("bash", "-c", 'echo "samples/liver_1" > "$1"', "_", dl(mount, "survivor.manifest"))
    wait_for(lambda: status(mount, "survivor")["status"] == "processing", 10,
             what="the job to start")
    srv.stop()
    during = status(mount, "survivor")  # the server is down: the status is still there
    assert during["status"] in ACTIVE
    srv.start()  # same port, same state dir

    def done() -> bool:
        info = status(mount, "survivor")  # never lost: every read succeeds
        assert info["status"] in (*ACTIVE, "completed"), info
        return "survivor.zip" in listing(mount)

    wait_for(done, 40, what="survivor.zip after the restart")
    assert status(mount, "survivor")["status"] == "completed"
    assert b"No errors detected" in sh("unzip", "-t", dl(mount, "survivor.zip")).stdout


def test_the_downloads_command_creates_follows_and_lists(m: Mount) -> None:
    flowfs = (sys.executable, "-m", "flowfs", "downloads")
    made = sh(*flowfs, "create", "cli", "samples/pilot_b", "id:103", cwd=m.path)
    assert b"cli" in made.stdout
    waited = sh(*flowfs, "wait", "cli", cwd=m.path, timeout=60)
    assert b"ready" in waited.stdout and "cli.zip" in listing(m)
    rows = sh(*flowfs, "list", cwd=m.path).stdout.decode().splitlines()
    assert any(r.split()[:2] == ["cli", "completed"] for r in rows), rows
    assert len(zip_md5s(dl(m, "cli.zip"))) == 3
    bad = sh(*flowfs, "create", "cli-bad", "samples/nope", cwd=m.path, check=False)
    assert bad.returncode != 0 and b"line 1: " in bad.stderr


# -- known bugs ----------------------------------------------------------------------------


def test_an_absolute_path_through_the_real_mount_path_is_accepted(
    own: Own, demo: Path, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    _, mount = own(demo, mount_at=tmp_path / "link" / "flow")
    # Resolved from the parent: a realpath of the mount root would ask the mount itself,
    # from this process, with no deadline.
    real = os.path.join(os.path.realpath(mount.path.parent), mount.path.name)
    assert real != str(mount.path)
    proc = sh("bash", "-c", 'echo "$1" > "$2"', "_", f"{real}/samples/pilot_a",
              dl(mount, "real.manifest"), check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_job_the_server_refuses_is_explained(own: Own,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    from flowfs.server.demodata import many_files_catalog

    catalog = many_files_catalog(tmp_path_factory.mktemp("many"), n_files=10_001,
                                 per_sample=1000)
    _, mount = own(catalog)
    proc = sh("bash", "-c", 'echo "projects/Many files/samples" > "$1"', "_",
              dl(mount, "huge.manifest"), check=False)
    # The server allows 10,000 files a job: the user must be told, not left guessing.
    names = listing(mount)
    assert "huge.error" in names, (proc.returncode, proc.stderr, names)
    assert re.search(r"10,?000", sh("cat", dl(mount, "huge.error")).stdout.decode())
