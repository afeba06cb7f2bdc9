"""A directory of symlinks laid out like the files server, for nginx to serve.

``DIR/downloads/<data id>/<filename>`` points at each data file and
``DIR/downloads/<job id>`` at each completed bulk archive, so
``location /downloads/ { root DIR; }`` serves the very bytes this server
serves, at the same URLs (see docs/server.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flowfs.server.catalog import Catalog

log = logging.getLogger(__name__)


class Exporter:
    """Maintains the symlink tree under ``root/downloads``."""

    def __init__(self, root: Path) -> None:
        self._downloads = root / "downloads"

    def export_catalog(self, catalog: Catalog) -> None:
        """Replace every symlink of an earlier export with links to this catalog's files."""
        self._downloads.mkdir(parents=True, exist_ok=True)
        self._clear()
        for item in catalog.data.values():
            folder = self._downloads / item.id
            folder.mkdir(exist_ok=True)
            _symlink(item.path, folder / item.filename)

    def _clear(self) -> None:
        # Only symlinks and the folders that held them: never a file someone put there.
        for dirpath, dirnames, filenames in os.walk(self._downloads, topdown=False):
            for name in filenames + dirnames:
                path = Path(dirpath, name)
                if path.is_symlink():
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()

    def link_job(self, job_id: str, archive: Path) -> None:
        _symlink(archive, self._downloads / job_id)

    def unlink_job(self, job_id: str) -> None:
        link = self._downloads / job_id
        if link.is_symlink():
            link.unlink()


def _symlink(target: Path, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.abspath(target), tmp)
    os.replace(tmp, link)
