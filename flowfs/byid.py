"""by-id/: any readable data file by its id, and by-id/<id>.d/ with its index files."""

from __future__ import annotations

import logging
import weakref
from functools import partial

import trio

from flowfs.errors import FlowError, NotFound, Transient
from flowfs.listing import Child, ListingDir
from flowfs.model import DataFile, is_id
from flowfs.names import sanitize
from flowfs.nodes import DirNode, Node, Owner

log = logging.getLogger(__name__)

# by-id/<id>.d/: a directory that holds the file under its own name, so a tool that looks
# for an index beside it (x.bam.bai, x.vcf.gz.tbi) finds one.
ID_DIR_SUFFIX = ".d"
INDEX_SUFFIXES = (".bai", ".csi", ".crai", ".tbi", ".fai", ".gzi")
# Indexes named after the stem, as samtools also accepts: x.bam -> x.bai, x.cram -> x.crai.
STEM_INDEXES = {".bam": (".bai", ".csi"), ".cram": (".crai",)}


def index_names(filename: str) -> set[str]:
    """The names a tool looks for when it wants the index of ``filename``."""
    names = {filename + suffix for suffix in INDEX_SUFFIXES}
    for ext, suffixes in STEM_INDEXES.items():
        if filename.endswith(ext):
            names |= {filename[:-len(ext)] + suffix for suffix in suffixes}
    return names


class ByIdDir(DirNode):
    """by-id/<data id>: any readable data file, found on lookup, never listed.

    by-id/<data id>.d/ is a directory holding that file under its filename, with its index
    files beside it when they are in the same sample or execution.
    """

    def __init__(self, tree: Owner, mtime: float) -> None:
        super().__init__(tree, mtime)
        # Weak: a file found here lives while the kernel (or a listing) holds it.
        self._found: weakref.WeakValueDictionary[str, Node] = weakref.WeakValueDictionary()

    async def entries(self) -> dict[str, Node]:
        return {}

    async def lookup(self, name: str) -> Node:
        data_id = name.removesuffix(ID_DIR_SUFFIX)
        if not is_id(data_id):
            raise NotFound(name)
        node = self._found.get(name)
        if node is None:
            data = await self._data(data_id)
            node = self.tree.file_for(data) if name == data_id else IdDir(self.tree, data)
            self._found[name] = node
        return node

    async def _data(self, data_id: str) -> DataFile:
        try:
            with trio.fail_after(self.tree.io_timeout):
                obj = await self.tree.api.get_json(f"/data/{data_id}")
        except trio.TooSlowError:
            raise Transient(f"looking up data {data_id} took too long") from None
        data = DataFile.from_json(obj)
        if data.is_directory or data.id != data_id:
            raise NotFound(data_id)
        return data


class IdDir(ListingDir):
    """by-id/<id>.d/: the file of a data id under its name, and its index files."""

    kind = "by-id"

    def __init__(self, tree: Owner, data: DataFile) -> None:
        super().__init__(tree, data.created)
        self.data = data
        self.flow_id = data.id

    async def _fetch(self) -> list[Child]:
        # Named by the file alone, not by a directory's assignments: the path follows from
        # the id. The file comes first; an index whose name is taken is left out.
        children: dict[str, Child] = {}
        for data in (self.data, *sorted(await self._indexes(), key=lambda d: int(d.id))):
            name = sanitize(data.filename)
            if name not in children:
                children[name] = Child(name, ("data", data.id, data.size),
                                       partial(self.tree.file_for, data))
        return list(children.values())

    async def _indexes(self) -> list[DataFile]:
        """Index files of the same sample or execution; none if they cannot be listed."""
        owner = (f"/samples/{self.data.sample_id}/data" if self.data.sample_id else
                 f"/executions/{self.data.execution_id}/data" if self.data.execution_id else None)
        if owner is None:
            return []
        try:
            siblings = await self.tree.list_items(owner, "data", DataFile)
        except FlowError as exc:  # the file alone is still worth showing
            log.info("no index files for data %s: %s", self.data.id, exc)
            return []
        wanted = index_names(self.data.filename)
        return [d for d in siblings if d.filename in wanted and d.id != self.data.id]
