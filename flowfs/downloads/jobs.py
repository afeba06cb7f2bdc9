"""The bulk jobs behind `.downloads/`: what this mount knows of each, how it learns of
them (the server's job list, polling of the active ones), creating and deleting them.

Creating a job survives a lost reply: the request carries an ``Idempotency-Key``,
and before asking again the job list is searched for the job the lost reply may
have made (``Unsure``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from flowfs.downloads.composing import ManifestFile
from flowfs.errors import Busy, FlowError, Forbidden, NotFound, Rejected, Transient
from flowfs.manifest import valid_name
from flowfs.model import DataFile, parse_time
from flowfs.nodes import FileNode, TextFile
from flowfs.retry import backoff_delay
from flowfs.tree import Tree

log = logging.getLogger(__name__)

ACTIVE = ("pending", "processing")
LIST_INTERVAL = 2.0  # seconds between two listings of the server's jobs
POLL_MIN, POLL_MAX = 0.5, 30.0
EXPIRED_KEPT = 3600.0  # seconds an expired job's status stays visible before it vanishes
POST_ATTEMPTS = 4  # requests to create one job, each after checking it was not made


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
            # Keyed with the size, as a data file: blocks of another size can't mix in.
            self._zip = FileNode(self.tree, data, kind="bulk-zip",
                                 url=self.tree.api.job_url(self.id),
                                 cache_key=f"zip:{self.id}:{size}")
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


Settled = tuple[str, Unsure, dict[str, Any]]  # a job name, its lost request, the job it made


class Jobs:
    """Every bulk job this mount knows of, by id.

    ``invalidate(name)`` tells the kernel that a name of `.downloads/` is gone (a job's
    ``.status`` or ``.zip``).
    """

    def __init__(self, tree: Tree, invalidate: Callable[[str], None]) -> None:
        self.tree = tree
        self._invalidate = invalidate
        self.by_id: dict[str, Job] = {}
        self.unsure: dict[str, Unsure] = {}  # by job name: requests whose answer was lost
        self._asking: set[str] = set()  # job names being submitted right now
        self._listed_at = 0.0
        self._can_list = True
        self._wake = trio.Event()

    def stems(self) -> set[str]:
        return {job.stem for job in self.by_id.values()}

    def by_stem(self, stem: str) -> Job | None:
        return next((j for j in self.by_id.values() if j.stem == stem), None)

    def active(self) -> list[Job]:
        return [j for j in self.by_id.values() if j.status in ACTIVE]

    def shown(self) -> list[Job]:
        """The jobs `.downloads/` shows; those expired for long enough are dropped."""
        now = time.time()
        for job in [j for j in self.by_id.values() if j.gone(now)]:
            self.drop(job.id)
        return list(self.by_id.values())

    # -- learning of jobs -----------------------------------------------------------
    async def refresh(self) -> list[Settled]:
        """Learn jobs created elsewhere and their state (at most every LIST_INTERVAL s).

        Returns the lost requests the listing shows to have made their job (no longer
        unsure): whoever holds their manifest decides whether it is done with.
        """
        if not self._can_list or time.monotonic() - self._listed_at < LIST_INTERVAL:
            return []
        self._listed_at = time.monotonic()
        try:
            items = await self._list()
        except Transient as exc:
            log.warning("cannot list bulk jobs: %s; showing the jobs known so far", exc)
            return []
        except FlowError as exc:
            log.warning("cannot list bulk jobs: %s", exc)
            return []
        if items is None:
            return []
        seen = set()
        for info in items:
            job_id = str(info.get("id", ""))
            if not job_id:
                continue
            seen.add(job_id)
            self.upsert(info)
        for job_id in list(self.by_id):
            if job_id not in seen:
                self.drop(job_id)
        settled = []
        for stem, unsure in list(self.unsure.items()):
            made = unsure.made(items)
            if made is None or stem in self._asking:
                continue
            del self.unsure[stem]  # the job whose reply was lost: it went through
            settled.append((stem, unsure, made))
        return settled

    async def _list(self) -> list[dict[str, Any]] | None:
        """Every job of the user on the server; None if this Flow cannot list them."""
        try:
            with trio.fail_after(self.tree.io_timeout):
                return await self.tree.api.list_all("/downloads", "jobs")
        except trio.TooSlowError:
            raise Transient("listing bulk jobs timed out") from None
        except NotFound:
            self._can_list = False  # a Flow without the job list: show our own jobs only
            return None

    def upsert(self, info: dict[str, Any]) -> None:
        """Update a known job (``shown`` drops it once gone), or add a new one."""
        job_id = str(info["id"])
        job = self.by_id.get(job_id)
        if job is not None:
            job.update(info)
            return
        now = time.time()
        if long_expired(info, now, now):
            return  # expired long before we saw it: it has vanished (and gets no inode)
        stem = stem_of(info.get("name"), job_id)
        if stem in self.stems():
            stem = f"{stem}~{job_id[:8]}"
        job = self.by_id[job_id] = Job(self.tree, stem, info)
        if job.status in ACTIVE:
            self.wake()

    def drop(self, job_id: str) -> None:
        job = self.by_id.pop(job_id, None)
        if job is not None:
            self._invalidate(f"{job.stem}.status")
            self._invalidate(f"{job.stem}.zip")

    def wake(self) -> None:
        """A job may be active: polling starts again if it slept."""
        self._wake.set()

    # -- creating and deleting ----------------------------------------------------------
    async def create(self, manifest: ManifestFile, stem: str,
                     payload: dict[str, Any]) -> dict[str, Any]:
        """Ask Flow for the job ``stem`` (its reply); Forbidden, NotFound or Rejected if
        Flow refuses it. A job name is claimed before its request, so no two requests
        for one job are ever in flight; the whole exchange has twice the I/O deadline."""
        if stem in self._asking:
            raise Busy(f"a job named {stem} is being submitted right now")
        self._asking.add(stem)
        try:
            with trio.move_on_after(self.tree.io_timeout * 2):
                return await self._post(manifest, stem, payload)
        finally:
            self._asking.discard(stem)
        raise Transient(f"Flow did not answer the request to create the job {stem} within "
                        f"{self.tree.io_timeout * 2:.0f} s; try again (flowfs looks for the "
                        "job first, so it is not made twice)")

    async def _post(self, manifest: ManifestFile, stem: str,
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
            unsure = Unsure(payload, jobs_before=frozenset(self.by_id))
        for attempt in range(1, POST_ATTEMPTS + 1):
            if asked:
                info = unsure.made(await self._list() or [])
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
                raise
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

    async def delete(self, job: Job) -> None:
        """Delete ``job`` on the server (already gone there is fine) and forget it."""
        try:
            with trio.fail_after(self.tree.io_timeout):
                await self.tree.api.delete(f"/downloads/{job.id}")
        except NotFound:
            pass  # already gone on the server
        except trio.TooSlowError:
            raise Transient(f"deleting the job {job.stem} timed out; try again") from None
        self.drop(job.id)

    # -- polling ------------------------------------------------------------------------
    async def poll_forever(self) -> None:
        """Poll active jobs, backing off while the server errs; sleep when none is active."""
        delay = POLL_MIN
        while True:
            active = self.active()
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
            self.drop(job.id)  # deleted elsewhere
            return True
        except FlowError as exc:
            job.poll_error = f"{type(exc).__name__}: {exc}"
            log.warning("polling bulk job %s: %s", job.stem, exc)
            return False
        if isinstance(info.get("status"), str):
            job.update(info)
        return True
