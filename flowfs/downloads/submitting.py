"""Submitting a manifest: checked as a whole, then its job asked of Flow.

A manifest is never half-submitted: if any line is bad, ``<name>.error`` explains
each and nothing is sent (``Refused``, EINVAL at close). A refused manifest stays
(so that appending cannot make a job of the lines that happened to pass) but gives
its bytes back: it is written again anyway.
"""

from __future__ import annotations

from flowfs.downloads.checking import Checker
from flowfs.downloads.composing import ManifestFile
from flowfs.downloads.directory import DownloadsDir, Refused
from flowfs.downloads.jobs import Jobs
from flowfs.errors import Forbidden, NotFound, Rejected


class Submitter:
    """Turns the manifests of ``directory`` into jobs."""

    def __init__(self, directory: DownloadsDir, jobs: Jobs, checker: Checker) -> None:
        self.directory = directory
        self.jobs = jobs
        self.checker = checker

    async def submit(self, manifest: ManifestFile) -> None:
        """Submit a manifest its writer closed; BadManifest explains refusals."""
        stem = manifest.stem
        if stem is None or self.directory.manifests.get(stem) is not manifest:
            return  # a draft, already submitted, or removed
        await self.submit_once(manifest, stem)

    async def submit_once(self, manifest: ManifestFile, stem: str) -> None:
        """Check ``manifest`` and create the job ``stem``; claimed before the first await,
        so two closes racing (dup'd descriptors) cannot create two jobs."""
        if manifest.being_submitted:
            return
        manifest.being_submitted = True
        try:
            await self._submit(manifest, stem)
        except Refused as exc:
            if manifest.stem is not None and manifest.writer is None:
                manifest.problems = exc.problems  # stays unsubmittable until rewritten
                manifest.empty()
            raise
        finally:
            manifest.being_submitted = False

    async def _submit(self, manifest: ManifestFile, stem: str) -> None:
        if manifest.problems:
            self.directory.fail(stem, manifest.problems)
        parsed = self.checker.parse(manifest.content)
        if not parsed.entries and not parsed.errors:
            return  # nothing written yet (e.g. `touch`): keep composing
        ids, problems = await self.checker.check(parsed)
        problems = parsed.errors + problems
        if not ids and not problems:
            problems = [(0, "no data files named")]
        if problems:
            self.directory.fail(stem, problems)
        payload = {"data_ids": ids, "name": f"{stem}.zip", "by_execution": parsed.by_execution}
        try:
            info = await self.jobs.create(manifest, stem, payload)
        except (Forbidden, NotFound, Rejected) as exc:
            self.directory.fail(stem, [(0, f"Flow refused the job: {exc}")])
        self.directory.accepted(manifest, info, stem)
