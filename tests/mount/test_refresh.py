"""`flowfs refresh`: a sample added on the server shows up now, not after --dir-ttl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness import DEADLINE, FLOWFS, Mount, MountFactory, ServerFactory, sh, user_env, wait_for

pytestmark = pytest.mark.mount


def write_catalog(root: Path, samples: list[str]) -> Path:
    catalog = {
        "users": [{"username": "alice", "password": "alice-pw"}],
        "projects": [{"id": "5", "name": "Liver", "owner": "alice"}],
        "samples": [{"id": str(10 + i), "name": name, "project": "5"}
                    for i, name in enumerate(samples)],
        "data": [],
    }
    path = root / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def ls(m: Mount, rel: str) -> list[str]:
    return sorted(sh("ls", "-1", m.p(rel)).stdout.decode().split("\n"))[1:]


def refresh(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWFS, "refresh", *args], capture_output=True, text=True,
                          timeout=DEADLINE, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          check=False)


def test_a_new_sample_appears_after_refresh_well_before_the_ttl(
        servers: ServerFactory, own_mounts: MountFactory, tmp_path: Path) -> None:
    srv = servers(write_catalog(tmp_path, ["rep1"]))
    env = user_env("alice", "alice-pw")
    m = own_mounts(srv, env, "--dir-ttl", "3600")
    assert ls(m, "projects/Liver/samples") == ["rep1"]
    assert ls(m, "samples") == ["rep1"]

    srv.stop()  # the pipeline's new sample: the same server (port, state) with it added
    write_catalog(tmp_path, ["rep1", "rep2"])
    srv.start()
    assert ls(m, "projects/Liver/samples") == ["rep1"]  # the TTL holds the old listing

    # A listing fetched under a second ago is kept (refreshes coalesce): a fast restart
    # can come within that second, so each refresh is asked until it shows.
    def after(*args: str, cwd: Path, rel: str, expected: list[str]) -> str:
        def shown() -> str | None:
            done = refresh(*args, env=env, cwd=cwd)
            assert done.returncode == 0, done.stderr
            return done.stdout if ls(m, rel) == expected else None
        return str(wait_for(shown, 10, what=f"{expected} in {rel}"))

    out = after(m.p("projects/Liver"), cwd=tmp_path, rel="projects/Liver/samples",
                expected=["rep1", "rep2"])
    assert out == f"refreshed {m.p('projects/Liver')}\n"
    assert ls(m, "samples") == ["rep1"]  # not under the path: as it was

    # no PATH: the whole mount you are in
    out = after(cwd=m.path / "projects", rel="samples", expected=["rep1", "rep2"])
    assert out == f"refreshed {m.path}\n"

    # The protocol underneath, as the docs show it: any user may write a path into the file.
    srv.stop()
    write_catalog(tmp_path, ["rep1", "rep2", "rep3"])
    srv.start()
    # (asked again until it shows: a listing fetched under a second ago is kept)
    def refreshed() -> bool:
        sh("sh", "-c", f"echo samples > '{m.p('.flowfs/refresh')}'")
        return ls(m, "samples") == ["rep1", "rep2", "rep3"]

    wait_for(refreshed, 10, what="rep3 after a refresh through .flowfs/refresh")


def test_refresh_of_a_missing_or_foreign_path_says_what_is_wrong(
        servers: ServerFactory, own_mounts: MountFactory, tmp_path: Path) -> None:
    srv = servers(write_catalog(tmp_path, ["rep1"]))
    env = user_env("alice", "alice-pw")
    m = own_mounts(srv, env)
    missing = refresh(m.p("projects/Nope"), env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "projects/Nope: no such directory in the mount" in missing.stderr
    outside = refresh(str(tmp_path), env=env, cwd=tmp_path)
    assert outside.returncode == 1
    assert f"{tmp_path} is not in a flowfs mount (mounts: " in outside.stderr
    assert str(m.path) in outside.stderr
