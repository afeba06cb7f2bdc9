"""`flowfs refresh`: a sample added on the server shows up now, not after --dir-ttl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import MountFactory, ServerFactory
from harness import DEADLINE, FLOWFS, Mount, sh, user_env

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

    done = refresh(m.p("projects/Liver"), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"refreshed {m.p('projects/Liver')}\n"
    assert ls(m, "projects/Liver/samples") == ["rep1", "rep2"]
    assert ls(m, "samples") == ["rep1"]  # not under the path: as it was

    done = refresh(env=env, cwd=m.path / "projects")  # no PATH: the whole mount you are in
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"refreshed {m.path}\n"
    assert ls(m, "samples") == ["rep1", "rep2"]

    # The protocol underneath, as the docs show it: any user may write a path into the file.
    srv.stop()
    write_catalog(tmp_path, ["rep1", "rep2", "rep3"])
    srv.start()
    sh("sh", "-c", f"echo samples > '{m.p('.flowfs/refresh')}'")
    assert ls(m, "samples") == ["rep1", "rep2", "rep3"]


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
