"""`.downloads/` under abuse through a real mount: lost replies, crowds of writers, killed
writers, hostile sizes. What each program's system calls return is what is checked.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Mount, MountFactory, Processes, Server, login_token, sh, user_env, wait_for

LIVER = ["100", "101", "102", "103", "110", "140", "141"]


@pytest.fixture(scope="module")
def srv(demo: Path, module_processes: Processes) -> Server:
    return module_processes.server(demo)


@pytest.fixture(scope="module")
def m(srv: Server, mounts: MountFactory) -> Mount:
    return mounts(srv, "alice")


def dl(m: Mount, name: str = "") -> str:
    return m.p(f".downloads/{name}")


def listing(m: Mount) -> list[str]:
    return sh("ls", "-A", dl(m)).stdout.decode().splitlines()


def server_jobs(srv: Server, name: str) -> list[dict[str, Any]]:
    """alice's jobs called ``name``, asked of the server itself (not through a mount)."""
    token = login_token(srv, "alice", "alice-pw")
    resp = httpx.get(f"{srv.api}/downloads", params={"count": 100}, timeout=10,
                     headers={"Authorization": f"Bearer {token}"})
    resp.raise_for_status()
    return [job for job in resp.json()["jobs"] if job["name"] == name]


def stats(m: Mount) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(sh("cat", m.p(".flowfs/stats")).stdout)
    return info


def echo(m: Mount, name: str, text: str) -> Any:
    return sh("bash", "-c", 'printf "%s" "$1" > "$2"', "_", text, dl(m, name), check=False)


# -- a lost reply to the job request -------------------------------------------------------------


@pytest.mark.parametrize("spec", ["api@POST:cut=1;max:1", "api@POST:cut=1"],
                         ids=["first-reply-cut", "every-reply-cut"])
def test_a_cut_reply_to_the_job_request_leaves_exactly_one_job_and_close_succeeds(
    demo: Path, processes: Processes, spec: str
) -> None:
    server = processes.server(demo)
    proxy = processes.proxy(server)
    mount = processes.mount(proxy.endpoint(), user_env("alice", "alice-pw"),
                            "--io-timeout", "10")
    proxy.set_faults(spec)  # logged in by now: the only POSTs left are job requests
    proc = echo(mount, "cut.manifest", "samples/pilot_a\n")
    assert proc.returncode == 0, proc.stderr
    assert proxy.stats().get("fault.cut", 0) >= 1  # the reply really was cut
    jobs = server_jobs(server, "cut.zip")
    assert len(jobs) == 1, jobs
    names = listing(mount)
    assert "cut.status" in names and "cut.manifest" not in names
    status = json.loads(sh("cat", dl(mount, "cut.status")).stdout)
    assert status["job_id"] == jobs[0]["id"]
    again = echo(mount, "cut.manifest", "samples/pilot_a\n")  # what a user tries next
    assert again.returncode != 0 and b"File exists" in again.stderr
    assert len(server_jobs(server, "cut.zip")) == 1


# -- many writers of one name ----------------------------------------------------------------------

CROWD = r"""
import json, os, sys, time
path, start, sets = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
kids = []
for ids in sets:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        while time.time() < start:
            pass
        result = {"ids": ids, "stage": "open", "errno": 0}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            result["stage"] = "write"
            for i in ids:
                os.write(fd, f"id:{i}\n".encode())
                time.sleep(0.05)
            result["stage"] = "close"
            os.close(fd)
        except OSError as exc:
            result["errno"] = exc.errno
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    kids.append((pid, r))
out = []
for pid, r in kids:
    with os.fdopen(r, "rb") as fh:
        out.append(json.loads(fh.read()))
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def test_eight_writers_of_one_name_each_hear_the_truth_about_their_own_lines(
    m: Mount, srv: Server
) -> None:
    import time

    sets = [LIVER[i:i + 1] for i in range(7)] + [LIVER[:3]]
    results = json.loads(sh(sys.executable, "-c", CROWD, dl(m, "crowd.manifest"),
                            str(time.time() + 1.0), json.dumps(sets), timeout=60).stdout)
    ok = [r for r in results if r["errno"] == 0]
    jobs = server_jobs(srv, "crowd.zip")
    # Every close() that said 0 made the job of exactly its own lines; nobody else did.
    assert len(ok) == len(jobs) == 1, (results, jobs)
    assert sorted(jobs[0]["data"]) == sorted(ok[0]["ids"])
    failed = {r["errno"] for r in results if r["errno"]}
    assert failed <= {errno.EBUSY, errno.EEXIST, errno.ENOENT}, results


# -- killed writers and drafts ---------------------------------------------------------------------

KILLED = r"""
import os, signal, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"samples/pilot_a\nsamples/pilot_b")  # and more lines were to follow
os.kill(os.getpid(), signal.SIGKILL)  # the kernel closes the file on the way out
"""


def test_a_writer_killed_mid_line_submits_nothing(m: Mount, srv: Server) -> None:
    proc = sh(sys.executable, "-c", KILLED, dl(m, "killed.manifest"), check=False)
    assert proc.returncode == -9
    wait_for(lambda: "killed.error" in listing(m), 10, what="killed.error")
    assert b"line 2: no newline at its end" in sh("cat", dl(m, "killed.error")).stdout
    assert server_jobs(srv, "killed.zip") == []


def test_a_draft_renamed_into_place_is_submitted_and_a_killed_draft_is_not(
    m: Mount, srv: Server
) -> None:
    proc = sh(sys.executable, "-c", KILLED, dl(m, "atomic.manifest.part"), check=False)
    assert proc.returncode == -9
    assert "atomic.manifest.part" in listing(m) and server_jobs(srv, "atomic.zip") == []
    sh("bash", "-c", 'printf "samples/pilot_a\\nsamples/pilot_b\\n" > "$1"', "_",
       dl(m, "atomic.manifest.part"))
    sh("mv", dl(m, "atomic.manifest.part"), dl(m, "atomic.manifest"))
    names = listing(m)
    assert "atomic.status" in names
    assert not {"atomic.manifest", "atomic.manifest.part"} & set(names)
    assert len(server_jobs(srv, "atomic.zip")) == 1
    bad = sh("bash", "-c", 'echo samples/nope > "$1" && mv "$1" "$2"', "_",
             dl(m, "fix.tmp"), dl(m, "fix.manifest"), check=False)
    assert bad.returncode != 0 and b"Operation not permitted" in bad.stderr, bad.stderr
    assert "fix.tmp" in listing(m)  # all or nothing: the draft stays to be fixed
    assert b"line 1: samples/nope" in sh("cat", dl(m, "fix.error")).stdout
    sh("rm", dl(m, "fix.tmp"), dl(m, "fix.error"))


# -- hostile sizes -----------------------------------------------------------------------------


def daemon_rss(m: Mount) -> int:
    """The daemon's resident memory in bytes."""
    assert m.proc is not None
    for line in Path(f"/proc/{m.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_thirty_big_manifests_stay_within_the_budget_and_give_it_back(
    m: Mount, tmp_path: Path
) -> None:
    line = b"# " + b"padding " * 15 + b"\n"
    big = tmp_path / "big.txt"
    big.write_bytes(line * (9 * 2**20 // len(line)))  # 9 MiB of comments: kept, not sent
    before = daemon_rss(m)
    refused = []
    try:
        for i in range(30):
            proc = sh("cp", str(big), dl(m, f"big{i}.manifest"), check=False)
            assert proc.returncode == 0 or b"No space left on device" in proc.stderr
            refused += [i] if proc.returncode else []
        after = daemon_rss(m)
        limit = 64 * 2**20
        assert after - before < limit + 48 * 2**20, (before, after)
        assert stats(m)["downloads"]["manifest_limit"] == limit
        assert stats(m)["downloads"]["manifest_bytes"] <= limit
        assert refused and refused[0] == limit // big.stat().st_size
        error = sh("cat", dl(m, "big29.error")).stdout.decode()
        assert "sets aside" in error and "finish or remove some" in error
    finally:
        names = [n for n in listing(m) if n.startswith("big")]
        sh("rm", "-f", *(dl(m, n) for n in names))
    assert stats(m)["downloads"]["manifest_bytes"] == 0
    proc = sh("cp", str(big), dl(m, "again.manifest"), check=False)
    assert proc.returncode == 0, proc.stderr  # the space was given back
    sh("rm", dl(m, "again.manifest"))


HOSTILE_LINE = r"""
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
refused = 0
for _ in range(10 * 1024):  # 10 MiB, 1 KiB a write, no newline; going on after errors
    try:
        os.write(fd, b"x" * 1024)
    except OSError as exc:
        assert exc.errno == errno.EINVAL, exc
        refused += 1
try:
    os.close(fd)
except OSError:
    pass
print(refused)
"""


@pytest.mark.timeout(150)  # re-scanning the line on every write took minutes
def test_a_ten_mib_line_is_refused_as_soon_as_it_passes_the_limit(m: Mount) -> None:
    proc = sh(sys.executable, "-c", HOSTILE_LINE, dl(m, "long.manifest"), timeout=140)
    assert int(proc.stdout) == 10 * 1024 - 4  # all but the line's first 4 KiB
    error = sh("cat", dl(m, "long.error")).stdout
    assert error.count(b"line 1: line longer than 4096 bytes") == 1
    sh("rm", dl(m, "long.manifest"), dl(m, "long.error"))


def test_a_manifest_naming_too_many_files_says_so_and_sends_nothing(
    processes: Processes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from flowfs.server.demodata import many_files_catalog

    catalog = many_files_catalog(tmp_path_factory.mktemp("many"), n_files=20_000,
                                 per_sample=20_000)
    server = processes.server(catalog)
    mount = processes.mount(server, user_env("alice", "alice-pw"))
    sample = "projects/Many files/samples/sample_00000"
    assert len(sh("ls", mount.p(sample), timeout=60).stdout.splitlines()) == 20_000
    manifest = tmp_path_factory.mktemp("list") / "many.txt"
    manifest.write_text("".join(f"{sample}{'/' * (i % 2)}\n" for i in range(4000)))
    proc = sh("cp", str(manifest), dl(mount, "many.manifest"), check=False, timeout=60)
    assert proc.returncode != 0 and b"Invalid argument" in proc.stderr, proc.stderr
    error = sh("cat", dl(mount, "many.error")).stdout.decode()
    assert "line 1: by this line the manifest names more than 10,000 files" in error
    assert "in time" not in error
    assert not [r for r in server.requests()
                if r["method"] == "POST" and r["path"] == "/api/downloads"]
