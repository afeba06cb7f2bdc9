"""HTTP Range and If-Range decisions (RFC 9110), as pure functions.

Only a single range is honoured.  Several ranges, a malformed header or a unit
other than ``bytes`` are ignored (the whole representation is sent with 200),
which RFC 9110 allows and every client must cope with anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

_SPEC_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies the bytes being served: a strong ETag and a modification time."""

    etag: str
    mtime: int

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime, usegmt=True)


@dataclass(frozen=True, slots=True)
class Slice:
    """What to send: ``length`` bytes from ``start``; ``partial`` means 206."""

    start: int
    length: int
    partial: bool


class Unsatisfiable(Exception):
    """A valid single range that selects no byte: 416 with ``bytes */size``."""


def etag_for(*parts: int | str) -> str:
    """A strong ETag built from stable parts (never from anything that changes per run)."""
    return '"' + "-".join(format(p, "x") if isinstance(p, int) else p for p in parts) + '"'


def _if_range_matches(if_range: str, validators: Validators) -> bool:
    value = if_range.strip()
    if value.startswith("W/"):
        return False  # a weak tag never matches for ranges
    if value.startswith('"'):
        return value == validators.etag
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return int(when.timestamp()) == validators.mtime


def choose_slice(size: int, range_header: str | None, if_range: str | None,
                 validators: Validators) -> Slice:
    """The part of a ``size``-byte representation to send; Unsatisfiable for a 416."""
    whole = Slice(0, size, False)
    if range_header is None:
        return whole
    if if_range is not None and not _if_range_matches(if_range, validators):
        return whole
    match = _SPEC_RE.match(range_header)
    if match is None:
        return whole  # several ranges, another unit, or garbage: ignore it
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return whole  # invalid range-spec: the header is ignored
        if start >= size:
            raise Unsatisfiable
        end = min(int(last), size - 1) if last else size - 1
        return Slice(start, end - start + 1, True)
    if not last:
        return whole  # "bytes=-" is not a range
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise Unsatisfiable
    length = min(suffix, size)
    return Slice(size - length, length, True)
