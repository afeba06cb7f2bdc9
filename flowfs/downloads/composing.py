"""Manifests and drafts being written in `.downloads/`: their bytes, their one writer,
and the memory budget they share.

A manifest lives in the daemon's memory from its first write until it is submitted,
refused or removed; a hostile or careless user can write many at once, so every
byte is charged to one budget (``MANIFEST_SPACE``) before a buffer grows. What the
lines checked so far name (``Found``) is kept beside them, bounded by what one job
may hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio

from flowfs.errors import Busy, NoSpace, NotFound, TooBig
from flowfs.manifest import MAX_MANIFEST_BYTES
from flowfs.nodes import DirNode, Owner, TextFile

MANIFEST_SPACE = 64 * 2**20  # bytes of every manifest and draft being written, together
MAX_JOB_FILES = 10_000  # the most files one job may hold on Flow
CHECKPOINT_EVERY = 256  # files or lines checked between two yields to other requests


class ManifestSpace:
    """The bytes held by every manifest and draft being written, against one budget.

    Without it, thirty 10 MiB manifests cost 300 MiB outside ``--cache-size``.
    """

    def __init__(self, limit: int = MANIFEST_SPACE) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        """Account for ``n`` more bytes (fewer if negative); NoSpace if they do not fit."""
        if n > 0 and self.used + n > self.limit:
            raise NoSpace(f"the manifests and drafts being written already hold "
                          f"{self.used:,} bytes of the {self.limit:,} this mount sets aside "
                          "for them: finish or remove some")
        self.used += n


@dataclass
class Found:
    """What the lines checked so far name: data ids in order, walked directories."""

    ids: dict[str, None] = field(default_factory=dict)
    walked: dict[DirNode, int] = field(default_factory=dict)  # files below each
    steps: int = 0

    async def step(self) -> None:
        """Count one unit of work; yield to other requests every CHECKPOINT_EVERY.

        Listings already cached are walked without any await: without this, checking
        4,000 lines that each name a 20,000-file directory held the whole mount.
        """
        self.steps += 1
        if self.steps % CHECKPOINT_EVERY == 0:
            await trio.lowlevel.checkpoint()

    @property
    def too_many(self) -> bool:
        return len(self.ids) > MAX_JOB_FILES


class ManifestFile(TextFile):
    """A manifest (``stem`` set) or a draft (``stem`` None) being written, in memory.

    At most one open file writes it at a time (``writer``): its close reports what
    became of its own bytes. Another open for writing meanwhile is EBUSY; without
    that, eight writers of one name saw close() succeed while one of them truncated
    the others' lines away.
    """

    mode = 0o644
    volatile = True
    direct_io = True  # every read and write comes to us: its bytes change as it is written
    live = True

    def __init__(self, tree: Owner, name: str, stem: str | None, space: ManifestSpace) -> None:
        super().__init__(tree, b"", time.time())
        self.name = name
        self.stem = stem
        self.space = space
        self.buffer = bytearray()
        self.writer: object | None = None  # the open file writing it, if any
        self.checked = 0  # bytes [0, checked) are complete lines checked while written
        self.lines = 0  # complete lines in them
        self.unordered = False  # written out of order: checked only as a whole, on close
        self.found = Found()  # what the checked lines name
        # Lines refused while being written: the manifest can no longer be submitted
        # as it is (a job from the remaining lines would silently miss them).
        self.problems: list[tuple[int, str]] = []
        self.dropped_lines = 0
        self.refused: tuple[int, bytes] | None = None  # the last refused write
        # Two stages of submission: one under way (claimed before its first await, so no
        # second starts), and done (Flow made the job; the manifest is gone for good).
        self.being_submitted = False
        self.job_made = False
        self.removed = False
        self.posted: dict[str, Any] | None = None  # asked for, unanswered, content unchanged

    @property
    def content(self) -> bytes:
        return bytes(self.buffer)

    @property
    def size(self) -> int:
        return len(self.buffer)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.buffer[offset:offset + size])

    def acquire(self, writer: object) -> None:
        """Make ``writer`` the one open file that writes this manifest (EBUSY if taken)."""
        if self.removed or self.job_made:
            raise NotFound(f"{self.name} is gone: it was removed or submitted")
        if self.being_submitted or (self.writer is not None and self.writer is not writer):
            raise Busy(f"{self.name} is being written or submitted by another open file")
        self.writer = writer

    def release(self, writer: object) -> bool:
        """``writer`` is done; whether it was the one writing (then its close submits)."""
        if self.writer is not writer:
            return False
        self.writer = None
        return True

    def _resize(self, size: int) -> None:
        self.space.take(size - len(self.buffer))
        if size > len(self.buffer):
            self.buffer.extend(bytes(size - len(self.buffer)))
        else:
            del self.buffer[size:]

    def store(self, offset: int, data: bytes) -> int:
        end = offset + len(data)
        if end > MAX_MANIFEST_BYTES:
            raise TooBig(f"larger than {MAX_MANIFEST_BYTES:,} bytes: split it")
        if end > len(self.buffer):
            self._resize(end)
        self.buffer[offset:end] = data
        self.posted = None  # other content: any job a lost reply made is not this one
        self.mtime = time.time()
        return len(data)

    def truncate(self, size: int) -> None:
        if self.removed or self.job_made:  # its memory was given back for good
            raise NotFound(f"{self.name} is gone: it was removed or submitted")
        if size > MAX_MANIFEST_BYTES:
            raise TooBig(f"larger than {MAX_MANIFEST_BYTES:,} bytes: split it")
        if size != len(self.buffer):
            self.unordered = self.unordered or size != 0
            self._resize(size)
            self.posted = None
        self.checked = min(self.checked, size)
        if size == 0:  # a fresh start
            self.problems, self.dropped_lines, self.refused = [], 0, None
            self.checked, self.lines, self.unordered, self.found = 0, 0, False, Found()
        self.mtime = time.time()

    def empty(self) -> None:
        """Give its bytes back (refused, submitted or removed); ``problems`` stay."""
        self.space.take(-len(self.buffer))
        self.buffer = bytearray()
        self.checked, self.lines, self.found = 0, 0, Found()
        self.mtime = time.time()
