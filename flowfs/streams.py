"""What the reader keeps per open file and per request in flight (owner: :mod:`flowfs.reader`).

A :class:`Stream` is one file handle's read state: its target, its access pattern
(:mod:`flowfs.readahead`), its read-ahead requests in flight and the blocks whose read
timed out a moment ago. A :class:`Request` is one Range request for a run of blocks,
and each of its blocks has a :class:`Pending` entry, the single-flight point where readers
wait. Only the :class:`~flowfs.reader.Reader` changes them, under the concurrency rules
written down in :mod:`flowfs.reader` (cited here by their numbers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from flowfs.errors import FlowError
from flowfs.link import StreamLimits
from flowfs.readahead import AccessPattern, Policy

RETRY_GRACE = 1.0  # seconds a timed-out block fails at once (rule 7)


class Target(Protocol):
    """What is being read; callers pass their own objects."""

    @property
    def cache_key(self) -> str:
        """Identity of the bytes (e.g. the data id): bytes under one key never change."""
        ...

    @property
    def size(self) -> int:
        """Exact file size in bytes."""
        ...

class Pending:
    """One block being fetched; resolved exactly once (data or error), then its event set.

    Registered, settled and unregistered by the reader (rules 2 to 5); ``waiters`` counts
    the reads waiting on it, so that closing a stream spares read-ahead others need.
    """

    __slots__ = ("event", "data", "error", "waiters")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.data: bytes | None = None
        self.error: FlowError | None = None
        self.waiters = 0


@dataclass(eq=False)
class Request:
    """One Range request: a run of consecutive blocks of one target."""

    target: Target
    blocks: range
    pendings: list[Pending]
    start: int  # the bytes [start, end) of the blocks
    end: int
    stream: Stream | None  # the owner for read-ahead; None for a demand fetch
    lead: int = 0  # read-ahead: the first block of the window it is part of
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    released: bool = False  # its read-ahead bytes given back to the budget (rule 6)
    finishing: bool = False  # left to land after its stream closed (Reader.close)

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    def has_waiters(self) -> bool:
        return any(pending.waiters for pending in self.pendings)


class Stream:
    """Per-file-handle read state: its target, its access pattern, its read-ahead in flight."""

    def __init__(self, target: Target, policy: Policy, limits: StreamLimits) -> None:
        self.target = target
        self.pattern = AccessPattern(policy)
        self.readahead: set[Request] = set()
        self.closed = False
        self.limits = limits  # as of the last read (the link and the sharing change)
        self.timeouts: dict[int, tuple[float, FlowError]] = {}  # block -> when, what (rule 7)

    def recent_timeout(self, blocks: Iterable[int], now: float) -> FlowError | None:
        """The error of a block of ``blocks`` whose read timed out within RETRY_GRACE."""
        self.timeouts = {b: t for b, t in self.timeouts.items() if now - t[0] < RETRY_GRACE}
        for index in blocks:
            if index in self.timeouts:
                return self.timeouts[index][1]
        return None

    def __repr__(self) -> str:
        return f"<Stream {self.target.cache_key} window={self.pattern.window}>"
