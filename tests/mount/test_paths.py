"""Names through a real mount: a path keeps its item, hostile names are harmless."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness import Mount, MountFactory, ServerFactory, sh, user_env, wait_for

from flowfs.namebook import store_path

ALICE = b"alice's reads\n"
BOB = b"bob's reads, not alice's\n"
READS = "projects/Liver/samples/rep1/reads.txt"
HOSTILE = {  # data id: (name in Flow, name shown)
    "700": ("c1\x85next.txt", "c1_next.txt"),
    "701": ("csi\x9b31m.txt", "csi_31m.txt"),
    "702": ("invoice\u202etxt.exe", "invoice_txt.exe"),
    "703": ("line\u2028para\u2029.txt", "line_para_.txt"),
    "704": ("\u2066iso\u2069\u200e\u200f\u061c.txt", "_iso____.txt"),
    "705": ("plain.txt", "plain.txt"),
}


def write_catalog(root: Path, *, shared: bool) -> Path:
    """alice's project Liver (50) with sample rep1 (60); bob's older Liver (5) with a rep1
    (6), shared with alice or not; a sample of alice's whose files have hostile names."""
    files = root / "files"
    files.mkdir(exist_ok=True)
    (files / "alice.txt").write_bytes(ALICE)
    (files / "bob.txt").write_bytes(BOB)
    data: list[dict[str, Any]] = [
        {"id": "600", "path": "files/alice.txt", "sample": "60", "filename": "reads.txt"},
        {"id": "601", "path": "files/bob.txt", "sample": "6", "filename": "reads.txt"},
    ]
    for data_id, (name, _) in HOSTILE.items():
        (files / f"{data_id}.txt").write_bytes(f"body of {data_id}\n".encode())
        data.append({"id": data_id, "path": f"files/{data_id}.txt", "sample": "61",
                     "filename": name})
    catalog = {
        "users": [{"username": "alice", "password": "alice-pw"},
                  {"username": "bob", "password": "bob-pw"}],
        "projects": [
            {"id": "5", "name": "Liver", "owner": "bob",
             "shared_with": ["alice"] if shared else []},
            {"id": "50", "name": "Liver", "owner": "alice"},
        ],
        "samples": [{"id": "6", "name": "rep1", "project": "5"},
                    {"id": "60", "name": "rep1", "project": "50"},
                    {"id": "61", "name": "odd\u202enames\x85", "project": "50"}],
        "data": data,
    }
    path = root / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def cat(m: Mount, rel: str) -> bytes:
    return sh("cat", m.p(rel)).stdout


def ls(m: Mount, rel: str) -> list[str]:
    out = sh("ls", "-1", m.p(rel)).stdout
    # Split on newlines only: str.splitlines() also splits on U+0085 and U+2028.
    return [n for n in out.decode("utf-8", "strict").split("\n") if n]


def test_a_path_keeps_its_item_when_an_older_namesake_is_shared_and_after_a_remount(
        servers: ServerFactory, own_mounts: MountFactory, tmp_path: Path) -> None:
    srv = servers(write_catalog(tmp_path, shared=False))
    env = user_env("alice", "alice-pw", XDG_STATE_HOME=str(tmp_path / "state"))
    m = own_mounts(srv, env, "--dir-ttl", "1")
    assert cat(m, READS) == ALICE
    assert cat(m, "samples/rep1/reads.txt") == ALICE

    # Sharing lives in the catalog: bob shares by a restart on the changed catalog (same
    # port and state dir, so alice's mount goes on with its session).
    srv.stop()
    write_catalog(tmp_path, shared=True)
    srv.start()
    wait_for(lambda: "Liver~5" in ls(m, "projects"), what="bob's project in alice's listing")
    assert cat(m, READS) == ALICE
    assert cat(m, "projects/Liver~5/samples/rep1/reads.txt") == BOB
    wait_for(lambda: "rep1~6" in ls(m, "samples"), what="bob's sample in alice's samples/")
    assert cat(m, "samples/rep1/reads.txt") == ALICE

    m.close()
    again = own_mounts(srv, env, path=tmp_path / "again")
    assert cat(again, READS) == ALICE
    assert cat(again, "samples/rep1/reads.txt") == ALICE
    assert sorted(ls(again, "projects")) == ["Liver", "Liver~5"]

    # What the store is for: a user with no history gets the first-listing rule.
    fresh = own_mounts(srv, user_env("alice", "alice-pw"), path=tmp_path / "fresh")
    assert cat(fresh, READS) == BOB


def test_hostile_characters_are_listed_as_underscores_and_every_file_reads(
        servers: ServerFactory, own_mounts: MountFactory, tmp_path: Path) -> None:
    srv = servers(write_catalog(tmp_path, shared=False))
    m = own_mounts(srv, user_env("alice", "alice-pw"))
    assert "odd_names_" in ls(m, "projects/Liver/samples")
    sample = "projects/Liver/samples/odd_names_"
    assert sorted(ls(m, sample)) == sorted(shown for _, shown in HOSTILE.values())
    for data_id, (_, shown) in HOSTILE.items():
        assert cat(m, f"{sample}/{shown}") == f"body of {data_id}\n".encode()


# Lists the names under a directory as Python sees them (surrogateescape for bad bytes).
LISTDIR = "import json, os, sys; json.dump(os.listdir(sys.argv[1]), sys.stdout)"


def test_a_damaged_name_store_is_a_warning_not_a_failed_mount(
        servers: ServerFactory, own_mounts: MountFactory, tmp_path: Path) -> None:
    srv = servers(write_catalog(tmp_path, shared=True))
    state = tmp_path / "state"
    damaged = store_path(srv.api, "alice", state / "flowfs")
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x00garbage, not a database" * 1000)
    m = own_mounts(srv, user_env("alice", "alice-pw", XDG_STATE_HOME=str(state)))
    names = json.loads(sh(sys.executable, "-c", LISTDIR, m.p("projects")).stdout)
    assert sorted(names) == ["Liver", "Liver~50"]
    assert cat(m, "projects/Liver~50/samples/rep1/reads.txt") == ALICE
    log = m.read_log()
    assert "remembered for this mount only" in log and str(damaged) in log
