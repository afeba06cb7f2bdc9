"""What the fetch path has measured of the link, and what a sequential stream needs from it.

Pure code, no I/O. On loopback a reply starts within a millisecond and a few requests
in flight keep a reader busy; across the internet a reply starts tens of milliseconds
later and one connection carries tens of MB/s, so a stream needs many requests and
their bytes in flight at once: the bandwidth-delay product. Rather than a fixed
read-ahead sized for one of them, :class:`LinkEstimate` keeps moving averages of the
time to a reply's first byte (``latency``) and of one reply's body rate (``rate``),
and :func:`stream_limits` turns them into a stream's request size, window cap, number
of requests in flight and ramp speed, always within the memory budget it is given.

Random reads (BAM/CRAM/VCF index lookups) are untouched by all of this: they never
open a window, so they still cost one small request.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

MiB = 2**20
# A latency from which the link counts as distant: requests in flight, not their size,
# then decide throughput (loopback and a LAN stay well below it).
FAR = 0.005
# The window a distant link needs is this rate times one request's predicted duration
# (Little's law). Twice what one mount consumes at most (2 cores, TLS: ~1 GiB/s): a
# window also holds bytes landed and not yet read, and a freed request slot is refilled
# only when the reader reads on, so on average only two thirds of it is in flight (wan50,
# traced: 45 of 68 MiB at 1 GiB/s). 2 GiB/s read 1 GiB over wan50 15-20% faster than
# 1 GiB/s; 4 GiB/s reached past what the cache keeps (see ReaderConfig.readahead_budget).
TARGET_RATE = 2048 * MiB
# A far link's request size: a few round trips' worth at tens of MB/s per connection,
# and the chunk size the best-documented rclone settings use. Derived from the measured
# rate instead, it followed every burst of an emulated or congested link.
FAR_REQUEST = 4 * MiB
CONFIDENT = 4  # requests' worth read in one run before a far stream opens fully
CONFIDENT_FROM_START = 1  # the same for a run from a file's start: a whole-file reader
# Far: a random read's demand covers this much past its end. The kernel follows a small
# read with its own read-ahead of up to 128 KiB; where that crossed into the next block
# (half of samtools' region queries), it cost a second round trip.
FAR_MARGIN = 128 * 2**10
MIN_RATE = 1 * MiB  # below this a measured rate is taken as this (no division blow-up)
ALPHA = 0.25  # weight of a new observation in the rate's moving average
WINDOW = 32  # replies the latency is the minimum of


@dataclass
class LinkEstimate:
    """The link to the files server as its Range replies show it (before the first one,
    as the API's replies hint it: :meth:`hint`).

    ``latency`` is the least time to a reply's first byte among the last ``WINDOW``
    replies: a busy daemon, a loaded machine or a queue at the server only ever add to
    it (on loopback under load single replies took 5 to 40 ms, and an average called
    loopback distant), while the minimum stays the path's own delay, as TCP's min-RTT
    does. ``rate`` is a moving average of one reply's body rate.
    """

    rate: float = 0.0  # bytes per second of one reply's body, once it flows
    samples: int = 0
    _first_bytes: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    @classmethod
    def of(cls, latency: float, rate: float, samples: int = 1) -> LinkEstimate:
        """An estimate that has seen ``latency`` and ``rate`` (for tests and tools)."""
        est = cls(rate=rate, samples=samples)
        est._first_bytes.append(latency)
        est.latency = latency
        return est

    # The least of the window, kept as replies come: it is read on every FUSE read.
    latency: float = 0.0

    def observe(self, nbytes: int, first_byte: float, total: float) -> None:
        """One reply: ``nbytes`` of body, head after ``first_byte`` s, done after ``total`` s."""
        if first_byte < 0 or total < first_byte:
            return
        self._first_bytes.append(first_byte)
        self.latency = min(self._first_bytes)
        body = total - first_byte
        # Small bodies say little about the rate (they fit in what is already in flight).
        # The rate is one reply's bytes over its time after the head: with a request's
        # latency it predicts the duration of requests of that size, which is all it is
        # used for.
        if nbytes >= MiB and body > 0:
            self.rate = _average(self.rate, nbytes / body, self.samples)
        self.samples += 1

    def hint(self, head: float) -> None:
        """Another exchange with the servers (the API's) had its reply's head after
        ``head`` s: until a Range reply is timed, the least of these is the latency.

        A mount talks to the API before it reads any file, across the same internet, so
        its first file need not ramp as if the files were near; the first Range reply
        replaces the guess, whichever way it was wrong.
        """
        if self.samples == 0 and head > 0:
            self.latency = min(self.latency, head) if self.latency else head

    @property
    def far(self) -> bool:
        return self.latency >= FAR

    def as_json(self) -> dict[str, float | int]:
        return {"latency_ms": round(self.latency * 1000, 2),
                "rate_mib_s": round(self.rate / MiB, 1), "samples": self.samples}


@dataclass(frozen=True)
class StreamLimits:
    """What one sequential stream may have: sizes in blocks."""

    request_blocks: int  # the largest single Range request
    cap_blocks: int  # the read-ahead window's cap
    max_parallel: int  # read-ahead requests in flight at once
    growth: int  # the window's factor per step of the ramp
    initial_blocks: int = 1  # the window when a stream turns sequential
    confident_blocks: int = 0  # read sequentially this far, a stream goes to its cap (0: never)
    opening_blocks: int = 0  # read ahead of a handle's first read at offset 0 (0: none)
    margin: int = 0  # bytes past a random read's end that its demand covers too
    confident_start_blocks: int = 0  # as confident_blocks, for a run from a file's start


def stream_limits(link: LinkEstimate, *, block_size: int, max_request: int,
                  near_cap: int, share: int, near_parallel: int) -> StreamLimits:
    """Limits of one stream on ``link``, within ``share`` bytes of read-ahead.

    Near (loopback, LAN): the settings measured best there: ``max_request`` requests, a
    window of ``near_cap`` bytes, ``near_parallel`` requests, the window doubling. Far:
    ``FAR_REQUEST`` requests, a window that covers ``TARGET_RATE`` for one request's
    predicted duration (latency + size / rate: Little's law), as many requests in flight
    as that window holds, and a ramp four times as steep, since every step costs a round
    trip; the ramp starts at what one reply brings during one latency (at most one
    request: all a wrong guess of "sequential" can cost), and once a stream has read
    ``CONFIDENT`` requests' worth in one run (well past a BAM, VCF or CRAM region; from a
    file's start, ``CONFIDENT_FROM_START``: a whole-file reader) its window goes straight
    to the cap. A handle's first read, if it asks for half a block or more at offset 0,
    brings as much again beside it (``opening_blocks``): the rest of a small file comes
    in the same round trip (``head``'s first read is smaller). A random read's demand
    reaches ``FAR_MARGIN`` past its end. Never more than ``share``, and never less than
    the near settings.
    """
    def blocks(nbytes: float) -> int:
        return max(1, math.ceil(nbytes / block_size))

    share_blocks = blocks(share)
    near = min(blocks(near_cap), share_blocks)
    if not link.far:
        return StreamLimits(blocks(max_request), near, near_parallel, 2)
    request_blocks = blocks(min(FAR_REQUEST, max_request))
    rate = max(link.rate, MIN_RATE) if link.rate else 50 * MiB  # until a body was timed
    duration = link.latency + request_blocks * block_size / rate
    cap = min(max(blocks(TARGET_RATE * duration), near), share_blocks)
    parallel = max(near_parallel, math.ceil(cap / request_blocks))
    initial = min(blocks(rate * link.latency), request_blocks, cap)
    return StreamLimits(request_blocks, cap, min(parallel, 64), 4, initial,
                        CONFIDENT * request_blocks, initial, FAR_MARGIN,
                        CONFIDENT_FROM_START * request_blocks)


def _average(old: float, new: float, samples: int) -> float:
    return new if samples == 0 else old + ALPHA * (new - old)
