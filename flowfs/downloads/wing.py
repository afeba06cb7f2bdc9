"""`.downloads/`'s side of each FUSE operation, one call each, and its background work.

``ops`` resolves inodes and handles and passes the node or directory on; every call
here raises ``ReadOnly`` for one that is not of `.downloads/` (everywhere else the
mount is read-only). The open file writing a manifest is its *writer*: at most one
at a time, taken at open or write, given up at its close, which submits.
"""

from __future__ import annotations

import contextlib
from typing import NoReturn

from flowfs.downloads.checking import Checker
from flowfs.downloads.composing import MANIFEST_SPACE, ManifestFile, ManifestSpace
from flowfs.downloads.directory import DownloadsDir
from flowfs.downloads.submitting import Submitter
from flowfs.errors import (
    BadManifest,
    Busy,
    Exists,
    FlowError,
    InvalidName,
    NoSpace,
    NotFound,
    NotPermitted,
    ReadOnly,
    TooBig,
    Transient,
)
from flowfs.manifest import draft_name
from flowfs.nodes import DirNode, Node
from flowfs.tree import Tree


class Downloads:
    """The `.downloads/` directory (``directory``), its jobs, and the manifests written
    there, whose paths may start with ``mountpoint``; ``space``: the bytes all
    manifests and drafts being written may hold together."""

    def __init__(self, tree: Tree, mountpoint: str, space: int = MANIFEST_SPACE) -> None:
        self.space = ManifestSpace(space)
        self.directory = DownloadsDir(tree, self.space)
        self.jobs = self.directory.jobs
        self.checker = Checker(tree, self.directory, mountpoint)
        self.submitter = Submitter(self.directory, self.jobs, self.checker)

    async def run(self) -> None:
        """Poll the active jobs, for as long as the mount lives."""
        await self.jobs.poll_forever()

    def stats(self) -> dict[str, int]:
        """Its part of `.flowfs/stats` (documented in docs/usage.md)."""
        return {"jobs": len(self.jobs.by_id), "active": len(self.jobs.active()),
                "manifest_bytes": self.space.used, "manifest_limit": self.space.limit}

    # -- files ------------------------------------------------------------------------
    def open(self, node: Node, writer: object, *, truncate: bool) -> None:
        """``writer`` opened ``node`` for writing: it becomes its one writer (EBUSY if
        another is)."""
        manifest = self._manifest(node)
        manifest.acquire(writer)
        if truncate:
            manifest.truncate(0)

    async def write(self, node: Node, writer: object, offset: int, data: bytes) -> int:
        """Store a write by ``writer``; complete lines appended are checked at once
        (``Checker.append``); a draft is checked when renamed."""
        manifest = self._manifest(node)
        if manifest.job_made or (manifest.being_submitted and manifest.stem is not None):
            # Another descriptor closed first and the job went out without these bytes:
            # say so rather than drop them silently.
            raise Transient(f"{manifest.name} was already submitted; these lines "
                            "were not part of it: write a new manifest")
        manifest.acquire(writer)  # again after an early close of a dup'd descriptor
        try:
            if manifest.stem is None:
                return manifest.store(offset, data)
            return await self.checker.append(manifest, offset, data)
        except (TooBig, NoSpace) as exc:
            problem = (0, str(exc))
            if problem not in manifest.problems:
                manifest.problems.append(problem)
            self.directory.fail(manifest.stem or manifest.name, manifest.problems, type(exc))

    async def flush(self, node: Node, writer: object) -> None:
        """close(2): the writer of a manifest submits it, so errors reach its close.

        Only one open file writes a manifest at a time, so its close is the last one and
        what it reports is the fate of its own bytes.
        """
        manifest = self._manifest(node)
        if manifest.release(writer):
            await self.submitter.submit(manifest)

    async def release(self, node: Node, writer: object) -> None:
        """The last close of ``writer``: a manifest written since its last close(2) (or
        whose close the kernel never sent) is submitted now; an error can only go to
        ``<name>.error``. After a close(2) that submitted, once is enough: a refused
        manifest is not sent again, and one that failed with EIO does not become a job
        later."""
        manifest = self._manifest(node)
        if manifest.release(writer):
            with contextlib.suppress(FlowError):
                await self.submitter.submit(manifest)

    def setattr(self, node: Node, holder: object | None, size: int | None) -> None:
        """A manifest truncated to ``size`` through the open file ``holder``, if any.

        None: times or modes, which are ours to keep.
        """
        manifest = self._manifest(node)
        if size is None:
            return
        if manifest.writer is not None and manifest.writer is not holder:
            raise Busy(f"{manifest.name} is being written by another open file")
        manifest.truncate(size)

    # -- names --------------------------------------------------------------------------
    def create(self, parent: DirNode, name: str) -> ManifestFile:
        return self._own(parent).create(name)

    async def unlink(self, parent: DirNode, name: str) -> None:
        await self._own(parent).unlink(name)

    def mkdir(self, parent: DirNode) -> NoReturn:
        self._own(parent)
        raise NotPermitted("no subdirectories in .downloads")

    async def rename(self, parent: DirNode, old: str, new_parent: DirNode, new: str, *,
                     replace: bool, plain: bool) -> None:
        """Rename a draft: to another draft, or to ``<name>.manifest``, which submits it.

        Like rename(2), all or nothing: if the manifest is refused, the draft stays as
        it was, ``<name>.error`` says why, and the rename fails with EPERM (for rename(2),
        EINVAL means "into a subdirectory of itself", and that is what `mv` would say).
        ``plain``: no flag but RENAME_NOREPLACE (which ``replace`` says).
        """
        if self._own(parent) is not new_parent:
            raise ReadOnly("read-only file system")
        if not plain:
            raise NotPermitted("only plain renames in .downloads")
        try:
            await self._rename(old, new, replace)
        except (BadManifest, InvalidName) as exc:
            raise NotPermitted(str(exc)) from None

    async def _rename(self, old: str, new: str, replace: bool) -> None:
        directory = self.directory
        draft = directory.drafts.get(old)
        if draft is None:
            if old in await directory.entries():
                raise NotPermitted(f"{old}: only a draft (*.part, *.tmp) can be renamed")
            raise NotFound(old)
        if draft.writer is not None or draft.being_submitted:
            raise Busy(f"{old} is still open for writing: close it first")
        if draft_name(new):
            if new != old:
                directory.rename_draft(draft, new, replace)
            return
        stem = directory.manifest_stem(new)
        current = directory.manifests.get(stem)
        if current is not None and not replace:
            raise Exists(f"{new} exists")
        if current is not None and (current.writer is not None or current.being_submitted):
            raise Busy(f"{new} is being written: close it first")
        await self.submitter.submit_once(draft, stem)
        if draft.job_made:
            directory.draft_submitted(draft, stem, current)

    # -- what is ours -------------------------------------------------------------------
    def _own(self, parent: DirNode) -> DownloadsDir:
        if parent is not self.directory:
            raise ReadOnly("read-only file system")
        return self.directory

    @staticmethod
    def _manifest(node: Node) -> ManifestFile:
        if not isinstance(node, ManifestFile):
            raise ReadOnly("read-only file system")
        return node
