"""Running bulk jobs: a pool of archive threads and an expiry sweeper.

Threads, not the event loop: building a ZIP is blocking disk and zlib work,
and request handling must never wait for it.  The threads talk to the rest of
the server only through the :class:`~flowfs.server.jobs.JobStore` (SQLite) and
the archive directory.  An archive is written to ``<id>.zip.part`` and renamed
to ``<id>.zip`` before the job is marked completed, so a completed job always
has a whole archive, and a job caught half-way by a crash is simply redone.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flowfs.server.archive import ArchiveError, Cancelled, plan_entries, write_zip
from flowfs.server.catalog import Catalog
from flowfs.server.export import Exporter
from flowfs.server.jobs import COMPLETED, Job, JobStore

log = logging.getLogger(__name__)

_PROGRESS_CAP = 99  # 100 means completed, and only completion says so
_DELAY_STEP = 0.05


@dataclass(frozen=True)
class JobSettings:
    """How jobs run: thread count, archive lifetime, and the test delay."""

    workers: int
    ttl: float
    delay: float


class _Progress:
    """Progress of one job: the smaller of bytes done and (with a delay) time spent."""

    def __init__(self, store: JobStore, job: Job, total: int, delay: float) -> None:
        self._store = store
        self._job_id = job.id
        self._total = max(total, 1)
        self._done = 0 if total else 1
        self._delay = delay
        self._start = time.monotonic()
        self._reported = 0

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def add(self, count: int) -> None:
        self._done += count
        self.report()

    def report(self) -> None:
        fraction = min(self._done / self._total, 1.0)
        if self._delay > 0:
            fraction = min(fraction, self.elapsed() / self._delay)
        value = min(_PROGRESS_CAP, int(fraction * 100))
        if value != self._reported:
            self._reported = value
            self._store.set_progress(self._job_id, value)


class JobRunner:
    """Builds archives for pending jobs and expires completed ones."""

    def __init__(self, store: JobStore, catalog: Catalog, archive_dir: Path,
                 settings: JobSettings, exporter: Exporter | None = None) -> None:
        self._store = store
        self._catalog = catalog
        self._dir = archive_dir
        self._settings = settings
        self._exporter = exporter
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def archive_path(self, job_id: str) -> Path:
        return self._dir / f"{job_id}.zip"

    def _part_path(self, job_id: str) -> Path:
        return self._dir / f"{job_id}.zip.part"

    def start(self) -> None:
        """Resume what a previous run left unfinished, then start the threads."""
        self._dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._dir.glob("*.zip.part"):
            leftover.unlink(missing_ok=True)
        self.sweep()
        for job_id in self._store.requeue_unfinished():
            self._queue.put(job_id)
        for index in range(max(1, self._settings.workers)):
            self._spawn(self._work, f"zip-{index}")
        self._spawn(self._sweep_forever, "job-sweeper")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads; a job being built stays processing and is redone next start."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def discard(self, job_id: str) -> None:
        """Forget a deleted job's files (and stop building it if it is being built)."""
        with self._cancel_lock:
            self._cancelled.add(job_id)
        self._remove_files(job_id)

    def refresh(self, job: Job) -> Job:
        """``job``, expired now if its time has come (the sweeper may not have run yet)."""
        if job.status == COMPLETED and job.expires is not None and job.expires <= time.time():
            self._expire(job.id)
            return self._store.get(job.id) or job
        return job

    def sweep(self) -> None:
        """Expire every completed job past its time and delete its archive."""
        for job_id in self._store.due_for_expiry(time.time()):
            self._expire(job_id)

    def _expire(self, job_id: str) -> None:
        if self._store.expire(job_id):
            log.info("job %s expired", job_id)
        self._remove_files(job_id)

    def _remove_files(self, job_id: str) -> None:
        if self._exporter is not None:
            self._exporter.unlink_job(job_id)
        self.archive_path(job_id).unlink(missing_ok=True)

    def _sweep_forever(self) -> None:
        interval = min(max(self._settings.ttl / 4, 0.25), 30.0)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # the sweeper must outlive one bad pass
                log.exception("expiry sweep failed")

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            if self._stop.is_set():
                return
            try:
                self._run(job_id)
            except Exception:  # one broken job must not take a worker down
                log.exception("job %s crashed", job_id)

    def _should_stop(self, job_id: str) -> bool:
        with self._cancel_lock:
            return self._stop.is_set() or job_id in self._cancelled

    def _run(self, job_id: str) -> None:
        job = self._store.claim(job_id, time.time())
        if job is None:
            return  # deleted, or already handled
        try:
            size = self._build(job)
        except Cancelled:
            self._part_path(job.id).unlink(missing_ok=True)
            return
        except ArchiveError as exc:
            self._fail(job, str(exc))
            return
        except (OSError, ValueError, RuntimeError) as exc:
            # The archive side (disk full, zipfile limits): the owner gets a short
            # reason, the log gets the details.
            log.warning("job %s failed: %s", job.id, exc)
            self._fail(job, "the server could not write the archive")
            return
        if not self._store.complete(job.id, size, time.time(), self._settings.ttl):
            self._remove_files(job.id)  # deleted while we were building it
            return
        if self._exporter is not None:
            # Under the lock that `discard` takes first: a job deleted after it completed
            # must not get its link back after `discard` removed it.
            with self._cancel_lock:
                if job.id in self._cancelled:
                    self._remove_files(job.id)
                    return
                self._exporter.link_job(job.id, self.archive_path(job.id))
        log.info("job %s completed (%d bytes)", job.id, size)

    def _fail(self, job: Job, error: str) -> None:
        self._part_path(job.id).unlink(missing_ok=True)
        log.info("job %s failed: %s", job.id, error)
        self._store.fail(job.id, error, time.time())

    def _build(self, job: Job) -> int:
        entries = plan_entries(self._catalog, job.data, job.by_execution)
        progress = _Progress(self._store, job, sum(e.size for e in entries),
                             self._settings.delay)
        part = self._part_path(job.id)
        write_zip(entries, part, progress.add, lambda: self._should_stop(job.id))
        # The test knob: stay in processing, progress advancing, for at least `delay`.
        while progress.elapsed() < self._settings.delay:
            if self._should_stop(job.id):
                raise Cancelled
            time.sleep(_DELAY_STEP)
            progress.report()
        # The size before the rename: a delete may remove the archive right after it.
        size = part.stat().st_size
        os.replace(part, self.archive_path(job.id))
        return size
