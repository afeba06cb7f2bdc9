"""The catalog: users and content the reference server serves, loaded from JSON.

The format is in ``docs/flow-api.md`` ("Reference server catalog") and docs/server.md.
Loading validates everything up front and raises :class:`CatalogError` with a
one-line message naming the first problem, so a bad catalog never half-serves.
The result is immutable: lists and permissions can be cached freely.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from flowfs.server.digests import DigestCache, FileKey
from flowfs.server.fields import CatalogError, Record
from flowfs.server.passwords import PasswordHash, hash_password

__all__ = ["Catalog", "CatalogError", "Content", "DataFile", "Execution", "Project", "Sample",
           "User", "filetype_of", "id_order", "load_catalog"]


@dataclass(frozen=True, slots=True)
class User:
    """A user who can log in (password) or call with a static API key."""

    id: str
    username: str
    name: str
    password: PasswordHash
    api_key: str | None


@dataclass(frozen=True, slots=True)
class Project:
    """A project; its ``shared_with`` also covers its samples, executions and data."""

    id: str
    name: str
    description: str
    owner: str
    private: bool
    shared_with: frozenset[str]
    created: int


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample, in at most one project."""

    id: str
    name: str
    project: str | None
    owner: str
    private: bool
    shared_with: frozenset[str]
    created: int


@dataclass(frozen=True, slots=True)
class Execution:
    """A pipeline execution; its outputs are data files with an ``output_path``."""

    id: str
    identifier: str
    pipeline_name: str
    pipeline_version: str
    status: str
    project: str | None
    sample: str | None
    owner: str
    private: bool
    shared_with: frozenset[str]
    created: int
    started: int | None
    finished: int | None


@dataclass(frozen=True, slots=True)
class DataFile:
    """A data file: catalog metadata plus what the file on disk says."""

    id: str
    filename: str
    filetype: str
    path: Path
    size: int
    mtime_ns: int
    md5: str
    created: int
    owner: str
    private: bool
    shared_with: frozenset[str]
    sample: str | None
    execution: str | None
    project: str | None
    output_path: str | None


Content = Project | Sample | Execution | DataFile


@dataclass(frozen=True)
class Catalog:
    """Everything loaded, with the indexes the list endpoints need (all ordered by id)."""

    users: Mapping[str, User]
    projects: Mapping[str, Project]
    samples: Mapping[str, Sample]
    executions: Mapping[str, Execution]
    data: Mapping[str, DataFile]
    samples_by_project: Mapping[str, tuple[Sample, ...]]
    executions_by_project: Mapping[str, tuple[Execution, ...]]
    executions_by_sample: Mapping[str, tuple[Execution, ...]]
    data_by_sample: Mapping[str, tuple[DataFile, ...]]
    data_by_execution: Mapping[str, tuple[DataFile, ...]]
    outputs: Mapping[tuple[str, str], DataFile]

    def containers(self, obj: Content) -> tuple[Content, ...]:
        """Everything whose sharing covers ``obj``: its sample, execution and project, and
        theirs in turn (an execution's sample covers the execution's outputs)."""
        found: list[Content] = []
        todo = self._direct_containers(obj)
        while todo:
            container = todo.pop()
            if all(container is not f for f in found):
                found.append(container)
                todo.extend(self._direct_containers(container))
        return tuple(found)

    def _direct_containers(self, obj: Content) -> list[Content]:
        found: list[Content | None] = []
        if isinstance(obj, Sample | Execution | DataFile) and obj.project:
            found.append(self.projects.get(obj.project))
        if isinstance(obj, Execution | DataFile) and obj.sample:
            found.append(self.samples.get(obj.sample))
        if isinstance(obj, DataFile) and obj.execution:
            found.append(self.executions.get(obj.execution))
        return [c for c in found if c is not None]


def id_order(obj: Any) -> tuple[int, str]:
    """Sort key: ids are digit strings compared as integers (they may exceed 2**53)."""
    ident: str = obj.id
    return (len(ident.lstrip("0")), ident.lstrip("0"))


_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_COMPRESSED = frozenset({"gz", "bz2", "xz", "zst", "zip"})


# -- loading -------------------------------------------------------------------------

_SECTIONS = ("users", "projects", "samples", "executions", "data")
_USER_FIELDS = ("id", "username", "password", "name", "email", "api_key")
_PROJECT_FIELDS = ("id", "name", "description", "owner", "private", "shared_with", "created")
_SAMPLE_FIELDS = ("id", "name", "description", "project", "owner", "private", "shared_with",
                  "created")
_EXECUTION_FIELDS = ("id", "identifier", "pipeline_name", "pipeline_version", "status",
                     "project", "sample", "owner", "private", "shared_with", "created",
                     "started", "finished")
_DATA_FIELDS = ("id", "path", "filename", "filetype", "size", "md5", "created", "owner",
                "private", "shared_with", "sample", "execution", "project", "output_path",
                "description")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise CatalogError(f"catalog {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CatalogError(f"catalog {path}: the top level must be a JSON object")
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise CatalogError(f"catalog {path}: unknown section {unknown[0]!r}")
    for section in _SECTIONS:
        if not isinstance(document.get(section, []), list):
            raise CatalogError(f"catalog {path}: {section!r} must be a list")
    return document


def _records(document: dict[str, Any], section: str, fields: tuple[str, ...]) -> list[Record]:
    singular = {"data": "data"}.get(section, section.rstrip("s"))
    out = []
    for index, raw in enumerate(document.get(section, [])):
        ident = raw.get("id") if isinstance(raw, dict) else None
        label = f"{singular} {ident}" if isinstance(ident, str | int) else f"{section}[{index}]"
        out.append(Record(raw, label, fields))
    return out


def _unique(ident: str, table: Container[str], kind: str) -> str:
    if ident in table:
        raise CatalogError(f"duplicate {kind} id {ident!r}")
    return ident


def _load_users(records: list[Record]) -> dict[str, User]:
    users: dict[str, User] = {}
    ids: set[str] = set()
    for position, rec in enumerate(records, start=1):
        username = rec.name("username", required=True)
        assert username is not None
        if username in users:
            raise CatalogError(f"duplicate username {username!r}")
        rec.label = f"user {username!r}"
        ident = rec.ident("id") or str(position)
        ids.add(_unique(ident, ids, "user"))
        password = rec.text("password", required=True)
        assert password is not None
        rec.text("email")
        users[username] = User(
            id=ident,
            username=username,
            name=rec.text("name", username) or username,
            password=hash_password(password),
            api_key=rec.name("api_key"),
        )
    return users


def _load_projects(records: list[Record], users: Mapping[str, User],
                   default_time: int) -> dict[str, Project]:
    projects: dict[str, Project] = {}
    for rec in records:
        ident = _unique(rec.ident("id", required=True) or "", projects, "project")
        projects[ident] = Project(
            id=ident,
            name=rec.name("name", required=True) or "",
            description=rec.text("description", "") or "",
            owner=rec.owner(users, None),
            private=rec.flag("private", True),
            shared_with=rec.usernames("shared_with", users),
            created=rec.time("created", default_time) or 0,
        )
    return projects


def _load_samples(records: list[Record], users: Mapping[str, User],
                  projects: Mapping[str, Project], default_time: int) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    for rec in records:
        ident = _unique(rec.ident("id", required=True) or "", samples, "sample")
        project = projects.get(rec.ref("project", projects) or "")
        rec.text("description")
        samples[ident] = Sample(
            id=ident,
            name=rec.name("name", required=True) or "",
            project=project.id if project else None,
            owner=rec.owner(users, project.owner if project else None),
            private=rec.flag("private", project.private if project else True),
            shared_with=rec.usernames("shared_with", users),
            created=rec.time("created", default_time) or 0,
        )
    return samples


def _load_executions(records: list[Record], users: Mapping[str, User],
                     projects: Mapping[str, Project], samples: Mapping[str, Sample],
                     default_time: int) -> dict[str, Execution]:
    executions: dict[str, Execution] = {}
    for rec in records:
        ident = _unique(rec.ident("id", required=True) or "", executions, "execution")
        sample = samples.get(rec.ref("sample", samples) or "")
        project_id = rec.ref("project", projects) or (sample.project if sample else None)
        project = projects.get(project_id or "")
        parent: Sample | Project | None = sample or project
        created = rec.time("created", default_time) or 0
        executions[ident] = Execution(
            id=ident,
            identifier=rec.text("identifier", "") or "",
            pipeline_name=rec.text("pipeline_name", "") or "",
            pipeline_version=rec.text("pipeline_version", "") or "",
            status=rec.text("status", "OK") or "OK",
            project=project_id,
            sample=sample.id if sample else None,
            owner=rec.owner(users, parent.owner if parent else None),
            private=rec.flag("private", parent.private if parent else True),
            shared_with=rec.usernames("shared_with", users),
            created=created,
            started=rec.time("started", created),
            finished=rec.time("finished", created),
        )
    return executions


def _safe_filename(rec: Record, filename: str) -> str:
    if "/" in filename or "\0" in filename or filename in (".", "..") or not filename:
        raise rec.fail(f"bad filename {filename!r}")
    return filename


def _output_path(rec: Record, raw: str) -> str:
    parts = PurePosixPath(raw.strip("/")).parts
    if not parts or any(p in (".", "..") or "\0" in p for p in parts):
        raise rec.fail(f"bad output_path {raw!r}")
    return "/".join(parts)


def filetype_of(filename: str) -> str:
    """Flow-style file type: the extension, keeping a compression suffix (``fastq.gz``)."""
    parts = filename.lower().split(".")[1:]
    if not parts:
        return ""
    if parts[-1] in _COMPRESSED and len(parts) > 1:
        return ".".join(parts[-2:])
    return parts[-1]


@dataclass(frozen=True, slots=True)
class _DataDraft:
    """A data record checked against its file, waiting for its MD5."""

    rec: Record
    ident: str
    path: Path
    stat: os.stat_result
    md5: str | None


def _stat_data_file(rec: Record, base: str,
                    seen: dict[str, os.stat_result]) -> tuple[str, os.stat_result]:
    raw = rec.text("path", required=True) or ""
    path = os.path.abspath(os.path.join(base, raw))
    st = seen.get(path)
    if st is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise rec.fail(f"file not found: {path}") from None
        except OSError as exc:
            raise rec.fail(f"cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise rec.fail(f"not a regular file: {path}")
        if not os.access(path, os.R_OK):
            raise rec.fail(f"file not readable: {path}")
        seen[path] = st  # many records may share one file: stat it once
    size = rec.count("size")
    if size is not None and size != st.st_size:
        raise rec.fail(f"size {size} does not match the file ({st.st_size} bytes)")
    return path, st


def _draft_data(records: list[Record], base: Path) -> list[_DataDraft]:
    drafts: list[_DataDraft] = []
    seen: set[str] = set()
    stats: dict[str, os.stat_result] = {}
    for rec in records:
        ident = rec.ident("id", required=True) or ""
        seen.add(_unique(ident, seen, "data"))
        path, st = _stat_data_file(rec, str(base), stats)
        md5 = rec.text("md5")
        if md5 is not None and not _MD5_RE.match(md5):
            raise rec.fail("field 'md5' must be 32 lowercase hex digits")
        drafts.append(_DataDraft(rec, ident, Path(path), st, md5))
    return drafts


def _finish_data(draft: _DataDraft, users: Mapping[str, User],
                 tables: tuple[Mapping[str, Project], Mapping[str, Sample],
                               Mapping[str, Execution]]) -> DataFile:
    projects, samples, executions = tables
    rec = draft.rec
    sample = samples.get(rec.ref("sample", samples) or "")
    execution = executions.get(rec.ref("execution", executions) or "")
    project_id = (rec.ref("project", projects) or (sample.project if sample else None)
                  or (execution.project if execution else None))
    project = projects.get(project_id or "")
    parent: Execution | Sample | Project | None = execution or sample or project
    filename = _safe_filename(rec, rec.text("filename", draft.path.name) or "")
    raw_output = rec.text("output_path")
    if raw_output is not None and execution is None:
        raise rec.fail("output_path given without an execution")
    output = _output_path(rec, raw_output or filename) if execution else None
    rec.text("description")
    return DataFile(
        id=draft.ident,
        filename=filename,
        filetype=rec.text("filetype", filetype_of(filename)) or "",
        path=draft.path,
        size=draft.stat.st_size,
        mtime_ns=draft.stat.st_mtime_ns,
        md5=draft.md5 or "",
        created=rec.time("created", int(draft.stat.st_mtime)) or 0,
        owner=rec.owner(users, parent.owner if parent else None),
        private=rec.flag("private", parent.private if parent else True),
        shared_with=rec.usernames("shared_with", users),
        sample=sample.id if sample else None,
        execution=execution.id if execution else None,
        project=project_id,
        output_path=output,
    )


def _group(items: Iterable[Any], key: Callable[[Any], str | None]) -> dict[str, tuple[Any, ...]]:
    """``items`` (already in id order) grouped by ``key``; each group keeps that order."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        k = key(item)
        if k is not None:
            groups.setdefault(k, []).append(item)
    return {k: tuple(v) for k, v in groups.items()}


def _index_outputs(data: Mapping[str, DataFile]) -> dict[tuple[str, str], DataFile]:
    outputs: dict[tuple[str, str], DataFile] = {}
    for item in data.values():  # in id order: a clash names the lower id first
        if item.execution is None or item.output_path is None:
            continue
        key = (item.execution, item.output_path)
        if key in outputs:
            raise CatalogError(
                f"data {item.id}: execution {item.execution} already has an output "
                f"{item.output_path!r} (data {outputs[key].id})"
            )
        outputs[key] = item
    return outputs


def _with_md5s(data: dict[str, DataFile], digests: DigestCache) -> dict[str, DataFile]:
    keys = {d.id: FileKey(str(d.path), d.size, d.mtime_ns) for d in data.values() if not d.md5}
    computed = digests.md5s(keys.values())
    return {ident: replace(d, md5=computed[keys[ident]]) if ident in keys else d
            for ident, d in data.items()}


def _sorted(table: Mapping[str, Any]) -> dict[str, Any]:
    return {obj.id: obj for obj in sorted(table.values(), key=id_order)}


def load_catalog(path: Path, digests: DigestCache) -> Catalog:
    """Load, validate and index the catalog at ``path``; raise CatalogError if it is bad."""
    document = _read_json(path)
    base = path.resolve().parent
    default_time = int(path.stat().st_mtime)
    users = _load_users(_records(document, "users", _USER_FIELDS))
    projects = _load_projects(_records(document, "projects", _PROJECT_FIELDS), users,
                              default_time)
    samples = _load_samples(_records(document, "samples", _SAMPLE_FIELDS), users, projects,
                            default_time)
    executions = _load_executions(_records(document, "executions", _EXECUTION_FIELDS), users,
                                  projects, samples, default_time)
    drafts = _draft_data(_records(document, "data", _DATA_FIELDS), base)
    tables = (projects, samples, executions)
    # Everything is validated before any file is hashed: a typo should not cost
    # minutes of MD5 over large files before it is reported.
    data = {d.ident: _finish_data(d, users, tables) for d in drafts}
    # Each table sorted once, in id order; the indexes below keep that order.
    samples, executions = _sorted(samples), _sorted(executions)
    data = _sorted(_with_md5s(data, digests))
    return Catalog(
        users=users,
        projects=_sorted(projects),
        samples=samples,
        executions=executions,
        data=data,
        samples_by_project=_group(samples.values(), lambda s: s.project),
        executions_by_project=_group(executions.values(), lambda e: e.project),
        executions_by_sample=_group(executions.values(), lambda e: e.sample),
        data_by_sample=_group(data.values(), lambda d: d.sample),
        data_by_execution=_group(data.values(), lambda d: d.execution),
        outputs=_index_outputs(data),
    )
