"""`.downloads/`: bulk ZIP jobs through the filesystem (docs/design.md).

A manifest written here becomes, on its close, a server-side bulk job;
``<name>.status`` shows the job (fresh on every read) and ``<name>.zip`` the
finished archive, read through the normal read path. Bad manifests are never
half-submitted: ``close()`` fails with EINVAL, ``<name>.error`` explains each
bad line, and nothing is sent. A draft (``x.manifest.part``) is never submitted
itself: renaming it to ``x.manifest`` submits it, so a writer killed half-way
leaves a draft, not a job.

Hostile input costs bounded time and memory: manifests and drafts being written
share one budget (``MANIFEST_SPACE``), a line is refused as soon as it passes its
limit, checking stops once the files named pass what one job may hold, and the
check yields to other requests as it goes. Creating a job survives a lost reply:
the request carries an ``Idempotency-Key``, and before asking again the job list
is searched for the job the lost reply may have made.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from flowfs.composing import MANIFEST_SPACE, MAX_JOB_FILES, Found, ManifestFile, ManifestSpace
from flowfs.errors import (
    BadManifest,
    Busy,
    Exists,
    FlowError,
    Forbidden,
    InvalidName,
    NoSpace,
    NotFound,
    NotPermitted,
    Rejected,
    TooBig,
    Transient,
)
from flowfs.manifest import (
    LONG_LINE,
    MAX_LINE_BYTES,
    MAX_MANIFEST_BYTES,
    Manifest,
    draft_name,
    format_errors,
    open_line,
    parse,
    valid_name,
)
from flowfs.model import DataFile, parse_time
from flowfs.readme import DOWNLOADS_README
from flowfs.retry import backoff_delay
from flowfs.tree import DirNode, FileNode, Node, TextFile, Tree

log = logging.getLogger(__name__)

ACTIVE = ("pending", "processing")
LIST_INTERVAL = 2.0  # seconds between two listings of the server's jobs
POLL_MIN, POLL_MAX = 0.5, 30.0
EXPIRED_KEPT = 3600.0  # seconds an expired job's status stays visible before it vanishes
POST_ATTEMPTS = 4  # requests to create one job, each after checking it was not made
TOO_MANY = (f"by this line the manifest names more than {MAX_JOB_FILES:,} files, the most "
            "one Flow job may hold: split it into several manifests (lines after this one "
            "were not checked)")


class Refused(BadManifest):
    """A manifest refused, with the problems its ``.error`` lists."""

    def __init__(self, message: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Unsure:
    """A request to create a job whose answer was lost: the job may exist.

    Kept by job name, so that however the user tries again (closing the manifest again,
    writing it anew, renaming a draft onto it), the same job asks with the same key and
    the job list is searched first.
    """

    payload: dict[str, Any]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    jobs_before: frozenset[str] = frozenset()  # the jobs known before the first request

    def made(self, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The job in ``items`` the lost request made, if any: its name and files, and
        not known before that request."""
        for info in items:
            data = info.get("data")
            if (info.get("name") == self.payload["name"]
                    and isinstance(info.get("id"), str | int)
                    and str(info["id"]) not in self.jobs_before
                    and (not isinstance(data, list)
                         or sorted(map(str, data)) == sorted(self.payload["data_ids"]))):
                return info
        return None


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

    def __init__(self, tree: Tree, mountpoint: str, space: int = MANIFEST_SPACE):
        super().__init__(tree, tree.started)
        # Absolute manifest paths may name the mount point as given or as resolved
        # (through symlinks). Resolved now: once mounted, resolving it would ask ourselves.
        self.roots = tuple(dict.fromkeys([mountpoint, os.path.realpath(mountpoint)]))
        self.readme = TextFile(tree, DOWNLOADS_README)
        self.space = ManifestSpace(space)
        self.manifests: dict[str, ManifestFile] = {}  # by job name (stem)
        self.drafts: dict[str, ManifestFile] = {}  # by file name
        self.errors: dict[str, TextFile] = {}
        self.jobs: dict[str, Job] = {}  # by job id
        self.unsure: dict[str, Unsure] = {}  # by job name: requests whose answer was lost
        self._asking: set[str] = set()  # job names being submitted right now
        self._listed_at = 0.0
        self._can_list = True
        self._wake = trio.Event()

    # -- the listing ------------------------------------------------------------
    async def entries(self) -> dict[str, Node]:
        await self._refresh_jobs()
        out: dict[str, Node] = {"README.txt": self.readme}
        for stem, manifest in self.manifests.items():
            out[f"{stem}.manifest"] = manifest
        out.update(self.drafts)
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
            items = await self._list_jobs()
        except Transient as exc:
            log.warning("cannot list bulk jobs: %s; showing the jobs known so far", exc)
            return
        except FlowError as exc:
            log.warning("cannot list bulk jobs: %s", exc)
            return
        if items is None:
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
        for stem, unsure in list(self.unsure.items()):
            made = unsure.made(items)
            manifest = self.manifests.get(stem)
            if made is None or stem in self._asking:
                continue
            del self.unsure[stem]  # the job whose reply was lost: it went through
            if manifest is not None and manifest.posted == unsure.payload:
                self._accepted(manifest, made)

    async def _list_jobs(self) -> list[dict[str, Any]] | None:
        """Every job of the user on the server; None if this Flow cannot list them."""
        try:
            with trio.fail_after(self.tree.io_timeout):
                return await self.tree.api.list_all("/downloads", "jobs")
        except trio.TooSlowError:
            raise Transient("listing bulk jobs timed out") from None
        except NotFound:
            self._can_list = False  # a Flow without the job list: show our own jobs only
            return None

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

    # -- names --------------------------------------------------------------------
    def create(self, name: str) -> ManifestFile:
        """A new manifest or draft (the only kinds of file that can be created here)."""
        if draft_name(name):
            draft = self.drafts.get(name)
            if draft is None:
                draft = self.drafts[name] = ManifestFile(self.tree, name, None, self.space)
            return draft
        stem = self._manifest_stem(name)
        manifest = self.manifests.get(stem)
        if manifest is None:
            manifest = self.manifests[stem] = ManifestFile(self.tree, name, stem, self.space)
        return manifest

    def _manifest_stem(self, name: str) -> str:
        """The job name of ``<name>.manifest``, if it is free."""
        stem = name[: -len(".manifest")] if name.endswith(".manifest") else ""
        if not stem or not valid_name(stem):
            raise InvalidName(
                f"{name!r}: only <name>.manifest, name of [A-Za-z0-9._-], 1-100 characters, "
                "or a draft named *.part or *.tmp"
            )
        if stem in self._stems():
            raise Exists(f"a bulk job named {stem} exists; remove {stem}.status first")
        return stem

    async def unlink(self, name: str) -> None:
        stem, _, ext = name.rpartition(".")
        if name in self.drafts:
            self._remove(self.drafts.pop(name))
        elif ext == "manifest" and stem in self.manifests:
            self._remove(self.manifests.pop(stem))
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

    @staticmethod
    def _remove(manifest: ManifestFile) -> None:
        """Forget a manifest or draft and give its memory back, even if still open."""
        manifest.removed = True
        manifest.empty()

    async def rename(self, old: str, new: str, replace: bool = True) -> None:
        """Rename a draft: to another draft, or to ``<name>.manifest``, which submits it.

        Like rename(2), all or nothing: if the manifest is refused, the draft stays as
        it was, ``<name>.error`` says why, and the rename fails with EPERM (for rename(2),
        EINVAL means "into a subdirectory of itself", and that is what `mv` would say).
        """
        try:
            await self._rename(old, new, replace)
        except (BadManifest, InvalidName) as exc:
            raise NotPermitted(str(exc)) from None

    async def _rename(self, old: str, new: str, replace: bool) -> None:
        draft = self.drafts.get(old)
        if draft is None:
            if old in await self.entries():
                raise NotPermitted(f"{old}: only a draft (*.part, *.tmp) can be renamed")
            raise NotFound(old)
        if draft.writer is not None or draft.being_submitted:
            raise Busy(f"{old} is still open for writing: close it first")
        if draft_name(new):
            if new != old:
                self._rename_draft(draft, new, replace)
            return
        stem = self._manifest_stem(new)
        current = self.manifests.get(stem)
        if current is not None and not replace:
            raise Exists(f"{new} exists")
        if current is not None and (current.writer is not None or current.being_submitted):
            raise Busy(f"{new} is being written: close it first")
        await self._submit_once(draft, stem)
        if draft.job_made:
            self.drafts.pop(old, None)
            self.tree.invalidate(self.inode, old)
            if current is not None and self.manifests.get(stem) is current:
                self._remove(self.manifests.pop(stem))

    def _rename_draft(self, draft: ManifestFile, new: str, replace: bool) -> None:
        if new in self.drafts and not replace:
            raise Exists(f"{new} exists")
        if new in self.drafts:
            self._remove(self.drafts.pop(new))
        del self.drafts[draft.name]
        self.tree.invalidate(self.inode, draft.name)
        draft.name = new
        self.drafts[new] = draft
        self.tree.invalidate(self.inode, new)

    def _job_by_stem(self, stem: str) -> Job | None:
        return next((j for j in self.jobs.values() if j.stem == stem), None)

    # -- submitting -----------------------------------------------------------------
    async def submit(self, manifest: ManifestFile) -> None:
        """Validate a closed manifest and create its job; BadManifest explains refusals.

        A refused manifest stays (so that appending cannot make a job of the lines
        that happened to pass) but gives its bytes back: it is written again anyway.
        """
        stem = manifest.stem
        if stem is None or self.manifests.get(stem) is not manifest:
            return  # a draft, already submitted, or removed
        await self._submit_once(manifest, stem)

    async def _submit_once(self, manifest: ManifestFile, stem: str) -> None:
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
            self._fail(stem, manifest.problems)
        parsed = parse(manifest.content, self.roots, whole=True)
        if not parsed.entries and not parsed.errors:
            return  # nothing written yet (e.g. `touch`): keep composing
        ids, problems = await self._check(parsed)
        problems = parsed.errors + problems
        if not ids and not problems:
            problems = [(0, "no data files named")]
        if problems:
            self._fail(stem, problems)
        payload = {"data_ids": ids, "name": f"{stem}.zip", "by_execution": parsed.by_execution}
        if stem in self._asking:
            raise Busy(f"a job named {stem} is being submitted right now")
        self._asking.add(stem)
        try:
            with trio.move_on_after(self.tree.io_timeout * 2):
                info = await self._create_job(manifest, stem, payload)
                self._accepted(manifest, info, stem)
                return
        finally:
            self._asking.discard(stem)
        raise Transient(f"Flow did not answer the request to create the job {stem} within "
                        f"{self.tree.io_timeout * 2:.0f} s; try again (flowfs looks for the "
                        "job first, so it is not made twice)")

    async def _check(self, parsed: Manifest) -> tuple[list[str], list[tuple[int, str]]]:
        """Resolve every entry, within a deadline of its own (not the server's answer's)."""
        found = Found()
        limit = self.tree.io_timeout * 4
        with trio.move_on_after(limit):
            problems = await self._resolve(parsed, found)
            return list(found.ids), problems
        raise Transient(f"checking the manifest took longer than {limit:.0f} s (the server "
                        "was slow to list what it names); nothing was submitted: try again")

    async def _create_job(self, manifest: ManifestFile, stem: str,
                          payload: dict[str, Any]) -> dict[str, Any]:
        """POST the job, safely again after a lost reply.

        A reset or cut reply leaves it unknown whether Flow made the job. Before asking
        again, the job list is searched for it (a Flow may ignore Idempotency-Key); the
        request is sent again with the same key, so a Flow that honours it answers with
        the job it made rather than a second one.
        """
        unsure = self.unsure.get(stem)
        asked = unsure is not None and unsure.payload == payload
        if unsure is None or unsure.payload != payload:
            unsure = Unsure(payload, jobs_before=frozenset(self.jobs))
        for attempt in range(1, POST_ATTEMPTS + 1):
            if asked:
                info = unsure.made(await self._list_jobs() or [])
                if info is not None:
                    log.info("the job %s was made by a request whose reply was lost", stem)
                    self.unsure.pop(stem, None)
                    return info
            # From now on the job may exist, whatever happens to this request.
            self.unsure[stem], manifest.posted, asked = unsure, payload, True
            try:
                info = await self.tree.api.post_json("/downloads", payload,
                                                     headers={"Idempotency-Key": unsure.key})
            except (Forbidden, NotFound, Rejected) as exc:
                self.unsure.pop(stem, None)
                log.warning("Flow refused the job %s: %s", stem, exc)
                self._fail(stem, [(0, f"Flow refused the job: {exc}")])
            except Transient as exc:
                log.warning("creating the job %s: %s; it may have been made, looking for it",
                            stem, exc)
                if attempt == POST_ATTEMPTS:
                    raise
                await trio.sleep(backoff_delay(attempt))
            else:
                self.unsure.pop(stem, None)
                return info
        raise AssertionError("unreachable")

    def _accepted(self, manifest: ManifestFile, info: dict[str, Any],
                  stem: str | None = None) -> None:
        """The job exists: the manifest is done with and the job shows."""
        stem = stem or manifest.stem
        assert stem is not None
        if not isinstance(info.get("id"), str | int):
            self._fail(stem, [(0, "the server's reply has no job id")])
        if self.manifests.get(stem) is manifest:
            del self.manifests[stem]
            self.tree.invalidate(self.inode, f"{stem}.manifest")
        manifest.job_made, manifest.posted = True, None
        manifest.empty()
        if self.errors.pop(stem, None) is not None:
            self.tree.invalidate(self.inode, f"{stem}.error")
        self._upsert(info)
        self._wake.set()

    # -- writing ----------------------------------------------------------------
    async def write(self, manifest: ManifestFile, writer: object, offset: int,
                    data: bytes) -> int:
        """Store a write by the open file ``writer``; complete lines appended are checked
        at once, so that even a shell redirection (whose close() errors nobody reports)
        sees its write fail. A refused write stores nothing and the manifest cannot be
        submitted as is."""
        if manifest.job_made or (manifest.being_submitted and manifest.stem is not None):
            # Another descriptor closed first and the job went out without these bytes:
            # say so rather than drop them silently.
            raise Transient(f"{manifest.name} was already submitted; these lines "
                            "were not part of it: write a new manifest")
        manifest.acquire(writer)  # again after an early close of a dup'd descriptor
        try:
            if manifest.stem is None:
                return manifest.store(offset, data)  # a draft: checked when renamed
            return await self._write(manifest, offset, data)
        except (TooBig, NoSpace) as exc:
            problem = (0, str(exc))
            if problem not in manifest.problems:
                manifest.problems.append(problem)
            self._fail(manifest.stem or manifest.name, manifest.problems, type(exc))

    async def _write(self, manifest: ManifestFile, offset: int, data: bytes) -> int:
        if manifest.unordered or offset != len(manifest.buffer):
            manifest.unordered = True  # not an append: checked as a whole on close
            return manifest.store(offset, data)
        if open_line(len(manifest.buffer) - manifest.checked, data) > MAX_LINE_BYTES:
            # Refused as soon as it passes the limit: a 10 MiB line is never rescanned.
            line = manifest.lines + manifest.dropped_lines + data.count(b"\n") + 1
            self._refuse_write(manifest, offset, data, [(line, LONG_LINE)])
        end = data.rfind(b"\n") + 1
        if end == 0:
            return manifest.store(offset, data)
        if offset + len(data) > MAX_MANIFEST_BYTES:
            raise TooBig(f"larger than {MAX_MANIFEST_BYTES:,} bytes: split it")
        assert manifest.stem is not None
        if manifest.refused == (offset, data):  # a writer retrying the same write
            self._fail(manifest.stem, manifest.problems)
        # The unfinished line before this write is at most MAX_LINE_BYTES: linear.
        text = bytes(manifest.buffer[manifest.checked:]) + data[:end]
        parsed = parse(text, self.roots)
        problems = parsed.errors + await self._resolve(parsed, manifest.found)
        if problems:
            first = manifest.lines + manifest.dropped_lines
            self._refuse_write(manifest, offset, data, [(n + first, m) for n, m in problems])
        written = manifest.store(offset, data)
        manifest.checked = offset + end
        manifest.lines += text.count(b"\n")
        return written

    def _refuse_write(self, manifest: ManifestFile, offset: int, data: bytes,
                      problems: list[tuple[int, str]]) -> NoReturn:
        assert manifest.stem is not None
        manifest.refused = (offset, data)
        known = set(manifest.problems)  # a writer going on after a refusal adds nothing
        manifest.problems += [p for p in problems if p not in known]
        manifest.dropped_lines += data.count(b"\n")
        self._fail(manifest.stem, manifest.problems)

    def _fail(self, stem: str, problems: list[tuple[int, str]],
              error: type[FlowError] = BadManifest) -> NoReturn:
        """Explain the problems in <stem>.error and refuse (EINVAL, or EFBIG/ENOSPC)."""
        text = format_errors(problems, stem).replace("line 0: ", "")
        self.errors[stem] = TextFile(self.tree, text, time.time())
        self.tree.invalidate(self.inode, f"{stem}.error")
        message = f"{stem}: {len(problems)} problem(s), see {stem}.error"
        if error is BadManifest:
            raise Refused(message, list(problems))
        raise error(message)

    # -- checking -------------------------------------------------------------------
    async def _resolve(self, parsed: Manifest, found: Found) -> list[tuple[int, str]]:
        """Add the data ids of every entry (directories expanded) to ``found``; problems.

        Stops at the line where the files named pass MAX_JOB_FILES.
        """
        problems: list[tuple[int, str]] = []
        root = self.tree.root
        for entry in parsed.entries:
            await found.step()
            try:
                if entry.kind == "id":
                    by_id = await root.lookup("by-id")
                    assert isinstance(by_id, DirNode)
                    node = await by_id.lookup(entry.value)
                else:
                    node = await self._walk(root, entry.value.split("/"))
                await self._files_of(node, found)
            except NotFound:
                problems.append((entry.line, f"{entry.value}: no such file or directory"))
            except Forbidden:
                problems.append((entry.line, f"{entry.value}: permission denied"))
            except BadManifest as exc:
                problems.append((entry.line, f"{entry.value}: {exc}"))
            if found.too_many:
                problems.append((entry.line, TOO_MANY))
                break
        return problems

    async def _walk(self, node: Node, parts: list[str]) -> Node:
        for part in parts:
            if not isinstance(node, DirNode):
                raise NotFound(part)
            node = await node.lookup(part)
        return node

    async def _files_of(self, node: Node, found: Found) -> None:
        """Add a file, or every file below a directory (empty parts are fine)."""
        if isinstance(node, FileNode) and node.kind == "data":
            found.ids[node.data.id] = None
            return
        if isinstance(node, DownloadsDir) or not isinstance(node, DirNode):
            raise BadManifest("not a Flow data file or directory")
        if not await self._files_below(node, found):
            raise BadManifest("no data files below it")

    async def _files_below(self, node: DirNode, found: Found) -> int:
        """How many files are below ``node``; each directory is walked once per check."""
        if node in found.walked:
            return found.walked[node]
        count = 0
        for child in (await node.entries()).values():
            await found.step()
            if isinstance(child, FileNode) and child.kind == "data":
                found.ids[child.data.id] = None
                count += 1
            elif isinstance(child, DirNode) and not isinstance(child, DownloadsDir):
                count += await self._files_below(child, found)
            if found.too_many:
                break
        found.walked[node] = count
        return count

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
