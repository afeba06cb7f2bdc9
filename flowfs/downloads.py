"""`.downloads/`: bulk ZIP jobs through the filesystem (design.md).

A manifest written here becomes, on its last close, a server-side bulk job;
``<name>.status`` shows the job (fresh on every read) and ``<name>.zip`` the
finished archive, read through the normal read path. Bad manifests are never
half-submitted: ``close()`` fails with EINVAL, ``<name>.error`` explains each
bad line, and the manifest stays for the user to fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, NoReturn

import trio

from flowfs.errors import (
    BadManifest,
    Exists,
    FlowError,
    Forbidden,
    InvalidName,
    NotFound,
    NotPermitted,
    Rejected,
    TooBig,
    Transient,
)
from flowfs.manifest import MAX_MANIFEST_BYTES, Manifest, format_errors, parse, valid_name
from flowfs.model import DataFile, parse_time
from flowfs.readme import DOWNLOADS_README
from flowfs.tree import DirNode, FileNode, Node, TextFile, Tree

log = logging.getLogger(__name__)

ACTIVE = ("pending", "processing")
LIST_INTERVAL = 2.0  # seconds between two listings of the server's jobs
POLL_MIN, POLL_MAX = 0.5, 30.0
EXPIRED_KEPT = 3600.0  # seconds an expired job's status stays visible before it vanishes


class ManifestFile(TextFile):
    """A manifest being written: an in-memory buffer, submitted on its last close."""

    mode = 0o644
    volatile = True

    def __init__(self, tree: Tree, stem: str) -> None:
        super().__init__(tree, b"", time.time())
        self.stem = stem
        self.buffer = bytearray()
        self.writers = 0
        self.checked = 0  # bytes [0, checked) were validated line by line while written
        # Lines refused while being written: the manifest can no longer be submitted
        # as it is (a job from the remaining lines would silently miss them).
        self.problems: list[tuple[int, str]] = []
        self.dropped_lines = 0
        self.refused: tuple[int, bytes] | None = None  # the last refused write
        self.submitting = False
        self.submitted = False

    @property
    def content(self) -> bytes:
        return bytes(self.buffer)

    def store(self, offset: int, data: bytes) -> int:
        end = offset + len(data)
        if end > MAX_MANIFEST_BYTES:
            raise TooBig(f"a manifest is limited to {MAX_MANIFEST_BYTES} bytes")
        if offset < self.checked:  # rewriting checked lines: check them again at close
            self.checked = self.buffer.rfind(b"\n", 0, offset) + 1
        if end > len(self.buffer):
            self.buffer.extend(b"\0" * (end - len(self.buffer)))
        self.buffer[offset:end] = data
        self.mtime = time.time()
        return len(data)

    def truncate(self, size: int) -> None:
        if size > MAX_MANIFEST_BYTES:
            raise TooBig(f"a manifest is limited to {MAX_MANIFEST_BYTES} bytes")
        del self.buffer[size:]
        self.buffer.extend(b"\0" * (size - len(self.buffer)))
        self.checked = min(self.checked, size)
        if size == 0:  # a fresh start
            self.problems, self.dropped_lines, self.refused = [], 0, None
        self.mtime = time.time()


class StatusFile(TextFile):
    """``<name>.status``: the job as JSON, rendered anew for every open."""

    volatile = True
    direct_io = True

    def __init__(self, tree: Tree, job: Job) -> None:
        super().__init__(tree, b"", job.created)
        self.job = job

    @property
    def content(self) -> bytes:
        return self.job.render()


def status_of(info: dict[str, Any], now: float) -> str:
    """A job's status as shown: a completed job whose `expires` has passed is expired."""
    value = info.get("status")
    expires = parse_time(info.get("expires"))
    if value == "completed" and expires and expires < now:
        return "expired"
    return value if isinstance(value, str) else "unknown"


def long_expired(info: dict[str, Any], now: float, seen: float) -> bool:
    """Expired for longer than EXPIRED_KEPT, counted from `expires`, else from ``seen``."""
    since = parse_time(info.get("expires")) or seen
    return status_of(info, now) == "expired" and now - since > EXPIRED_KEPT


class Job:
    """What this mount knows of one bulk job."""

    def __init__(self, tree: Tree, stem: str, info: dict[str, Any]) -> None:
        self.tree = tree
        self.id = str(info["id"])
        self.stem = stem
        self.info = info
        self.poll_error: str | None = None
        self.updated = time.time()
        self.created = parse_time(info.get("created")) or time.time()
        self.status_node = StatusFile(tree, self)
        self._zip: FileNode | None = None
        self._expired_seen: float | None = None

    @property
    def status(self) -> str:
        return status_of(self.info, time.time())

    def update(self, info: dict[str, Any]) -> None:
        """A fresh reply from the server: the job's new state, and no poll error."""
        self.info, self.updated, self.poll_error = info, time.time(), None

    def gone(self, now: float) -> bool:
        """Expired for longer than EXPIRED_KEPT: the job vanishes from `.downloads/`.

        Counted from `expires` (the same in every mount), or from when this mount first
        saw the job expired if the server gave no time.
        """
        if self._expired_seen is None and status_of(self.info, now) == "expired":
            self._expired_seen = now
        return self._expired_seen is not None and long_expired(self.info, now,
                                                               self._expired_seen)

    def zip_node(self) -> FileNode | None:
        """The archive, once completed and not expired."""
        size = self.info.get("size")
        if self.status != "completed" or not isinstance(size, int) or size < 0:
            return None
        if self._zip is None or self._zip.size != size:
            data = DataFile(id=self.id, filename=f"{self.stem}.zip", size=size,
                            created=parse_time(self.info.get("finished")) or self.created)
            self._zip = FileNode(self.tree, data, kind="bulk-zip",
                                 url=self.tree.api.job_url(self.id), cache_key=f"zip:{self.id}")
            self._zip.entry_ttl = 0.0  # it vanishes on expiry: never cache its name
        return self._zip

    def render(self) -> bytes:
        i = self.info
        data = i.get("data")
        view = {
            "name": self.stem, "job_id": self.id, "status": self.status,
            "progress": i.get("progress"), "files": len(data) if isinstance(data, list) else None,
            "by_execution": i.get("by_execution"), "size": i.get("size"),
            "created": i.get("created"), "started": i.get("started"),
            "finished": i.get("finished"), "expires": i.get("expires"), "error": i.get("error"),
            "zip": f"{self.stem}.zip" if self.zip_node() is not None else None,
            "last_update": round(self.updated, 3), "poll_error": self.poll_error,
        }
        return (json.dumps(view, indent=2) + "\n").encode()


def stem_of(job_name: Any, job_id: str) -> str:
    """The file stem for a job's name (`x.zip` -> `x`), made valid if it came from elsewhere."""
    name = job_name if isinstance(job_name, str) else ""
    name = name[:-4] if name.lower().endswith(".zip") else name
    if valid_name(name):
        return name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:90]
    return safe or f"job-{job_id[:8]}"


class DownloadsDir(DirNode):
    """The `.downloads/` directory and the jobs behind it."""

    mode = 0o755
    volatile = True
    kind = "downloads"

    def __init__(self, tree: Tree, mountpoint: str):
        super().__init__(tree, tree.started)
        # Absolute manifest paths may name the mount point as given or as resolved
        # (through symlinks). Resolved now: once mounted, resolving it would ask ourselves.
        self.roots = tuple(dict.fromkeys([mountpoint, os.path.realpath(mountpoint)]))
        self.readme = TextFile(tree, DOWNLOADS_README)
        self.manifests: dict[str, ManifestFile] = {}
        self.errors: dict[str, TextFile] = {}
        self.jobs: dict[str, Job] = {}  # by job id
        self._listed_at = 0.0
        self._can_list = True
        self._wake = trio.Event()

    # -- the listing ------------------------------------------------------------
    async def entries(self) -> dict[str, Node]:
        await self._refresh_jobs()
        out: dict[str, Node] = {"README.txt": self.readme}
        for stem, manifest in self.manifests.items():
            out[f"{stem}.manifest"] = manifest
        for stem, err in self.errors.items():
            out[f"{stem}.error"] = err
        now = time.time()
        for job in [j for j in self.jobs.values() if j.gone(now)]:
            self._drop(job.id)
        for job in self.jobs.values():
            out[f"{job.stem}.status"] = job.status_node
            archive = job.zip_node()
            if archive is not None:
                out[f"{job.stem}.zip"] = archive
        return out

    def _stems(self) -> set[str]:
        return {job.stem for job in self.jobs.values()}

    async def _refresh_jobs(self) -> None:
        """Learn jobs created elsewhere and their state (at most every LIST_INTERVAL s)."""
        if not self._can_list or time.monotonic() - self._listed_at < LIST_INTERVAL:
            return
        self._listed_at = time.monotonic()
        try:
            with trio.fail_after(self.tree.io_timeout):
                items = await self.tree.api.list_all("/downloads", "jobs")
        except trio.TooSlowError:
            log.warning("listing bulk jobs timed out: showing the jobs known so far")
            return
        except NotFound:
            self._can_list = False  # a Flow without the job list: show our own jobs only
            return
        except FlowError as exc:
            log.warning("cannot list bulk jobs: %s", exc)
            return
        seen = set()
        for info in items:
            job_id = str(info.get("id", ""))
            if not job_id:
                continue
            seen.add(job_id)
            self._upsert(info)
        for job_id in list(self.jobs):
            if job_id not in seen:
                self._drop(job_id)

    def _upsert(self, info: dict[str, Any]) -> None:
        """Update a known job (entries() drops it once gone), or add a new one."""
        job_id = str(info["id"])
        job = self.jobs.get(job_id)
        if job is not None:
            job.update(info)
            return
        now = time.time()
        if long_expired(info, now, now):
            return  # expired long before we saw it: it has vanished (and gets no inode)
        stem = stem_of(info.get("name"), job_id)
        if stem in self._stems():
            stem = f"{stem}~{job_id[:8]}"
        job = self.jobs[job_id] = Job(self.tree, stem, info)
        if job.status in ACTIVE:
            self._wake.set()

    def _drop(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self.tree.invalidate(self.inode, f"{job.stem}.status")
            self.tree.invalidate(self.inode, f"{job.stem}.zip")

    # -- writing ----------------------------------------------------------------
    def create(self, name: str) -> ManifestFile:
        """A new manifest (the only kind of file that can be created here)."""
        stem = name[: -len(".manifest")] if name.endswith(".manifest") else ""
        if not stem or not valid_name(stem):
            raise InvalidName(
                f"{name!r}: only <name>.manifest, name of [A-Za-z0-9._-], 1-100 characters"
            )
        if stem in self._stems():
            raise Exists(f"a bulk job named {stem} exists; remove {stem}.status first")
        manifest = self.manifests.get(stem)
        if manifest is None:
            manifest = self.manifests[stem] = ManifestFile(self.tree, stem)
        return manifest

    async def unlink(self, name: str) -> None:
        stem, _, ext = name.rpartition(".")
        if ext == "manifest" and stem in self.manifests:
            del self.manifests[stem]
        elif ext == "error" and stem in self.errors:
            del self.errors[stem]
        elif ext in ("status", "zip") and (job := self._job_by_stem(stem)) is not None:
            try:
                with trio.fail_after(self.tree.io_timeout):
                    await self.tree.api.delete(f"/downloads/{job.id}")
            except NotFound:
                pass  # already gone on the server
            except trio.TooSlowError:
                raise Transient(f"deleting the job {stem} timed out; try again") from None
            self._drop(job.id)
        elif name == "README.txt":
            raise NotPermitted("README.txt stays")
        else:
            raise NotFound(name)
        self.tree.invalidate(self.inode, name)

    def _job_by_stem(self, stem: str) -> Job | None:
        return next((j for j in self.jobs.values() if j.stem == stem), None)

    async def submit(self, manifest: ManifestFile) -> None:
        """Validate a closed manifest and create its job; BadManifest explains refusals.

        The manifest is claimed before the first await, so two closes racing (dup'd
        descriptors) cannot create two jobs; on any refusal it is put back, as it was.
        """
        if self.manifests.get(manifest.stem) is not manifest or manifest.submitting:
            return  # already submitted, being submitted, or removed
        if manifest.problems:
            self._fail(manifest.stem, manifest.problems)
        parsed = parse(manifest.content, self.roots)
        if not parsed.entries and not parsed.errors:
            return  # nothing written yet (e.g. `touch`): keep composing
        manifest.submitting = True
        try:
            with trio.fail_after(self.tree.io_timeout * 2):
                await self._submit(manifest, parsed)
        except trio.TooSlowError:
            raise Transient("the server did not take the job in time; try again") from None
        finally:
            manifest.submitting = False

    async def _submit(self, manifest: ManifestFile, parsed: Manifest) -> None:
        ids, problems = await self._resolve(parsed)
        problems = parsed.errors + problems
        if not ids and not problems:
            problems = [(0, "no data files named")]
        if problems:
            self._fail(manifest.stem, problems)
        payload = {"data_ids": ids, "name": f"{manifest.stem}.zip",
                   "by_execution": parsed.by_execution}
        try:
            info = await self.tree.api.post_json("/downloads", payload)
        except (Forbidden, NotFound, Rejected) as exc:
            self._fail(manifest.stem, [(0, f"the server refused the job: {exc}")])
        if not isinstance(info.get("id"), str | int):
            self._fail(manifest.stem, [(0, "the server's reply has no job id")])
        self.manifests.pop(manifest.stem, None)
        manifest.submitted = True
        self.tree.invalidate(self.inode, f"{manifest.stem}.manifest")
        if self.errors.pop(manifest.stem, None) is not None:
            self.tree.invalidate(self.inode, f"{manifest.stem}.error")
        self._upsert(info)
        self._wake.set()

    async def write(self, manifest: ManifestFile, offset: int, data: bytes) -> int:
        """Store a write; complete lines appended are checked at once, so that even a
        shell redirection (whose close() errors nobody reports) sees its write fail.
        A refused write stores nothing and the manifest cannot be submitted as is."""
        try:
            return await self._write(manifest, offset, data)
        except TooBig:
            manifest.problems.append((0, f"larger than {MAX_MANIFEST_BYTES} bytes; split it"))
            self._fail(manifest.stem, manifest.problems, TooBig)
            raise

    async def _write(self, manifest: ManifestFile, offset: int, data: bytes) -> int:
        if manifest.submitted or manifest.submitting:
            # Another descriptor closed first and the job went out without these bytes:
            # say so rather than drop them silently.
            raise Transient(f"{manifest.stem}.manifest was already submitted; these lines "
                            "were not part of it: write a new manifest")
        if offset != len(manifest.buffer) or offset < manifest.checked:
            return manifest.store(offset, data)  # not an append: checked on close
        text = bytes(manifest.buffer[manifest.checked:]) + data
        end = text.rfind(b"\n") + 1
        if end == 0:
            return manifest.store(offset, data)
        if offset + len(data) > MAX_MANIFEST_BYTES:
            raise TooBig(f"a manifest is limited to {MAX_MANIFEST_BYTES} bytes")
        if manifest.refused == (offset, data):  # a writer retrying the same write
            self._fail(manifest.stem, manifest.problems)
        parsed = parse(text[:end], self.roots)
        _, problems = await self._resolve(parsed)
        if parsed.errors or problems:
            manifest.refused = (offset, data)
            first = manifest.buffer.count(b"\n", 0, manifest.checked) + manifest.dropped_lines
            manifest.problems += [(n + first, m) for n, m in parsed.errors + problems]
            manifest.dropped_lines += data.count(b"\n")
            self._fail(manifest.stem, manifest.problems)
        written = manifest.store(offset, data)
        manifest.checked = manifest.checked + end
        return written

    def _fail(self, stem: str, problems: list[tuple[int, str]],
              error: type[FlowError] = BadManifest) -> NoReturn:
        """Explain the problems in <stem>.error and refuse (EINVAL, or EFBIG for size)."""
        text = format_errors(problems, stem).replace("line 0: ", "")
        self.errors[stem] = TextFile(self.tree, text, time.time())
        self.tree.invalidate(self.inode, f"{stem}.error")
        raise error(f"{stem}.manifest: {len(problems)} problem(s), see {stem}.error")

    async def _resolve(self, parsed: Manifest) -> tuple[list[str], list[tuple[int, str]]]:
        """Data ids of every entry (directories expanded), in order, without duplicates."""
        ids: dict[str, None] = {}
        problems: list[tuple[int, str]] = []
        root = self.tree.root
        for entry in parsed.entries:
            try:
                if entry.kind == "id":
                    by_id = await root.lookup("by-id")
                    assert isinstance(by_id, DirNode)
                    node = await by_id.lookup(entry.value)
                else:
                    node = await self._walk(root, entry.value.split("/"))
                found = await self._files_of(node)
            except NotFound:
                problems.append((entry.line, f"{entry.value}: no such file or directory"))
                continue
            except Forbidden:
                problems.append((entry.line, f"{entry.value}: permission denied"))
                continue
            except BadManifest as exc:
                problems.append((entry.line, f"{entry.value}: {exc}"))
                continue
            ids.update(dict.fromkeys(found))
        return list(ids), problems

    async def _walk(self, node: Node, parts: list[str]) -> Node:
        for part in parts:
            if not isinstance(node, DirNode):
                raise NotFound(part)
            node = await node.lookup(part)
        return node

    async def _files_of(self, node: Node) -> list[str]:
        """Data ids of a file, or of every file below a directory (empty parts are fine)."""
        if isinstance(node, FileNode) and node.kind == "data":
            return [node.data.id]
        if isinstance(node, DownloadsDir) or not isinstance(node, DirNode):
            raise BadManifest("not a Flow data file or directory")
        found = await self._files_below(node)
        if not found:
            raise BadManifest("no data files below it")
        return found

    async def _files_below(self, node: DirNode) -> list[str]:
        found: list[str] = []
        for child in (await node.entries()).values():
            if isinstance(child, FileNode) and child.kind == "data":
                found.append(child.data.id)
            elif isinstance(child, DirNode) and not isinstance(child, DownloadsDir):
                found += await self._files_below(child)
        return found

    # -- polling ------------------------------------------------------------------
    async def poll_forever(self) -> None:
        """Poll active jobs, backing off while the server errs; sleep when none is active."""
        delay = POLL_MIN
        while True:
            active = [j for j in self.jobs.values() if j.status in ACTIVE]
            if not active:
                self._wake = trio.Event()
                await self._wake.wait()
                delay = POLL_MIN
                continue
            failed = False
            for job in active:
                failed |= not await self._poll(job)
            delay = min(delay * 2, POLL_MAX) if failed else min(delay * 1.5, 5.0)
            with trio.move_on_after(delay):
                self._wake = trio.Event()
                await self._wake.wait()

    async def _poll(self, job: Job) -> bool:
        try:
            info = await self.tree.api.get_json(f"/downloads/{job.id}")
        except NotFound:
            self._drop(job.id)  # deleted elsewhere
            return True
        except FlowError as exc:
            job.poll_error = f"{type(exc).__name__}: {exc}"
            log.warning("polling bulk job %s: %s", job.stem, exc)
            return False
        if isinstance(info.get("status"), str):
            job.update(info)
        return True
