"""Turning API names into safe, unique, stable file names.

Rules (documented in docs/usage.md):
- `/`, NUL, control characters (C0, DEL, C1), bidirectional controls, line and
  paragraph separators and unpaired surrogates become `_`; `.`, `..` and the
  empty name get a leading `_`; names over 255 bytes are cut (keeping the
  extension).
- Collisions in one directory: an item that already holds a name keeps it (see
  :func:`assign`); among items new to the directory, the lowest id takes the
  bare name if nobody holds it, and every other gets `~<id>` before its
  extension (`reads~105.fastq.gz`). So a path once shown keeps meaning the same
  item for as long as that item is listed, whatever ids the newcomers have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

MAX_NAME_BYTES = 255
MAX_EXT_BYTES = 32  # a longer "extension" is just part of the name
# Characters a terminal or a tool would misread, each replaced by `_`:
# - C0 controls, DEL, C1 controls (U+0085 is a newline to some tools, U+009B a CSI
#   that starts terminal escape sequences);
# - bidirectional controls (U+061C, U+200E/F, U+202A-E, U+2066-9): `evil\u202etxt.exe`
#   would show as `evilexe.txt`;
# - line and paragraph separators (U+2028/9), which break line-based tools;
# - unpaired surrogates (valid in JSON, not encodable as UTF-8, so not a file name).
_UNSAFE = re.compile(
    "[/\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".bgz")


def sanitize(name: str) -> str:
    """A single path component that any POSIX tool accepts and a terminal shows as is."""
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


def _split_short(name: str) -> tuple[str, str]:
    """split_ext, with an absurdly long extension left in the stem."""
    stem, ext = split_ext(name)
    if len(ext.encode()) > MAX_EXT_BYTES:
        return name, ""
    return stem, ext


def with_suffix(name: str, suffix: str) -> str:
    """Insert `suffix` before the extension, keeping the result within 255 bytes.

    The suffix and the extension always survive whole (the stem is cut instead), so
    different suffixes give different names. `suffix` must be short (an id is at most 40
    digits).
    """
    stem, ext = _split_short(name)
    out = stem + suffix + ext
    if len(out.encode()) > MAX_NAME_BYTES:
        out = _fit(stem, suffix + ext)
    return out


def _fit(stem: str, tail: str) -> str:
    """Cut `stem` (on a character boundary) so that stem + tail fits in 255 bytes."""
    if not tail:
        stem, tail = _split_short(stem)
    budget = max(0, MAX_NAME_BYTES - len(tail.encode()))
    cut = stem.encode()[:budget].decode(errors="ignore")
    return cut + tail


def id_key(item_id: str) -> tuple[int, str]:
    """Sort key for digit-string ids (numeric, without float conversion)."""
    return (len(item_id.lstrip("0")), item_id.lstrip("0"))


def suffixed(base: str, item_id: str) -> Iterator[str]:
    """The names an item may take when `base` is not free: `x~<id>`, then `x~<id>~2`, ...

    Endless and pairwise distinct from the second on (each ends in its own `~<k>`), so
    looking for a free one always ends, whatever names others hold.
    """
    yield with_suffix(base, f"~{item_id}")
    k = 2
    while True:
        yield with_suffix(base, f"~{item_id}~{k}")
        k += 1


def is_name_of(name: str, base: str, item_id: str) -> bool:
    """Whether `name` is one :func:`assign` could give an item whose own name is `base`."""
    if name == base or name == with_suffix(base, f"~{item_id}"):
        return True
    found = re.search(rf"~{re.escape(item_id)}~([0-9]+)", name)
    return found is not None and name == with_suffix(base, f"~{item_id}~{found.group(1)}")


@dataclass(frozen=True)
class Assignment:
    """The outcome of naming one listing.

    `names` maps each id to the name shown; `held` maps every name to remember for the
    directory to its holder: the names shown, plus the names of items still listed under
    another name now (renamed on the server), which stay out of reach of everyone else
    for as long as their holder is listed.
    """

    names: dict[str, str]
    held: dict[str, str]


def assign(items: Iterable[tuple[str, str]], taken: Iterable[str] = (),
           held: Mapping[str, str] | None = None) -> Assignment:
    """Name each (id, raw name) of a complete listing, given what the directory held.

    1. A name in `held` whose holder is listed stays the holder's: shown, if it is still
       a name of the item's current name; else kept unused. A holder missing from the
       listing frees its names.
    2. Newcomers, by id: the lowest id of a name takes it bare if nobody holds it; every
       other gets the first free of :func:`suffixed`.
    `taken` are names already used in the directory by entries that always win (the
    subdirectories of an execution's outputs). Without `held` this is the rule of a
    first listing: the lowest id keeps the bare name.
    """
    bases: dict[str, str] = {}
    for item_id, raw in items:  # an id listed twice (a broken server): the same name always
        base = sanitize(raw)
        bases[item_id] = min(base, bases.get(item_id, base))
    taken = set(taken)
    used = set(taken)
    names: dict[str, str] = {}
    remember: dict[str, str] = {}
    for name, holder in sorted((held or {}).items(), key=lambda nh: (id_key(nh[1]), nh[0])):
        if holder not in bases or name in taken:
            continue
        if holder not in names and is_name_of(name, bases[holder], holder):
            names[holder] = name
        remember[name] = holder
        used.add(name)
    newcomers = sorted((i for i in bases if i not in names), key=id_key)
    for item_id in newcomers:  # bare names first, the lowest id of each name wins
        if bases[item_id] not in used:
            names[item_id] = bases[item_id]
            used.add(bases[item_id])
    for item_id in newcomers:
        if item_id not in names:
            name = next(n for n in suffixed(bases[item_id], item_id) if n not in used)
            names[item_id] = name
            used.add(name)
    remember.update((name, item_id) for item_id, name in names.items())
    return Assignment(names, remember)


def assign_names(
    items: Iterable[tuple[str, str]], taken: Iterable[str] = ()
) -> dict[str, str]:
    """The names of a first listing (nothing held yet): see :func:`assign`."""
    return assign(items, taken).names
