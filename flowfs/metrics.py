"""The mount's counters in Prometheus's text exposition format, as a file and over HTTP.

``exposition`` turns the stats document (``stats.MountState.snapshot``) into
the text format (version 0.0.4): one ``# HELP`` and one ``# TYPE`` line per
metric, counters named ``…_total``. Every sample carries a ``mountpoint`` label,
so the files of several mounts can sit in one textfile-collector directory
without their series colliding.

``serve`` answers ``GET /metrics`` on ``--metrics-addr``: one short-lived
connection at a time per slot, a bounded request head, a deadline on each
connection, so a scraper (or anyone else on the host) cannot hold the daemon's
resources.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from flowfs.config import parse_addr
from flowfs.errors import ConfigError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Metric:
    """One metric: its name, type, help text and where its value is in the stats document."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    path: tuple[str, ...]
    scale: float = 1.0


METRICS: tuple[Metric, ...] = (
    Metric("flowfs_uptime_seconds", "gauge", "Seconds since the mount started.", ("uptime",)),
    Metric("flowfs_cache_hits_total", "counter", "Blocks read from the block cache.",
           ("cache", "hits")),
    Metric("flowfs_cache_misses_total", "counter", "Blocks that had to be fetched.",
           ("cache", "misses")),
    Metric("flowfs_cache_bytes", "gauge", "Bytes held in the block cache.",
           ("cache", "cached_bytes")),
    Metric("flowfs_cache_size_bytes", "gauge", "The block cache's budget (--cache-size).",
           ("cache_size",)),
    Metric("flowfs_fetches_total", "counter", "Range requests made for file contents.",
           ("cache", "fetches")),
    Metric("flowfs_fetch_errors_total", "counter",
           "Range requests that failed after their retries.", ("cache", "fetch_errors")),
    Metric("flowfs_read_timeouts_total", "counter",
           "Reads that failed with EIO at their deadline (--io-timeout).", ("cache", "timeouts")),
    Metric("flowfs_fetched_bytes_total", "counter", "Bytes received from the files server.",
           ("api", "bytes_fetched")),
    Metric("flowfs_api_requests_total", "counter", "HTTP requests made to Flow.",
           ("api", "requests")),
    Metric("flowfs_failures_total", "counter",
           "Requests answered with EIO or EACCES (see 'flowfs status').", ("failures", "count")),
    Metric("flowfs_last_failure_timestamp_seconds", "gauge",
           "When the last failure happened (seconds since the epoch).",
           ("failures", "last", "at")),
    Metric("flowfs_inodes", "gauge", "Inodes the mount holds.", ("inodes",)),
    Metric("flowfs_downloads_jobs", "gauge", "Bulk download jobs in .downloads/.",
           ("downloads", "jobs")),
    Metric("flowfs_downloads_active", "gauge", "Bulk download jobs still running.",
           ("downloads", "active")),
    Metric("flowfs_link_latency_seconds", "gauge",
           "Average time to the first byte of a reply from the files server.",
           ("link", "latency_ms"), 1e-3),
    Metric("flowfs_link_rate_bytes_per_second", "gauge",
           "Average rate of one reply's body from the files server.",
           ("link", "rate_mib_s"), MiB),
    Metric("flowfs_link_samples_total", "counter", "Replies the link estimate is made from.",
           ("link", "samples")),
)


def _value(doc: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    if isinstance(doc, bool) or not isinstance(doc, int | float):
        return None
    return float(doc)


def label(value: str) -> str:
    """A label value, escaped as the format requires (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def exposition(stats: dict[str, Any]) -> str:
    """The stats document as Prometheus text; a value the document lacks is left out."""
    labels = f'mountpoint="{label(str(stats.get("mountpoint", "")))}"'
    lines = ["# HELP flowfs_info The flowfs version serving a mount.",
             "# TYPE flowfs_info gauge",
             f'flowfs_info{{{labels},version="{label(str(stats.get("version", "")))}"}} 1']
    for metric in METRICS:
        value = _value(stats, metric.path)
        if value is None:
            continue
        lines += [f"# HELP {metric.name} {metric.help}",
                  f"# TYPE {metric.name} {metric.kind}",
                  f"{metric.name}{{{labels}}} {_number(value * metric.scale)}"]
    by_error = (stats.get("failures") or {}).get("by_error") or {}
    lines += ["# HELP flowfs_failures_by_error_total Failures by the errno they answered.",
              "# TYPE flowfs_failures_by_error_total counter"]
    for name, count in sorted(by_error.items()):
        lines.append(f'flowfs_failures_by_error_total{{{labels},errno="{label(str(name))}"}} '
                     f"{_number(float(count))}")
    return "\n".join(lines) + "\n"


# -- over HTTP ---------------------------------------------------------------------------

MAX_HEAD = 8192
CONNECTION_DEADLINE = 5.0
CONNECTIONS = 4


async def listen(addr: str) -> list[trio.SocketListener]:
    """Bind ``addr`` now, so a port in use fails the mount with a message, not later."""
    host, port = parse_addr(addr)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(f"--metrics-addr {addr}: cannot listen: {exc.strerror}") from None


def _reply(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def answer(head: bytes, render: Callable[[], str]) -> bytes:
    """The reply to one request head (pure, so it is tested without sockets)."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _reply("400 Bad Request", b"bad request\n")
    method, target = parts[0], parts[1].split("?", 1)[0]
    if target != "/metrics":
        return _reply("404 Not Found", b"only /metrics here\n")
    if method not in ("GET", "HEAD"):
        return _reply("405 Method Not Allowed", b"GET /metrics\n")
    reply = _reply("200 OK", render().encode(), CONTENT_TYPE)
    return reply if method == "GET" else reply[:reply.index(b"\r\n\r\n") + 4]


async def _handle(stream: trio.SocketStream, render: Callable[[], str],
                  slots: trio.Semaphore) -> None:
    async with stream:
        if slots.value == 0:  # all slots busy: refuse rather than queue
            await stream.send_all(_reply("503 Service Unavailable", b"busy\n"))
            return
        async with slots:
            with trio.move_on_after(CONNECTION_DEADLINE):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = await stream.receive_some(MAX_HEAD)
                    if not chunk:
                        return
                    head += chunk
                    if len(head) > MAX_HEAD:
                        await stream.send_all(_reply("431 Request Header Fields Too Large",
                                                     b"too large\n"))
                        return
                await stream.send_all(answer(head, render))


async def serve(listeners: list[trio.SocketListener], render: Callable[[], str]) -> None:
    """Answer scrapes until cancelled."""
    slots = trio.Semaphore(CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _handle(stream, render, slots)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("metrics connection: %s", exc)

    await trio.serve_listeners(handler, listeners)
