"""MD5 digests of data files, computed once and remembered in the state dir.

The cache is keyed by path, size and modification time (nanoseconds), so a
file that changes is hashed again and a restart with the same state dir hashes
nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 4 * 2**20
_CACHE_NAME = "md5-cache.json"


@dataclass(frozen=True, slots=True)
class FileKey:
    """What identifies one version of a file on disk."""

    path: str
    size: int
    mtime_ns: int

    def text(self) -> str:
        return f"{self.size}:{self.mtime_ns}:{self.path}"


def md5_of_file(path: str | os.PathLike[str]) -> str:
    """Hex MD5 of a file, read in large chunks (hashlib releases the GIL on them)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DigestCache:
    """MD5s of files, persisted as JSON in the state dir."""

    def __init__(self, state_dir: Path) -> None:
        self._file = state_dir / _CACHE_NAME
        self._known = self._load()

    def _load(self) -> dict[str, str]:
        try:
            with open(self._file, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable md5 cache %s: %s", self._file, exc)
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def md5s(self, keys: Iterable[FileKey]) -> dict[FileKey, str]:
        """The MD5 of every key, hashing (in parallel) only the files not cached."""
        wanted = set(keys)
        missing = sorted((k for k in wanted if k.text() not in self._known), key=FileKey.text)
        if missing:
            log.info("computing md5 of %d files", len(missing))
            workers = max(1, min(len(missing), os.cpu_count() or 1, 8))
            with ThreadPoolExecutor(workers, thread_name_prefix="md5") as pool:
                for key, md5 in zip(missing, pool.map(lambda k: md5_of_file(k.path), missing),
                                    strict=True):
                    self._known[key.text()] = md5
            self._save()
        return {k: self._known[k.text()] for k in wanted}

    def _save(self) -> None:
        tmp = self._file.with_name(self._file.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(self._known, handle)
            os.replace(tmp, self._file)
        except OSError as exc:
            # Only a cache: serving goes on, the next start hashes again.
            log.warning("cannot save md5 cache %s: %s", self._file, exc)
