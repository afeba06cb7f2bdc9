"""What a user should see through the mount, computed from the catalog alone.

Independent of the server's code: the visibility rules of docs/flow-api.md and the
tree of docs/design.md, applied to the catalog JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def _readable(obj: dict[str, Any], user: str, parents: list[dict[str, Any] | None]) -> bool:
    if obj.get("owner") == user or user in obj.get("shared_with", []):
        return True
    if any(p and (p.get("owner") == user or user in p.get("shared_with", [])) for p in parents):
        return True
    return not obj.get("private", True)


def shown_data_ids(catalog: dict[str, Any], user: str) -> set[str]:
    """Ids of the data files the tree shows `user` (by-id aside)."""
    projects = {p["id"]: p for p in catalog["projects"]}
    samples = {s["id"]: s for s in catalog["samples"]}
    executions = {e["id"]: e for e in catalog["executions"]}

    def mine_or_shared(obj: dict[str, Any], project: dict[str, Any] | None) -> bool:
        direct = obj.get("owner") == user or user in obj.get("shared_with", [])
        via = project is not None and (project["owner"] == user
                                       or user in project.get("shared_with", []))
        return direct or via

    shown_projects = {pid for pid, p in projects.items() if mine_or_shared(p, None)}
    shown_samples = {sid for sid, s in samples.items()
                     if s.get("project") in shown_projects
                     or mine_or_shared(s, projects.get(s.get("project") or ""))}
    shown_execs = {eid for eid, e in executions.items()
                   if e.get("project") in shown_projects or e.get("owner") == user}
    ids = set()
    for d in catalog["data"]:
        placed = d.get("sample") in shown_samples or d.get("execution") in shown_execs
        loose = not d.get("sample") and not d.get("execution") and d.get("owner") == user
        if placed or loose:
            ids.add(d["id"])
    return ids


def readable_data_ids(catalog: dict[str, Any], user: str) -> set[str]:
    """Ids `user` may read at all (docs/flow-api.md's visibility rule)."""
    projects = {p["id"]: p for p in catalog["projects"]}
    samples = {s["id"]: s for s in catalog["samples"]}
    executions = {e["id"]: e for e in catalog["executions"]}
    out = set()
    for d in catalog["data"]:
        sample = samples.get(d.get("sample") or "")
        execution = executions.get(d.get("execution") or "")
        parent = sample or execution
        project = projects.get((parent or {}).get("project") or "")
        if _readable(d, user, [sample, execution, project]):
            out.add(d["id"])
    return out


def source_md5s(catalog_path: Path) -> dict[str, str]:
    """md5 of every data file's bytes on disk, by id."""
    catalog = json.loads(catalog_path.read_text())
    out = {}
    for d in catalog["data"]:
        path = catalog_path.parent / d["path"]
        out[d["id"]] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


WALKER = r"""
import hashlib, json, os, sys
root = sys.argv[1]
out = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if not (dirpath == root and d in ("by-id", ".downloads", ".flowfs")))
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        if rel == "README.txt":
            continue
        h = hashlib.md5()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        xattr = lambda k: os.getxattr(path, k).decode() if k in os.listxattr(path) else None
        out.append({"path": rel, "id": xattr("user.flow.id"), "md5": h.hexdigest(),
                    "xmd5": xattr("user.flow.md5"), "size": os.stat(path).st_size,
                    "kind": xattr("user.flow.kind")})
json.dump(out, sys.stdout)
"""
