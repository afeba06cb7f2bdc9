"""A seeded, bounded HTTP/1.1 fault-injection proxy for the fault and soak tests.

flowfs talks to it as its ``--api-url`` (``<proxy>/api``) and ``--files-url`` (``<proxy>``);
it forwards every request to the reference server and, with a per-request probability,
answers with a fault instead. Run it as a subprocess::

    python tests/faults/proxy.py --upstream http://127.0.0.1:8000 --port 0 \\
        --ready-file ready.json --faults 'files:cut=0.2,stall=0.05;api:503=0.3' --seed 7

Fault spec: ``;``-separated groups ``SCOPE:KIND=P[,KIND=P...]``. SCOPE is ``files``
(paths under ``/downloads/``), ``api`` (paths under ``/api/``) or ``all``, optionally for
one method only: ``api@POST:cut=1;max:1`` cuts the reply to the first API ``POST``. ``off`` or an
empty spec injects nothing. A group ``max:N`` stops injecting after N faults (until the spec
is replaced), e.g. ``api:stall=1;max:1`` stalls exactly one API request; ``first:N`` makes
the first N requests of each faulted scope faulty for sure (a seeded draw over a handful of
requests can otherwise come up empty). ``--delay S`` holds every request S seconds before
serving it, faulted or not: a server across the internet. KINDs (P is
the probability per request, the first KIND
drawn wins):

- ``reset``    the connection is reset (RST) before any reply
- ``503``/``500``/``502``/``504``  that status with a small JSON body
- ``429``      429 with ``Retry-After: 1``
- ``stall``    no answer at all, until the client gives up (at most ``--stall-max`` s)
- ``cut``      the reply's head and half its body, then a reset
- ``short``    a correct Content-Length, all but the last bytes of the body, then a clean close
- ``trickle``  the real reply, its body at ``--trickle-rate`` bytes/s (until the client leaves)
- ``badrange`` a 206 whose Content-Range names other bytes of the same length
- ``html200``  an HTML error page with status 200, as a captive portal or broken proxy sends
- ``html502``  an HTML error page with status 502, as a load balancer sends

Faults that change a real reply (``cut short trickle badrange``) apply only to 2xx replies
with a body; other replies pass through untouched.

Control: ``GET /__proxy__/stats`` answers JSON counters (requests by scope, faults by kind,
paths); ``PUT /__proxy__/faults`` with a spec as the body replaces the faults and reseeds
(query ``?seed=N``); ``--faults-file F`` is re-read whenever its mtime changes (a missing
file means no faults). The ready file gets ``{"url": ..., "pid": ...}`` (write + rename).

Decisions come from one ``random.Random(seed)`` drawn once per request in arrival order, so
a run with one client is reproducible; with concurrent clients the arrival order varies.
Bounded: at most ``--max-connections`` client connections, request and reply heads of at
most 64 KiB, bodies streamed in 64 KiB pieces, every stall and trickle ends after
``--stall-max`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("faultproxy")

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
STATUS_KINDS = {"500", "502", "503", "504", "429"}
REPLY_KINDS = {"cut", "short", "trickle", "badrange"}
KINDS = STATUS_KINDS | REPLY_KINDS | {"reset", "stall", "html200", "html502"}
SCOPES = ("files", "api", "all")
_CONTENT_RANGE = re.compile(rb"^bytes (\d+)-(\d+)/(\d+|\*)$")
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>\n"
    b"<h1>Bad Gateway</h1>\n<p>The proxy server received an invalid response from an upstream"
    b" server. Please try again later.</p>\n"
    + b"<!-- padding so the page is as long as real error pages -->\n" * 30
    + b"</body></html>\n"
)


class SpecError(ValueError):
    """A fault spec that cannot be parsed."""


def parse_spec(spec: str) -> dict[str, list[tuple[str, float]]]:
    """'files:cut=0.2,stall=0.1;api:503=0.5' -> {"files": [("cut", 0.2), ...], ...}."""
    out: dict[str, list[tuple[str, float]]] = {}
    spec = spec.strip()
    if spec in ("", "off", "none"):
        return out
    for group in filter(None, (g.strip() for g in spec.split(";"))):
        scope, sep, body = group.partition(":")
        if scope in ("max", "first") and body.strip().isdigit():
            out[scope] = [(scope, float(body))]
            continue
        where, _, method = scope.partition("@")
        if not sep or where not in SCOPES or not (method.isalpha() or not method):
            raise SpecError(f"bad fault group {group!r}: want SCOPE[@METHOD]:KIND=P with "
                            f"SCOPE in {SCOPES}")
        scope = f"{where}@{method.upper()}" if method else where
        for item in filter(None, (i.strip() for i in body.split(","))):
            kind, sep, prob = item.partition("=")
            if not sep or kind not in KINDS:
                raise SpecError(f"bad fault {item!r}: kinds are {sorted(KINDS)}")
            try:
                p = float(prob)
            except ValueError:
                raise SpecError(f"bad probability in {item!r}") from None
            if not 0.0 <= p <= 1.0:
                raise SpecError(f"probability out of [0, 1] in {item!r}")
            out.setdefault(scope, []).append((kind, p))
    return out


def scope_of(path: str) -> str | None:
    if path.startswith("/downloads/"):
        return "files"
    if path.startswith("/api/") or path == "/api":
        return "api"
    return None


@dataclass
class Head:
    """A parsed HTTP/1.x message head (request or response)."""

    first: bytes
    headers: list[tuple[bytes, bytes]]

    def get(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def render(self, drop: tuple[bytes, ...] = (), add: tuple[tuple[bytes, bytes], ...] = ()
               ) -> bytes:
        lines = [self.first]
        lines += [k + b": " + v for k, v in self.headers if k.lower() not in drop]
        lines += [k + b": " + v for k, v in add]
        return b"\r\n".join(lines) + b"\r\n\r\n"


class Closed(Exception):
    """The peer closed the connection (or sent something we cannot frame)."""


async def read_head(reader: asyncio.StreamReader) -> Head:
    """One message head (what follows it stays in the reader)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Closed("closed before a complete head") from exc
    except asyncio.LimitOverrunError as exc:
        raise Closed("head too large") from exc
    lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise Closed("malformed header line")
        headers.append((name.strip(), value.strip()))
    return Head(lines[0], headers)


@dataclass
class Faults:
    """The active spec, its random source and the counters; shared by all connections."""

    spec: dict[str, list[tuple[str, float]]]
    seed: int
    faults_file: Path | None = None
    # One stream of draws per scope, so that API traffic (background listings, say) never
    # changes which file requests a seed makes faulty, and the other way round.
    rngs: dict[str | None, random.Random] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    _file_mtime: float | None = None
    drawn: int = 0  # faults chosen since the spec was set
    faulted: Counter[str] = field(default_factory=Counter)  # per scope, since the spec was set

    def replace(self, spec: str, seed: int | None = None) -> None:
        self.spec = parse_spec(spec)
        self.drawn = 0
        self.faulted.clear()
        if seed is not None:
            self.seed = seed
        self.rngs.clear()

    def _reload(self) -> None:
        if self.faults_file is None:
            return
        try:
            mtime = self.faults_file.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._file_mtime:
            return
        self._file_mtime = mtime
        text = "" if mtime is None else self.faults_file.read_text()
        try:
            self.replace(text)
        except SpecError as exc:
            log.warning("ignoring faults file: %s", exc)

    def choose(self, path: str, method: str = "GET") -> str | None:
        """The fault for one request (or None); one random draw per request."""
        self._reload()
        scope = scope_of(path)
        self.stats[f"requests.{scope}"] += 1
        if scope == "api":
            self.stats["path." + "/".join(path.split("/")[:3])] += 1
        rng = self.rngs.get(scope)
        if rng is None:
            rng = self.rngs[scope] = random.Random(f"{self.seed}:{scope}")
        draw = rng.random()
        limit = self.spec.get("max")
        if scope is None or (limit and self.drawn >= limit[0][1]):
            return None
        kinds = [(kind, p) for group in ("all", scope, f"all@{method}", f"{scope}@{method}")
                 for kind, p in self.spec.get(group, [])]
        first = self.spec.get("first")
        if kinds and first and self.faulted[scope] < first[0][1]:
            draw = 0.0  # `first:N`: the first N requests of each faulted scope, for sure
        acc = 0.0
        for kind, p in kinds:
            acc += p
            if draw < acc:
                self.drawn += 1
                self.faulted[scope] += 1
                return kind
        return None


@dataclass
class Config:
    upstream_host: str
    upstream_port: int
    stall_max: float = 30.0
    trickle_rate: int = 16 * 1024
    max_connections: int = 256
    delay: float = 0.0  # seconds each request waits before it is served: a distant server


class Proxy:
    """Accepts client connections; each runs a keep-alive loop of request -> reply."""

    def __init__(self, config: Config, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        self._slots = asyncio.Semaphore(config.max_connections)

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        async with self._slots:
            try:
                while await self._one_request(reader, writer):
                    pass
            except (Closed, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                pass
            finally:
                writer.close()

    async def _one_request(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must close."""
        head = await read_head(reader)
        parts = head.first.split(b" ")
        if len(parts) != 3:
            raise Closed("bad request line")
        method, target = parts[0], parts[1].decode("latin-1")
        length = int(head.get(b"content-length") or b"0")
        body = await reader.readexactly(length) if length else b""
        path = urlsplit(target).path
        if path.startswith("/__proxy__/"):
            await self._control(writer, method, target, body)
            return True
        if self.config.delay:
            await asyncio.sleep(self.config.delay)
        kind = self.faults.choose(path, method.decode("latin-1"))
        if kind is not None and kind not in REPLY_KINDS:
            self.faults.stats[f"fault.{kind}"] += 1
            return await self._synthetic(kind, reader, writer)
        keep = (head.get(b"connection") or b"").lower() != b"close"
        return await self._forward(head, body, kind, writer) and keep

    # -- replies made up by the proxy ---------------------------------------------------
    async def _synthetic(self, kind: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bool:
        if kind == "reset":
            abort(writer)
            return False
        if kind == "stall":
            # Never answer; wait until the client gives up (EOF) or the bound is reached.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), self.config.stall_max)
            return False
        if kind in STATUS_KINDS:
            body = json.dumps({"error": f"injected {kind}", "status": int(kind)}).encode()
            extra = [(b"Retry-After", b"1")] if kind == "429" else []
            await send(writer, int(kind), b"application/json", body, extra)
            return True
        status = 200 if kind == "html200" else 502
        await send(writer, status, b"text/html; charset=utf-8", HTML_PAGE, [])
        return True

    # -- real replies, possibly damaged ---------------------------------------------------
    async def _forward(self, head: Head, body: bytes, kind: str | None,
                       writer: asyncio.StreamWriter) -> bool:
        """Pass the request upstream (its own connection, closed after the reply)."""
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.config.upstream_host, self.config.upstream_port, limit=MAX_HEAD)
        except OSError:
            await send(writer, 502, b"text/plain", b"upstream unreachable", [])
            return True
        try:
            up_writer.write(head.render(drop=(b"connection",), add=((b"Connection", b"close"),))
                            + body)
            await up_writer.drain()
            reply = await read_head(up_reader)
            return await self._relay(reply, up_reader, kind, writer)
        finally:
            up_writer.close()

    async def _relay(self, reply: Head, up: asyncio.StreamReader, kind: str | None,
                     writer: asyncio.StreamWriter) -> bool:
        status = int(reply.first.split(b" ")[1])
        length_raw = reply.get(b"content-length")
        length = int(length_raw) if length_raw and length_raw.isdigit() else None
        if kind is not None and not (200 <= status < 300 and length):
            kind = None  # nothing to damage: let it through
        if kind == "badrange" and (status != 206 or not _shift_range(reply)):
            kind = None
        if kind is not None:
            self.faults.stats[f"fault.{kind}"] += 1
        keep = length is not None or reply.get(b"transfer-encoding") is not None
        add = () if keep else ((b"Connection", b"close"),)
        writer.write(reply.render(drop=(b"connection",), add=add))
        limit = None
        if kind == "cut":
            limit = (length or 0) // 2
        elif kind == "short":
            limit = max(0, (length or 0) - max(1, (length or 0) // 100))
        sent = await self._pipe(up, writer, limit, kind == "trickle")
        if kind == "cut":
            abort(writer)
            return False
        if kind in ("short", "trickle") or sent < 0:
            await close(writer)
            return False
        return keep

    async def _pipe(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    limit: int | None, trickle: bool) -> int:
        """Copy the upstream body to the client; the count sent, -1 when cut short."""
        sent = 0
        piece = max(1, self.config.trickle_rate // 10) if trickle else CHUNK
        deadline = time.monotonic() + self.config.stall_max
        while limit is None or sent < limit:
            want = piece if limit is None else min(piece, limit - sent)
            data = await up.read(want)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if trickle:
                if time.monotonic() > deadline:
                    return -1
                await asyncio.sleep(0.1)
        return sent

    # -- control --------------------------------------------------------------------------
    async def _control(self, writer: asyncio.StreamWriter, method: bytes, target: str,
                       body: bytes) -> None:
        url = urlsplit(target)
        if url.path == "/__proxy__/stats" and method == b"GET":
            await send(writer, 200, b"application/json",
                       json.dumps(dict(self.faults.stats)).encode(), [])
        elif url.path == "/__proxy__/faults" and method == b"PUT":
            seed = parse_qs(url.query).get("seed", [None])[0]
            try:
                self.faults.replace(body.decode(), None if seed is None else int(seed))
            except (SpecError, ValueError) as exc:
                await send(writer, 400, b"text/plain", str(exc).encode(), [])
                return
            await send(writer, 204, b"text/plain", b"", [])
        else:
            await send(writer, 404, b"text/plain", b"unknown control endpoint", [])


def _shift_range(reply: Head) -> bool:
    """Make a 206's Content-Range name other bytes of the same length (in place)."""
    for i, (name, value) in enumerate(reply.headers):
        if name.lower() != b"content-range":
            continue
        m = _CONTENT_RANGE.match(value)
        if not m:
            return False
        a, b, total = int(m.group(1)), int(m.group(2)), m.group(3)
        shift = 1 + (a + b) % 4096
        if a >= shift:
            shift = -shift  # stay inside the file: a plausible range, just not ours
        new = b"bytes %d-%d/%s" % (a + shift, b + shift, total)
        reply.headers[i] = (name, new)
        return True
    return False


async def send(writer: asyncio.StreamWriter, status: int, ctype: bytes, body: bytes,
               extra: list[tuple[bytes, bytes]]) -> None:
    head = [b"HTTP/1.1 %d Injected" % status, b"Content-Type: " + ctype,
            b"Content-Length: %d" % len(body)] + [k + b": " + v for k, v in extra]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset rather than a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def write_ready(path: Path, url: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    tmp.rename(path)


async def run(args: argparse.Namespace) -> None:
    up = urlsplit(args.upstream)
    config = Config(up.hostname or "127.0.0.1", up.port or 80, args.stall_max,
                    args.trickle_rate, args.max_connections, args.delay)
    faults = Faults(parse_spec(args.faults), args.seed,
                    Path(args.faults_file) if args.faults_file else None)
    proxy = Proxy(config, faults)
    server = await asyncio.start_server(proxy.serve_client, args.host, args.port,
                                        limit=MAX_HEAD)
    port = server.sockets[0].getsockname()[1]
    url = f"http://{args.host}:{port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if args.ready_file:
            write_ready(Path(args.ready_file), url)
        print(f"Proxy: {url} -> {args.upstream}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="HTTP fault-injection proxy for flowfs tests")
    p.add_argument("--upstream", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ready-file")
    p.add_argument("--faults", default="off", help="fault spec (see the module docstring)")
    p.add_argument("--faults-file", help="a file holding the spec, re-read when it changes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stall-max", type=float, default=30.0, help="longest stall or trickle, s")
    p.add_argument("--trickle-rate", type=int, default=16 * 1024, help="bytes/s of a trickle")
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--delay", type=float, default=0.0,
                   help="seconds every request waits before it is served (a distant server)")
    args = p.parse_args(argv)
    try:
        parse_spec(args.faults)
    except SpecError as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
