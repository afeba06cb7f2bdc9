"""The files server: data downloads, execution outputs and finished bulk archives.

``GET|HEAD /downloads/<data id>/<filename>``, ``GET|HEAD
{api}/executions/<id>/<output path>`` and ``GET|HEAD /downloads/<job id>``,
all with the same single-range rules (see :mod:`flowfs.server.ranges`).
Refusals: 404 for what does not exist, 401 for an anonymous caller and 403
for a caller without permission (as Flow's download guide has it).
"""

from __future__ import annotations

import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from flowfs.server.access import Access
from flowfs.server.auth import Authenticator
from flowfs.server.catalog import Catalog, DataFile
from flowfs.server.downloads_api import own_job
from flowfs.server.errors import ApiError, not_found, unauthenticated
from flowfs.server.jobs import COMPLETED, EXPIRED, FAILED, JobStore
from flowfs.server.ranges import Unsatisfiable, Validators, choose_slice, etag_for
from flowfs.server.streaming import DiskReader, FileSliceResponse
from flowfs.server.workers import JobRunner


def _respond(request: Request, path: Path, size: int, validators: Validators,
             reader: DiskReader, content_type: str, filename: str) -> FileSliceResponse:
    try:
        part = choose_slice(size, request.headers.get("range"), request.headers.get("if-range"),
                            validators)
    except Unsatisfiable:
        raise ApiError(416, "Requested range not satisfiable",
                       headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes",
                                "ETag": validators.etag}) from None
    return FileSliceResponse(path, size, part, validators, reader,
                             content_type=content_type, filename=filename)


class FileServer:
    """Download endpoints over the catalog's files and the jobs' archives."""

    def __init__(self, catalog: Catalog, access: Access, auth: Authenticator,
                 store: JobStore, runner: JobRunner, reader: DiskReader) -> None:
        self._catalog = catalog
        self._access = access
        self._auth = auth
        self._store = store
        self._runner = runner
        self._reader = reader

    def routes(self) -> list[Route]:
        """Routes at the root of the files server."""
        return [
            Route("/downloads/{ident}/{filename}", self.data_file, methods=["GET", "HEAD"]),
            Route("/downloads/{job_id}", self.job_archive, methods=["GET", "HEAD"]),
        ]

    def api_routes(self) -> list[Route]:
        """Routes under the API prefix (after the catalog's own ``/executions`` routes)."""
        return [Route("/executions/{ident}/{output:path}", self.execution_output,
                      methods=["GET", "HEAD"])]

    def _permitted(self, request: Request, item: DataFile) -> DataFile:
        user = self._auth.identify(request)
        if self._access.can_read(user, item):
            return item
        if user is None:
            raise unauthenticated()
        raise ApiError(403, "You do not have permission to download this file")

    def _send(self, request: Request, item: DataFile) -> FileSliceResponse:
        validators = Validators(etag_for(item.mtime_ns, item.size), item.mtime_ns // 10**9)
        return _respond(request, item.path, item.size, validators, self._reader,
                        "application/octet-stream", item.filename)

    async def data_file(self, request: Request) -> FileSliceResponse:
        item = self._catalog.data.get(request.path_params["ident"])
        if item is None or item.filename != request.path_params["filename"]:
            raise not_found("Data not found")
        return self._send(request, self._permitted(request, item))

    async def execution_output(self, request: Request) -> FileSliceResponse:
        key = (request.path_params["ident"], request.path_params["output"].strip("/"))
        item = self._catalog.outputs.get(key)
        if item is None:
            raise not_found("Execution output not found")
        return self._send(request, self._permitted(request, item))

    async def job_archive(self, request: Request) -> FileSliceResponse:
        job = await own_job(self._auth, self._store, request)
        job = await run_in_threadpool(self._runner.refresh, job)
        if job.status == EXPIRED:
            raise ApiError(410, "This download has expired")
        if job.status == FAILED:
            raise ApiError(409, f"This download failed: {job.error}", code="NOT_READY")
        if job.status != COMPLETED or job.size is None:
            raise ApiError(409, "This download is not ready yet", code="NOT_READY",
                           extra={"job_status": job.status, "progress": job.progress})
        finished = int(job.finished or time.time())
        validators = Validators(etag_for(job.id.replace("-", ""), job.size), finished)
        return _respond(request, self._runner.archive_path(job.id), job.size, validators,
                        self._reader, "application/zip", job.name)
