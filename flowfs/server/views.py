"""The JSON shapes of users, projects, samples, executions, data and outputs.

Built once per object at start (the catalog never changes), so a list page is
a slice of ready dicts.  Field sets are exactly those of docs/flow-api.md.
"""

from __future__ import annotations

from typing import Any

from flowfs.server.catalog import Catalog, DataFile, Execution, Project, Sample, User

Json = dict[str, Any]


def user_view(user: User) -> Json:
    """The ``user`` object of ``/me``, ``/login`` and ``/token``."""
    return {"id": user.id, "username": user.username, "name": user.name}


class Views:
    """Ready-made JSON dicts for every catalog object (treat them as read-only)."""

    def __init__(self, catalog: Catalog) -> None:
        # Nested references are shared by every object that points at the same thing:
        # with 50,000 data files that is most of the memory of the views.
        self._owner_refs = {u.username: {"username": u.username, "name": u.name}
                            for u in catalog.users.values()}
        self._project_refs = {p.id: {"id": p.id, "name": p.name}
                              for p in catalog.projects.values()}
        self._sample_refs = {s.id: {"id": s.id, "name": s.name} for s in catalog.samples.values()}
        self._execution_refs = {
            e.id: {"id": e.id, "identifier": e.identifier, "pipeline_name": e.pipeline_name,
                   "pipeline_version": e.pipeline_version}
            for e in catalog.executions.values()}
        self.projects = {p.id: self._project(p) for p in catalog.projects.values()}
        self.samples = {s.id: self._sample(s) for s in catalog.samples.values()}
        self.executions = {e.id: self._execution(e) for e in catalog.executions.values()}
        self.data = {d.id: self._data(d) for d in catalog.data.values()}
        self.outputs = {d.id: {**self.data[d.id], "path": d.output_path}
                        for d in catalog.data.values() if d.execution is not None}

    def _owner(self, username: str) -> Json:
        return self._owner_refs[username]

    def _project_ref(self, ident: str | None) -> Json | None:
        return self._project_refs.get(ident) if ident else None

    def _sample_ref(self, ident: str | None) -> Json | None:
        return self._sample_refs.get(ident) if ident else None

    def _execution_ref(self, ident: str | None) -> Json | None:
        return self._execution_refs.get(ident) if ident else None

    def _project(self, p: Project) -> Json:
        return {"id": p.id, "name": p.name, "description": p.description, "created": p.created,
                "private": p.private, "owner": self._owner(p.owner)}

    def _sample(self, s: Sample) -> Json:
        return {"id": s.id, "name": s.name, "created": s.created, "private": s.private,
                "project": self._project_ref(s.project), "owner": self._owner(s.owner)}

    def _execution(self, e: Execution) -> Json:
        return {"id": e.id, "identifier": e.identifier, "pipeline_name": e.pipeline_name,
                "pipeline_version": e.pipeline_version, "status": e.status,
                "created": e.created, "started": e.started, "finished": e.finished,
                "sample": self._sample_ref(e.sample), "project": self._project_ref(e.project),
                "owner": self._owner(e.owner)}

    def _data(self, d: DataFile) -> Json:
        return {"id": d.id, "filename": d.filename, "filetype": d.filetype, "size": d.size,
                "created": d.created, "private": d.private, "is_directory": False,
                "sample": self._sample_ref(d.sample), "project": self._project_ref(d.project),
                "execution": self._execution_ref(d.execution), "owner": self._owner(d.owner),
                "md5": d.md5}
