"""Building a bulk download's ZIP: entry names, compression choice, the writing.

Entries are ``<sample name or "unassigned">/<filename>``, or with
``by_execution`` ``<execution identifier>/<output path>``.  Every component is
made safe by the mount's own naming rules (:mod:`flowfs.server.safenames`), so
``unzip`` can create each one.  Two entries never share a path, and a file
never has the path of a directory (``results`` beside ``results/x.txt``): as in
the mount, directories keep their names, the lowest data id keeps a file's
name, and every other file gets ``~<id>`` before its extension.  A name thus
depends only on its own id and those of its namesakes, never on the order of
the request.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from flowfs.server.catalog import Catalog, DataFile, id_order
from flowfs.server.safenames import safe_component, with_suffix

UNASSIGNED = "unassigned"
_COPY_CHUNK = 2**20
_STORED_SUFFIXES = frozenset({
    ".gz", ".bam", ".cram", ".zip", ".bz2", ".xz", ".zst", ".bai", ".tbi", ".crai", ".csi",
    ".png", ".jpg", ".jpeg", ".gif", ".pdf", ".bgz",
})
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


def _entry_parts(catalog: Catalog, item: DataFile, by_execution: bool) -> tuple[str, ...]:
    if by_execution:
        execution = catalog.executions.get(item.execution or "")
        if execution is not None:
            pipeline = execution.pipeline_name or "execution"
            folder = execution.identifier or f"{pipeline}-{execution.id}"
            parts = (item.output_path or item.filename).split("/")
            return (safe_component(folder), *(safe_component(p) for p in parts if p))
    sample = catalog.samples.get(item.sample or "")
    folder = sample.name if sample is not None else UNASSIGNED
    return (safe_component(folder), safe_component(item.filename))


def _id_key(item_id: str) -> tuple[int, str]:
    return (len(item_id.lstrip("0")), item_id.lstrip("0"))


def unique_paths(items: Iterable[tuple[str, tuple[str, ...]]]) -> dict[str, str]:
    """Map each (data id, safe path components) to a path no other entry or directory has."""
    paths: dict[str, list[str]] = {}
    dirs: set[str] = set()
    for item_id, parts in items:
        paths.setdefault("/".join(parts), []).append(item_id)
        dirs.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    result: dict[str, str] = {}
    suffixed: list[str] = []
    for path, ids in paths.items():
        for rank, item_id in enumerate(sorted(set(ids), key=_id_key)):
            if rank == 0 and path not in dirs:
                result[item_id] = path
            else:
                result[item_id] = _suffixed(path, item_id)
                suffixed.append(item_id)
    # A suffixed name may, rarely, be another entry's own name: suffix it again.
    used = dirs | {result[i] for i in result if i not in suffixed}
    for item_id in sorted(suffixed, key=_id_key):
        name = result[item_id]
        while name in used:
            name = _suffixed(name, item_id)
        used.add(name)
        result[item_id] = name
    return result


def _suffixed(path: str, item_id: str) -> str:
    folder, slash, base = path.rpartition("/")
    return folder + slash + with_suffix(base, f"~{item_id}")


def plan_entries(catalog: Catalog, data_ids: Iterable[str], by_execution: bool) -> list[Entry]:
    """The archive's entries for ``data_ids``, in id order, names made unique."""
    ids = list(dict.fromkeys(data_ids))
    missing = [i for i in ids if i not in catalog.data]
    if missing:
        raise ArchiveError("data no longer available: " + ", ".join(missing))
    items = sorted((catalog.data[i] for i in ids), key=id_order)
    names = unique_paths((item.id, _entry_parts(catalog, item, by_execution)) for item in items)
    return [Entry(names[item.id], item.path, item.size, item.mtime_ns / 1e9,
                  Path(item.filename.lower()).suffix not in _STORED_SUFFIXES, item.id,
                  item.filename)
            for item in items]


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
