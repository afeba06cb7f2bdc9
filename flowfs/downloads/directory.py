"""The `.downloads/` directory: the names it shows and what each stands for.

README.txt; ``<name>.manifest`` (a manifest being written, by job name); drafts
(``x.manifest.part``, by file name); ``<name>.error`` (why a manifest was refused);
and each known job's ``<name>.status`` and, once built, ``<name>.zip``.
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

from flowfs.downloads.composing import ManifestFile, ManifestSpace
from flowfs.downloads.jobs import Jobs
from flowfs.errors import BadManifest, Exists, FlowError, InvalidName, NotFound, NotPermitted
from flowfs.manifest import draft_name, format_errors, valid_name
from flowfs.nodes import DirNode, Node, TextFile
from flowfs.readme import DOWNLOADS_README
from flowfs.tree import Tree


class Refused(BadManifest):
    """A manifest refused, with the problems its ``.error`` lists."""

    def __init__(self, message: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.problems = problems


class DownloadsDir(DirNode):
    """The `.downloads/` directory, and the jobs it shows (``jobs``)."""

    mode = 0o755
    volatile = True
    kind = "downloads"

    def __init__(self, tree: Tree, space: ManifestSpace) -> None:
        super().__init__(tree, tree.started)
        self.readme = TextFile(tree, DOWNLOADS_README)
        self.space = space
        self.manifests: dict[str, ManifestFile] = {}  # by job name (stem)
        self.drafts: dict[str, ManifestFile] = {}  # by file name
        self.errors: dict[str, TextFile] = {}  # by job name, or a draft's file name
        self.jobs = Jobs(tree, self.invalidate)

    def invalidate(self, name: str) -> None:
        """The kernel must look ``name`` up again: it is gone or means something else."""
        self.tree.invalidate(self.inode, name)

    # -- the listing ------------------------------------------------------------
    async def entries(self) -> dict[str, Node]:
        for stem, unsure, made in await self.jobs.refresh():
            manifest = self.manifests.get(stem)
            if manifest is not None and manifest.posted == unsure.payload:
                self.accepted(manifest, made, stem)
        out: dict[str, Node] = {"README.txt": self.readme}
        for stem, manifest in self.manifests.items():
            out[f"{stem}.manifest"] = manifest
        out.update(self.drafts)
        for stem, err in self.errors.items():
            out[f"{stem}.error"] = err
        for job in self.jobs.shown():
            out[f"{job.stem}.status"] = job.status_node
            archive = job.zip_node()
            if archive is not None:
                out[f"{job.stem}.zip"] = archive
        return out

    # -- names --------------------------------------------------------------------
    def create(self, name: str) -> ManifestFile:
        """A new manifest or draft (the only kinds of file that can be created here)."""
        if draft_name(name):
            draft = self.drafts.get(name)
            if draft is None:
                draft = self.drafts[name] = ManifestFile(self.tree, name, None, self.space)
            return draft
        stem = self.manifest_stem(name)
        manifest = self.manifests.get(stem)
        if manifest is None:
            manifest = self.manifests[stem] = ManifestFile(self.tree, name, stem, self.space)
        return manifest

    def manifest_stem(self, name: str) -> str:
        """The job name of ``<name>.manifest``, if it is free."""
        stem = name[: -len(".manifest")] if name.endswith(".manifest") else ""
        if not stem or not valid_name(stem):
            raise InvalidName(
                f"{name!r}: only <name>.manifest, name of [A-Za-z0-9._-], 1-100 characters, "
                "or a draft named *.part or *.tmp"
            )
        if stem in self.jobs.stems():
            raise Exists(f"a bulk job named {stem} exists; remove {stem}.status first")
        return stem

    async def unlink(self, name: str) -> None:
        stem, _, ext = name.rpartition(".")
        if name in self.drafts:
            self.remove(self.drafts.pop(name))
        elif ext == "manifest" and stem in self.manifests:
            self.remove(self.manifests.pop(stem))
        elif ext == "error" and stem in self.errors:
            del self.errors[stem]
        elif ext in ("status", "zip") and (job := self.jobs.by_stem(stem)) is not None:
            await self.jobs.delete(job)
        elif name == "README.txt":
            raise NotPermitted("README.txt stays")
        else:
            raise NotFound(name)
        self.invalidate(name)

    @staticmethod
    def remove(manifest: ManifestFile) -> None:
        """Forget a manifest or draft and give its memory back, even if still open."""
        manifest.removed = True
        manifest.empty()

    def rename_draft(self, draft: ManifestFile, new: str, replace: bool) -> None:
        """``draft`` is now the draft ``new`` (one it replaces is removed)."""
        if new in self.drafts and not replace:
            raise Exists(f"{new} exists")
        if new in self.drafts:
            self.remove(self.drafts.pop(new))
        del self.drafts[draft.name]
        self.invalidate(draft.name)
        draft.name = new
        self.drafts[new] = draft
        self.invalidate(new)

    def draft_submitted(self, draft: ManifestFile, stem: str,
                        replaced: ManifestFile | None) -> None:
        """The draft renamed onto ``<stem>.manifest`` made its job: it goes, and so does
        the manifest the rename replaced, unless another took its name meanwhile."""
        self.drafts.pop(draft.name, None)
        self.invalidate(draft.name)
        if replaced is not None and self.manifests.get(stem) is replaced:
            self.remove(self.manifests.pop(stem))

    # -- the fate of a manifest ---------------------------------------------------------
    def fail(self, stem: str, problems: list[tuple[int, str]],
             error: type[FlowError] = BadManifest) -> NoReturn:
        """Explain the problems in <stem>.error and refuse (EINVAL, or EFBIG/ENOSPC)."""
        text = format_errors(problems, stem).replace("line 0: ", "")
        self.errors[stem] = TextFile(self.tree, text, time.time())
        self.invalidate(f"{stem}.error")
        message = f"{stem}: {len(problems)} problem(s), see {stem}.error"
        if error is BadManifest:
            raise Refused(message, list(problems))
        raise error(message)

    def accepted(self, manifest: ManifestFile, info: dict[str, Any], stem: str) -> None:
        """The job exists: the manifest is done with and the job shows."""
        if not isinstance(info.get("id"), str | int):
            self.fail(stem, [(0, "the server's reply has no job id")])
        if self.manifests.get(stem) is manifest:
            del self.manifests[stem]
            self.invalidate(f"{stem}.manifest")
        manifest.job_made, manifest.posted = True, None
        manifest.empty()
        if self.errors.pop(stem, None) is not None:
            self.invalidate(f"{stem}.error")
        self.jobs.upsert(info)
        self.jobs.wake()
