"""Turning API names into safe, unique, stable file names.

Rules (documented in docs/usage.md):
- `/`, NUL and control characters become `_`; `.`, `..` and the empty name
  get a leading `_`; names over 255 bytes are cut (keeping the extension).
- Collisions in one directory: the lowest id keeps the bare name, every other
  item gets `~<id>` before its extension (`reads~105.fastq.gz`). An item's
  name therefore depends only on its own id and the ids of its namesakes, so
  an item added later (higher id) never renames an existing one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_NAME_BYTES = 255
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/]")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".bgz")


def sanitize(name: str) -> str:
    """A single path component that any POSIX tool accepts."""
    safe = _UNSAFE.sub("_", name)
    if safe in ("", ".", ".."):
        safe = "_" + safe
    if len(safe.encode()) > MAX_NAME_BYTES:
        safe = _fit(safe, "")
    return safe


def split_ext(name: str) -> tuple[str, str]:
    """Split off the extension, keeping a compression suffix with it: x.fastq.gz -> x, .fastq.gz."""
    stem, ext = _split_one(name)
    if ext.lower() in _COMPRESSION and stem:
        stem2, ext2 = _split_one(stem)
        if ext2:
            return stem2, ext2 + ext
    return stem, ext


def _split_one(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:
        return name, ""
    return name[:dot], name[dot:]


def with_suffix(name: str, suffix: str) -> str:
    """Insert `suffix` before the extension, keeping the result within 255 bytes."""
    stem, ext = split_ext(name)
    out = stem + suffix + ext
    if len(out.encode()) > MAX_NAME_BYTES:
        out = _fit(stem, suffix + ext)
    return out


def _fit(stem: str, tail: str) -> str:
    """Cut `stem` (on a character boundary) so that stem + tail fits in 255 bytes."""
    budget = MAX_NAME_BYTES - len(tail.encode())
    if not tail:
        stem, tail = split_ext(stem)
        if len(tail.encode()) > 32:  # an absurd "extension" is just part of the name
            stem, tail = stem + tail, ""
        budget = MAX_NAME_BYTES - len(tail.encode())
    cut = stem.encode()[:budget].decode(errors="ignore")
    return cut + tail


def id_key(item_id: str) -> tuple[int, str]:
    """Sort key for digit-string ids (numeric, without float conversion)."""
    return (len(item_id.lstrip("0")), item_id.lstrip("0"))


def assign_names(
    items: Iterable[tuple[str, str]], taken: Iterable[str] = ()
) -> dict[str, str]:
    """Map each (id, raw name) to a unique safe name; see the module docstring.

    `taken` are names already used in the directory by entries that always win
    (e.g. subdirectories of an execution's outputs).
    """
    by_name: dict[str, list[str]] = {}
    for item_id, raw in items:
        by_name.setdefault(sanitize(raw), []).append(item_id)
    reserved = set(taken)
    result: dict[str, str] = {}
    used = set(reserved)
    for name in sorted(by_name):
        ids = sorted(set(by_name[name]), key=id_key)
        for i, item_id in enumerate(ids):
            bare_ok = i == 0 and name not in reserved
            result[item_id] = name if bare_ok else with_suffix(name, f"~{item_id}")
    # A suffixed name can, rarely, equal another item's real name: suffix again.
    for item_id in sorted(result, key=id_key):
        name = result[item_id]
        while name in used:
            name = with_suffix(name, f"~{item_id}")
        used.add(name)
        result[item_id] = name
    return result
