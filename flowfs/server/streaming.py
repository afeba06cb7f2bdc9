"""Streaming a byte range of a file to an ASGI client, fast and in bounded memory.

Bytes are read with ``os.pread`` in a dedicated thread pool, one chunk ahead of
the one being sent (so disk and socket overlap), and never more than two chunks
per response are held.  Slices of at most ``INLINE_READ`` bytes are read on the
event loop instead: for them the thread hop would cost more than the read.  A
client that goes away stops the stream at the next chunk instead of reading the
rest of a 10 GiB file for nobody.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
from pathlib import Path
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from flowfs.server.errors import ApiError
from flowfs.server.ranges import Slice, Validators
from flowfs.server.safenames import safe_component

log = logging.getLogger(__name__)

CHUNK = 4 * 2**20
INLINE_READ = 256 * 2**10


class DiskReader:
    """The thread pool that reads file chunks for every response."""

    def __init__(self, threads: int = 32) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="pread")

    def read(self, fd: int, size: int, offset: int) -> concurrent.futures.Future[bytes]:
        """Start reading ``size`` bytes at ``offset``."""
        return self._pool.submit(os.pread, fd, size, offset)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_NOT_QUOTABLE = re.compile(r'[^\x20-\x7e]|["\\%]')


def disposition(filename: str) -> str:
    """``Content-Disposition`` for ``filename``, valid whatever the name holds (RFC 6266).

    The name is first made safe as in archives (no controls, separators or bidi
    overrides to trick whoever saves it); ``filename=`` is its printable-ASCII
    form, and a name that is not plain ASCII also gets ``filename*=UTF-8''...``
    (RFC 8187), percent-encoded, which clients prefer.
    """
    safe = safe_component(filename)
    fallback = _NOT_QUOTABLE.sub("_", safe)
    value = f'attachment; filename="{fallback}"'
    if fallback != safe:
        value += f"; filename*=UTF-8''{quote(safe, safe='')}"
    return value


class FileSliceResponse:
    """An ASGI response: 200 or 206 with ``part`` of the ``size``-byte file at ``path``."""

    def __init__(self, path: Path, size: int, part: Slice, validators: Validators,
                 reader: DiskReader, *, content_type: str = "application/octet-stream",
                 filename: str | None = None) -> None:
        self._path = path
        self._part = part
        self._reader = reader
        self._disconnected = False
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(part.length).encode()),
            (b"accept-ranges", b"bytes"),
            (b"etag", validators.etag.encode()),
            (b"last-modified", validators.last_modified.encode()),
        ]
        if part.partial:
            last = part.start + part.length - 1
            headers.append((b"content-range", f"bytes {part.start}-{last}/{size}".encode()))
        if filename is not None:
            headers.append((b"content-disposition", disposition(filename).encode("ascii")))
        self._start = {"type": "http.response.start", "status": 206 if part.partial else 200,
                       "headers": headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot open %s: %s", self._path, exc.strerror)
            await ApiError(500, "File unavailable on the server").response()(scope, receive, send)
            return
        try:
            await send(self._start)
            if scope["method"] == "HEAD" or self._part.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif self._part.length <= INLINE_READ:
                await self._send_small(fd, send)
            else:
                await self._stream(fd, receive, send)
        finally:
            os.close(fd)

    async def _send_small(self, fd: int, send: Send) -> None:
        # A thread hop costs more than reading a small slice from the page cache;
        # random access (index lookups, BAM regions) is made of such reads.
        body = os.pread(fd, self._part.length, self._part.start)
        if len(body) != self._part.length:
            log.warning("%s is shorter than expected; response cut", self._path)
            return
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._disconnected = True

    async def _stream(self, fd: int, receive: Receive, send: Send) -> None:
        offset, remaining = self._part.start, self._part.length
        watcher = None
        if remaining > CHUNK:
            watcher = asyncio.get_running_loop().create_task(self._watch(receive))
        pending: concurrent.futures.Future[bytes] | None = self._reader.read(
            fd, min(CHUNK, remaining), offset)
        try:
            while pending is not None:
                chunk = await asyncio.wrap_future(pending)
                pending = None
                if not chunk:
                    log.warning("%s is shorter than expected; response cut", self._path)
                    return
                offset += len(chunk)
                remaining -= len(chunk)
                if remaining > 0 and not self._disconnected:
                    pending = self._reader.read(fd, min(CHUNK, remaining), offset)
                await send({"type": "http.response.body", "body": chunk,
                            "more_body": remaining > 0})
        finally:
            if watcher is not None:
                watcher.cancel()
            if pending is not None:
                # The fd is closed right after: never while a thread still reads it.
                concurrent.futures.wait([pending])
