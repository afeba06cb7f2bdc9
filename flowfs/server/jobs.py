"""Bulk download jobs, persisted in SQLite under the state dir.

Lifecycle: pending -> processing -> completed -> expired, or -> failed.  Every
state change is one UPDATE guarded by the state it leaves, so a job deleted
(or already moved on) meanwhile is never resurrected, and a restart can put
unfinished jobs back to pending without ever running one twice at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    expires REAL,
    by_execution INTEGER NOT NULL,
    data TEXT NOT NULL,
    size INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (user, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
"""
# After the column exists (a state dir from before it gets it added first).
_KEY_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_key ON jobs (user, idempotency_key) "
              "WHERE idempotency_key IS NOT NULL")
_COLUMNS = ("id, user, name, status, progress, created, started, finished, expires, "
            "by_execution, data, size, error, attempts")


@dataclass(frozen=True, slots=True)
class Job:
    """One bulk download job as stored."""

    id: str
    user: str
    name: str
    status: str
    progress: int
    created: float
    started: float | None
    finished: float | None
    expires: float | None
    by_execution: bool
    data: tuple[str, ...]
    size: int | None
    error: str | None
    attempts: int


def _job(row: Sequence[Any]) -> Job:
    return Job(id=row[0], user=row[1], name=row[2], status=row[3], progress=row[4],
               created=row[5], started=row[6], finished=row[7], expires=row[8],
               by_execution=bool(row[9]), data=tuple(json.loads(row[10])), size=row[11],
               error=row[12], attempts=row[13])


class JobStore:
    """The jobs table; every method is thread-safe and quick (one short statement)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(jobs)")]
            if "idempotency_key" not in columns:
                self._db.execute("ALTER TABLE jobs ADD COLUMN idempotency_key TEXT")
            self._db.execute(_KEY_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _change(self, sql: str, args: Sequence[Any]) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Job]:
        with self._lock:
            return [_job(row) for row in self._db.execute(sql, args).fetchall()]

    def create(self, user: str, name: str, data: Sequence[str], by_execution: bool,
               now: float) -> Job:
        """A new pending job."""
        job_id = str(uuid.uuid4())
        self._change(
            "INSERT INTO jobs (id, user, name, status, created, by_execution, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, user, name, PENDING, now, int(by_execution), json.dumps(list(data))))
        job = self.get(job_id)
        assert job is not None
        return job

    def create_once(self, user: str, key: str, name: str, data: Sequence[str],
                    by_execution: bool, now: float) -> tuple[Job, bool]:
        """The job ``user`` created with ``key`` if there is one (and False), else a new
        pending job carrying that key (and True): a request sent again after its reply
        was lost names the job it made, not a second one."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE user = ? AND "
                                    "idempotency_key = ?", (user, key)).fetchall()
            if rows:
                return _job(rows[0]), False
            job_id = str(uuid.uuid4())
            self._db.execute(
                "INSERT INTO jobs (id, user, name, status, created, by_execution, data, "
                "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, user, name, PENDING, now, int(by_execution), json.dumps(list(data)),
                 key))
        job = self.get(job_id)
        assert job is not None
        return job, True

    def get(self, job_id: str) -> Job | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def for_user(self, user: str) -> list[Job]:
        """The user's jobs, oldest first."""
        return self._rows(f"SELECT {_COLUMNS} FROM jobs WHERE user = ? ORDER BY seq", (user,))

    def with_status(self, status: str) -> list[Job]:
        return self._rows(f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq",
                          (status,))

    def delete(self, job_id: str) -> bool:
        return self._change("DELETE FROM jobs WHERE id = ?", (job_id,)) == 1

    def claim(self, job_id: str, now: float) -> Job | None:
        """pending -> processing (progress 0); None if the job is gone or not pending."""
        changed = self._change(
            "UPDATE jobs SET status = ?, started = ?, progress = 0, attempts = attempts + 1 "
            "WHERE id = ? AND status = ?", (PROCESSING, now, job_id, PENDING))
        return self.get(job_id) if changed else None

    def set_progress(self, job_id: str, progress: int) -> None:
        self._change("UPDATE jobs SET progress = ? WHERE id = ? AND status = ?",
                     (progress, job_id, PROCESSING))

    def complete(self, job_id: str, size: int, now: float, ttl: float) -> bool:
        """processing -> completed; False if the job was deleted meanwhile."""
        return self._change(
            "UPDATE jobs SET status = ?, progress = 100, size = ?, finished = ?, expires = ? "
            "WHERE id = ? AND status = ?",
            (COMPLETED, size, now, now + ttl, job_id, PROCESSING)) == 1

    def fail(self, job_id: str, error: str, now: float) -> bool:
        return self._change(
            "UPDATE jobs SET status = ?, error = ?, finished = ? WHERE id = ? AND status = ?",
            (FAILED, error, now, job_id, PROCESSING)) == 1

    def expire(self, job_id: str) -> bool:
        """completed -> expired (the row stays)."""
        return self._change("UPDATE jobs SET status = ? WHERE id = ? AND status = ?",
                            (EXPIRED, job_id, COMPLETED)) == 1

    def due_for_expiry(self, now: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status = ? AND expires <= ? ORDER BY seq",
                (COMPLETED, now)).fetchall()
        return [row[0] for row in rows]

    def requeue_unfinished(self) -> list[str]:
        """After a restart: processing jobs start again from scratch; all pending ids."""
        self._change("UPDATE jobs SET status = ?, progress = 0, started = NULL WHERE status = ?",
                     (PENDING, PROCESSING))
        return [job.id for job in self.with_status(PENDING)]
