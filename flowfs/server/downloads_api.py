"""The bulk download API: create, poll, list and delete jobs.

``POST {api}/downloads`` checks every data id (404 for unknown ones, 403 for
ones the caller may not read, naming them), stores a pending job and hands it
to the workers.  Someone else's job is 404 everywhere.  A request with an
``Idempotency-Key`` the same user already sent answers the job that key made
(a client whose reply was lost asks again safely); the same key for another
job is 422.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowfs.server.access import Access
from flowfs.server.auth import Authenticator
from flowfs.server.bodies import read_json_object
from flowfs.server.catalog import Catalog
from flowfs.server.errors import ApiError, bad_request, not_found
from flowfs.server.jobs import COMPLETED, Job, JobStore
from flowfs.server.pagination import page_params, page_response
from flowfs.server.workers import JobRunner

DEFAULT_NAME = "download.zip"
MAX_IDS = 10_000
_NAME_RE = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,100}\.zip$")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def _stamp(value: float | None) -> int | None:
    return None if value is None else int(value)


def job_view(job: Job, files_base: str) -> dict[str, Any]:
    """The job object of docs/flow-api.md ("Bulk download jobs")."""
    done = job.status == COMPLETED
    return {
        "id": job.id, "name": job.name, "status": job.status, "progress": job.progress,
        "created": _stamp(job.created), "started": _stamp(job.started),
        "finished": _stamp(job.finished), "expires": _stamp(job.expires),
        "by_execution": job.by_execution, "data": list(job.data), "user": job.user,
        "size": job.size if done else None,
        "download_url": f"{files_base}/downloads/{job.id}" if done else None,
        "error": job.error,
    }


def _parse_ids(body: dict[str, Any]) -> list[str]:
    raw = body.get("data_ids", body.get("data"))
    if raw is None:
        raise bad_request("data_ids is required")
    if not isinstance(raw, list) or not all(
            isinstance(i, str) or (isinstance(i, int) and not isinstance(i, bool)) for i in raw):
        raise bad_request("data_ids must be a list of data ids")
    if not raw:
        raise bad_request("data_ids is empty: nothing to download")
    if len(raw) > MAX_IDS:
        raise bad_request(f"Cannot download more than {MAX_IDS} files in one job")
    return list(dict.fromkeys(str(i) for i in raw))


def _parse_name(body: dict[str, Any]) -> str:
    name = body.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise bad_request("name must end in .zip, use only letters, digits, '.', '_' and '-', "
                          "not start with '.', and be at most 104 characters")
    return name


async def own_job(auth: Authenticator, store: JobStore, request: Request) -> Job:
    """The job named in the path, if it is the caller's; someone else's is a 404 too."""
    user = auth.require(request)
    job = await run_in_threadpool(store.get, request.path_params["job_id"])
    if job is None or job.user != user:
        raise not_found("Download not found")
    return job


class DownloadsApi:
    """Endpoints for bulk download jobs."""

    def __init__(self, catalog: Catalog, access: Access, auth: Authenticator, store: JobStore,
                 runner: JobRunner, files_url: str | None) -> None:
        self._catalog = catalog
        self._access = access
        self._auth = auth
        self._store = store
        self._runner = runner
        self._files_url = files_url.rstrip("/") if files_url else None

    def routes(self) -> list[Route]:
        return [
            Route("/downloads", self.create, methods=["POST"]),
            Route("/downloads", self.list_jobs, methods=["GET"]),
            Route("/downloads/{job_id}", self.get, methods=["GET"]),
            Route("/downloads/{job_id}", self.delete, methods=["DELETE"]),
        ]

    def _files_base(self, request: Request) -> str:
        if self._files_url:
            return self._files_url
        return f"{request.url.scheme}://{request.url.netloc}"

    def _check_readable(self, user: str, ids: list[str]) -> None:
        missing = [i for i in ids if i not in self._catalog.data]
        if missing:
            raise ApiError(404, "Data not found: " + ", ".join(missing), extra={"ids": missing})
        denied = [i for i in ids if not self._access.can_read(user, self._catalog.data[i])]
        if denied:
            raise ApiError(403, "No permission to download data: " + ", ".join(denied),
                           extra={"ids": denied})

    async def create(self, request: Request) -> Response:
        user = self._auth.require(request)
        body = await read_json_object(request)
        ids, name = _parse_ids(body), _parse_name(body)
        by_execution = body.get("by_execution", False)
        if not isinstance(by_execution, bool):
            raise bad_request("by_execution must be true or false")
        self._check_readable(user, ids)
        key = request.headers.get("idempotency-key")
        if key is None:
            job = await run_in_threadpool(self._store.create, user, name, ids, by_execution,
                                          time.time())
            made = True
        elif not _KEY_RE.match(key):
            raise bad_request("Idempotency-Key must be 1-255 visible ASCII characters")
        else:
            job, made = await run_in_threadpool(self._store.create_once, user, key, name, ids,
                                                by_execution, time.time())
            if not made and (job.name, job.data, job.by_execution) != (name, tuple(ids),
                                                                       by_execution):
                raise ApiError(422, "Idempotency-Key was used for another job")
        if made:
            self._runner.submit(job.id)
        headers = {} if made else {"Idempotent-Replayed": "true"}
        return JSONResponse(job_view(job, self._files_base(request)), status_code=201,
                            headers=headers)

    async def get(self, request: Request) -> Response:
        job = await own_job(self._auth, self._store, request)
        job = await run_in_threadpool(self._runner.refresh, job)
        return JSONResponse(job_view(job, self._files_base(request)))

    async def list_jobs(self, request: Request) -> Response:
        user = self._auth.require(request)
        page, count = page_params(request)
        jobs = await run_in_threadpool(self._fresh_jobs, user)
        base = self._files_base(request)
        return page_response("jobs", [job_view(j, base) for j in jobs], page, count)

    def _fresh_jobs(self, user: str) -> list[Job]:
        return [self._runner.refresh(job) for job in self._store.for_user(user)]

    async def delete(self, request: Request) -> Response:
        job = await own_job(self._auth, self._store, request)
        await run_in_threadpool(self._store.delete, job.id)
        await run_in_threadpool(self._runner.discard, job.id)
        return Response(status_code=204)
