"""Building a bulk download's ZIP: entry names, compression choice, the writing.

Entries are ``<sample name or "unassigned">/<filename>``, or with
``by_execution`` ``<execution identifier>/<output path>``.  Names are sanitised
(no absolute paths, no ``..``, no NUL or control characters) and duplicates get
a stable suffix with their data id; the lowest id keeps the bare name.
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from flowfs.server.catalog import Catalog, DataFile, id_order

UNASSIGNED = "unassigned"
_COPY_CHUNK = 2**20
_STORED_SUFFIXES = frozenset({
    ".gz", ".bam", ".cram", ".zip", ".bz2", ".xz", ".zst", ".bai", ".tbi", ".crai", ".csi",
    ".png", ".jpg", ".jpeg", ".gif", ".pdf", ".bgz",
})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
# zipfile needs to know up front that an entry may pass 4 GiB; be generous.
_ZIP64_ENTRY = 2**31


class ArchiveError(Exception):
    """A job that cannot be archived; the message is meant for its owner."""


class Cancelled(Exception):
    """The job was deleted or the server is stopping."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file to put in the archive."""

    name: str
    path: Path
    size: int
    mtime: float
    deflate: bool
    data_id: str
    filename: str


def safe_component(text: str) -> str:
    """One path component with separators and control characters replaced."""
    cleaned = _UNSAFE.sub("_", text).strip()
    return "_" if cleaned in ("", ".", "..") else cleaned


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for compressed in (".gz", ".bz2", ".xz", ".zst"):
        if lower.endswith(compressed):
            stem, dot, ext = name[: -len(compressed)].rpartition(".")
            if dot and stem:
                return stem, f".{ext}{name[-len(compressed):]}"
    stem, dot, ext = name.rpartition(".")
    return (stem, f".{ext}") if dot and stem else (name, "")


def _entry_name(catalog: Catalog, item: DataFile, by_execution: bool) -> str:
    if by_execution:
        execution = catalog.executions.get(item.execution or "")
        if execution is not None:
            pipeline = execution.pipeline_name or "execution"
            folder = execution.identifier or f"{pipeline}-{execution.id}"
            parts = (item.output_path or item.filename).split("/")
            return "/".join([safe_component(folder)] + [safe_component(p) for p in parts if p])
    sample = catalog.samples.get(item.sample or "")
    folder = sample.name if sample is not None else UNASSIGNED
    return f"{safe_component(folder)}/{safe_component(item.filename)}"


def plan_entries(catalog: Catalog, data_ids: Iterable[str], by_execution: bool) -> list[Entry]:
    """The archive's entries for ``data_ids``, in id order, names made unique."""
    ids = list(dict.fromkeys(data_ids))
    missing = [i for i in ids if i not in catalog.data]
    if missing:
        raise ArchiveError("data no longer available: " + ", ".join(missing))
    entries: list[Entry] = []
    taken: set[str] = set()
    for item in sorted((catalog.data[i] for i in ids), key=id_order):
        name = _entry_name(catalog, item, by_execution)
        if name in taken:
            folder, _, base = name.rpartition("/")
            stem, suffix = _split_suffix(base)
            name = f"{folder}/{stem}_{item.id}{suffix}"
        taken.add(name)
        deflate = Path(item.filename.lower()).suffix not in _STORED_SUFFIXES
        entries.append(Entry(name, item.path, item.size, item.mtime_ns / 1e9, deflate,
                             item.id, item.filename))
    return entries


def _zip_info(entry: Entry) -> zipfile.ZipInfo:
    stamp = time.localtime(entry.mtime)
    date_time = stamp[:6] if stamp.tm_year >= 1980 else (1980, 1, 1, 0, 0, 0)
    info = zipfile.ZipInfo(entry.name, date_time=date_time)
    info.compress_type = zipfile.ZIP_DEFLATED if entry.deflate else zipfile.ZIP_STORED
    info.file_size = entry.size
    info.external_attr = 0o644 << 16
    return info


def write_zip(entries: list[Entry], dest: Path, on_bytes: Callable[[int], None],
              should_stop: Callable[[], bool]) -> None:
    """Write ``entries`` to ``dest``; ``on_bytes`` hears of every chunk copied.

    Raises Cancelled as soon as ``should_stop()`` says so (``dest`` is left for
    the caller to remove).
    """
    with zipfile.ZipFile(dest, "w", allowZip64=True) as archive:
        for entry in entries:
            if should_stop():
                raise Cancelled
            try:
                source = open(entry.path, "rb")  # noqa: SIM115 (closed just below)
            except OSError as exc:
                raise ArchiveError(f"cannot read data {entry.data_id} ({entry.filename}): "
                                   f"{exc.strerror}") from None
            with source, archive.open(_zip_info(entry), "w",
                                      force_zip64=entry.size >= _ZIP64_ENTRY) as target:
                while chunk := source.read(_COPY_CHUNK):
                    target.write(chunk)
                    on_bytes(len(chunk))
                    if should_stop():
                        raise Cancelled
