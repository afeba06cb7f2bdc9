"""The directories of Flow's objects (docs/design.md): projects, samples, executions
and their outputs, and the user's loose data.

Each says what its listing holds (``_fetch``); ``listing.ListingDir`` decides when
it is fetched and how a fresh listing replaces the last. A data file is shown by the
tree's one node for its id (``Tree.file_for``), wherever it is listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from flowfs.errors import NotFound
from flowfs.listing import Child, ListingDir
from flowfs.model import DataFile, Execution, Project, Sample
from flowfs.names import sanitize
from flowfs.nodes import Owner, StaticDir
from flowfs.tasks import gather


async def file_children(
    owner: ListingDir, key: str, files: Iterable[DataFile], taken: Iterable[str] = (),
    shown: dict[str, str] | None = None,
) -> list[Child]:
    """Children for data files of directory ``key``; directory-like data is skipped.

    ``shown`` overrides the name to show for some ids (an output path's last part).
    """
    by_id = {f.id: f for f in files if not f.is_directory}
    shown = shown or {}
    names = await owner.assign_names(
        key, ((i, shown.get(i, f.filename)) for i, f in by_id.items()), taken)
    return [
        Child(names[i], ("data", i, by_id[i].size), partial(owner.tree.file_for, by_id[i]))
        for i in by_id
    ]


class ProjectsDir(ListingDir):
    """projects/: owned ∪ shared."""

    async def _fetch(self) -> list[Child]:
        found: dict[str, list[Project]] = {}

        async def get(which: str) -> None:
            found[which] = await self.tree.list_items(f"/projects/{which}", "projects", Project)

        await gather(partial(get, "owned"), partial(get, "shared"))
        projects = {p.id: p for p in found["owned"] + found["shared"]}
        names = await self.assign_names("projects",
                                             ((p.id, p.name) for p in projects.values()))
        return [Child(names[i], ("project", i), partial(ProjectDir, self.tree, p))
                for i, p in projects.items()]


class ProjectDir(StaticDir):
    kind = "project"

    def __init__(self, tree: Owner, project: Project) -> None:
        super().__init__(tree, project.created)
        self.flow_id = project.id
        self.children = {
            "samples": ProjectSamplesDir(tree, project),
            "executions": ProjectExecutionsDir(tree, project),
        }


async def sample_children(owner: ListingDir, key: str,
                          samples: Iterable[Sample]) -> list[Child]:
    by_id = {s.id: s for s in samples}
    names = await owner.assign_names(key, ((s.id, s.name) for s in by_id.values()))
    return [Child(names[i], ("sample", i), partial(SampleDir, owner.tree, s))
            for i, s in by_id.items()]


async def execution_children(owner: ListingDir, key: str,
                             executions: Iterable[Execution]) -> list[Child]:
    by_id = {e.id: e for e in executions}
    names = await owner.assign_names(key, ((e.id, e.dirname) for e in by_id.values()))
    return [Child(names[i], ("execution", i), partial(ExecutionDir, owner.tree, e))
            for i, e in by_id.items()]


class ProjectSamplesDir(ListingDir):
    def __init__(self, tree: Owner, project: Project) -> None:
        super().__init__(tree, project.created)
        self.project = project

    async def _fetch(self) -> list[Child]:
        path = f"/projects/{self.project.id}/samples"
        items = await self.tree.list_items(path, "samples", Sample)
        return await sample_children(self, f"project/{self.project.id}/samples", items)


class ProjectExecutionsDir(ListingDir):
    def __init__(self, tree: Owner, project: Project) -> None:
        super().__init__(tree, project.created)
        self.project = project

    async def _fetch(self) -> list[Child]:
        path = f"/projects/{self.project.id}/executions"
        items = await self.tree.list_items(path, "executions", Execution)
        return await execution_children(self, f"project/{self.project.id}/executions",
                                        items)


class SamplesDir(ListingDir):
    """samples/: every sample the user can read (owned ∪ shared)."""

    async def _fetch(self) -> list[Child]:
        found: list[Sample] = []

        async def get(which: str) -> None:
            found.extend(await self.tree.list_items(f"/samples/{which}", "samples", Sample))

        await gather(partial(get, "owned"), partial(get, "shared"))
        return await sample_children(self, "samples", found)


class ExecutionsDir(ListingDir):
    async def _fetch(self) -> list[Child]:
        items = await self.tree.list_items("/executions/owned", "executions", Execution)
        return await execution_children(self, "executions", items)


class SampleDir(ListingDir):
    kind = "sample"

    def __init__(self, tree: Owner, sample: Sample) -> None:
        super().__init__(tree, sample.created)
        self.sample = sample
        self.flow_id = sample.id

    async def _fetch(self) -> list[Child]:
        path = f"/samples/{self.sample.id}/data"
        items = await self.tree.list_items(path, "data", DataFile)
        return await file_children(self, f"sample/{self.sample.id}", items)


class LooseDataDir(ListingDir):
    """data/: the user's own data that is in no sample and no execution."""

    async def _fetch(self) -> list[Child]:
        items = await self.tree.list_items("/data/owned", "data", DataFile)
        loose = [d for d in items
                 if not d.placement_known or (d.sample_id is None and d.execution_id is None)]
        return await file_children(self, "data", loose)


class ExecutionDir(ListingDir):
    """An execution's outputs, nested by output path. Sub-directories read its levels."""

    kind = "execution"

    def __init__(self, tree: Owner, execution: Execution) -> None:
        super().__init__(tree, execution.created)
        self.execution = execution
        self.flow_id = execution.id
        self._levels: dict[tuple[str, ...], list[Child]] = {}

    async def _fetch(self) -> list[Child]:
        path = f"/executions/{self.execution.id}/data"
        try:
            items = await self.tree.list_items(path, "data", DataFile)
        except NotFound:
            items = []  # a Flow without the output listing: an empty directory
        self._levels = await self._build_levels(items)
        return self._levels.get((), [])

    def forgotten(self) -> None:
        super().forgotten()
        self._levels = {}

    async def level(self, prefix: tuple[str, ...]) -> list[Child]:
        await self.entries()
        return self._levels.get(prefix, [])

    async def _build_levels(self, items: list[DataFile]) -> dict[tuple[str, ...], list[Child]]:
        files: dict[tuple[str, ...], list[DataFile]] = {}
        dirs: dict[tuple[str, ...], set[str]] = {}
        shown: dict[str, str] = {}
        for item in items:
            raw = (item.path or item.filename).split("/")
            parts = [sanitize(p) for p in raw if p not in ("", ".")] or [sanitize(item.filename)]
            for depth in range(len(parts) - 1):
                dirs.setdefault(tuple(parts[:depth]), set()).add(parts[depth])
            shown[item.id] = parts[-1]
            files.setdefault(tuple(parts[:-1]), []).append(item)
        levels: dict[tuple[str, ...], list[Child]] = {}
        for prefix in dirs.keys() | files.keys():
            subdirs = sorted(dirs.get(prefix, ()))
            children = [Child(d, ("outdir", prefix + (d,)),
                              partial(OutputDir, self.tree, self, prefix + (d,)))
                        for d in subdirs]
            key = "/".join((f"execution/{self.execution.id}", *prefix))
            children += await file_children(self, key, files.get(prefix, []), subdirs,
                                            shown)
            levels[prefix] = children
        return levels


class OutputDir(ListingDir):
    def __init__(self, tree: Owner, execution: ExecutionDir, prefix: tuple[str, ...]) -> None:
        super().__init__(tree, execution.mtime)
        self.execution = execution
        self.prefix = prefix

    async def _fetch(self) -> list[Child]:
        return await self.execution.level(self.prefix)

