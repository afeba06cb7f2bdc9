"""Checking manifests against the tree: each entry resolved to the data ids it names.

Lines appended to a manifest are checked as they are written (``append``), so that
even a shell redirection, whose close() errors nobody reports, sees its write fail;
a manifest written out of order, or a draft, is checked as a whole when submitted
(``parse`` and ``check``). Checking costs bounded time: it stops once the files
named pass what one job may hold, and yields to other requests as it goes.
"""

from __future__ import annotations

import os
from typing import NoReturn

import trio

from flowfs.downloads.composing import MAX_JOB_FILES, Found, ManifestFile
from flowfs.downloads.directory import DownloadsDir
from flowfs.errors import BadManifest, Forbidden, NotFound, TooBig, Transient
from flowfs.manifest import (
    LONG_LINE,
    MAX_LINE_BYTES,
    MAX_MANIFEST_BYTES,
    Manifest,
    open_line,
    parse,
)
from flowfs.nodes import DirNode, FileNode, Node
from flowfs.tree import Tree

TOO_MANY = (f"by this line the manifest names more than {MAX_JOB_FILES:,} files, the most "
            "one Flow job may hold: split it into several manifests (lines after this one "
            "were not checked)")


class Checker:
    """Checks the manifests of ``directory``, whose paths may start with ``mountpoint``."""

    def __init__(self, tree: Tree, directory: DownloadsDir, mountpoint: str) -> None:
        self.tree = tree
        self.directory = directory
        # Absolute manifest paths may name the mount point as given or as resolved
        # (through symlinks). Resolved now: once mounted, resolving it would ask ourselves.
        self.roots = tuple(dict.fromkeys([mountpoint, os.path.realpath(mountpoint)]))

    def parse(self, content: bytes) -> Manifest:
        """A whole manifest's entries and the problems of its lines."""
        return parse(content, self.roots, whole=True)

    async def check(self, parsed: Manifest) -> tuple[list[str], list[tuple[int, str]]]:
        """Resolve every entry, within a deadline of its own (not the server's answer's)."""
        found = Found()
        limit = self.tree.io_timeout * 4
        with trio.move_on_after(limit):
            problems = await self._resolve(parsed, found)
            return list(found.ids), problems
        raise Transient(f"checking the manifest took longer than {limit:.0f} s (the server "
                        "was slow to list what it names); nothing was submitted: try again")

    # -- lines checked as they are written ------------------------------------------------
    async def append(self, manifest: ManifestFile, offset: int, data: bytes) -> int:
        """Store a write to a manifest, checking the complete lines it brings; a refused
        write stores nothing and the manifest cannot be submitted as is."""
        if manifest.unordered or offset != len(manifest.buffer):
            manifest.unordered = True  # not an append: checked as a whole on close
            return manifest.store(offset, data)
        if open_line(len(manifest.buffer) - manifest.checked, data) > MAX_LINE_BYTES:
            # Refused as soon as it passes the limit: a 10 MiB line is never rescanned.
            line = manifest.lines + manifest.dropped_lines + data.count(b"\n") + 1
            self._refuse(manifest, offset, data, [(line, LONG_LINE)])
        end = data.rfind(b"\n") + 1
        if end == 0:
            return manifest.store(offset, data)
        if offset + len(data) > MAX_MANIFEST_BYTES:
            raise TooBig(f"larger than {MAX_MANIFEST_BYTES:,} bytes: split it")
        assert manifest.stem is not None
        if manifest.refused == (offset, data):  # a writer retrying the same write
            self.directory.fail(manifest.stem, manifest.problems)
        # The unfinished line before this write is at most MAX_LINE_BYTES: linear.
        text = bytes(manifest.buffer[manifest.checked:]) + data[:end]
        parsed = parse(text, self.roots)
        problems = parsed.errors + await self._resolve(parsed, manifest.found)
        if problems:
            first = manifest.lines + manifest.dropped_lines
            self._refuse(manifest, offset, data, [(n + first, m) for n, m in problems])
        written = manifest.store(offset, data)
        manifest.checked = offset + end
        manifest.lines += text.count(b"\n")
        return written

    def _refuse(self, manifest: ManifestFile, offset: int, data: bytes,
                problems: list[tuple[int, str]]) -> NoReturn:
        assert manifest.stem is not None
        manifest.refused = (offset, data)
        known = set(manifest.problems)  # a writer going on after a refusal adds nothing
        manifest.problems += [p for p in problems if p not in known]
        manifest.dropped_lines += data.count(b"\n")
        self.directory.fail(manifest.stem, manifest.problems)

    # -- resolving entries --------------------------------------------------------------
    async def _resolve(self, parsed: Manifest, found: Found) -> list[tuple[int, str]]:
        """Add the data ids of every entry (directories expanded) to ``found``; problems.

        Stops at the line where the files named pass MAX_JOB_FILES.
        """
        problems: list[tuple[int, str]] = []
        root = self.tree.root
        for entry in parsed.entries:
            await found.step()
            try:
                if entry.kind == "id":
                    by_id = await root.lookup("by-id")
                    assert isinstance(by_id, DirNode)
                    node = await by_id.lookup(entry.value)
                else:
                    node = await self._walk(root, entry.value.split("/"))
                await self._files_of(node, found)
            except NotFound:
                problems.append((entry.line, f"{entry.value}: no such file or directory"))
            except Forbidden:
                problems.append((entry.line, f"{entry.value}: permission denied"))
            except BadManifest as exc:
                problems.append((entry.line, f"{entry.value}: {exc}"))
            if found.too_many:
                problems.append((entry.line, TOO_MANY))
                break
        return problems

    async def _walk(self, node: Node, parts: list[str]) -> Node:
        for part in parts:
            if not isinstance(node, DirNode):
                raise NotFound(part)
            node = await node.lookup(part)
        return node

    async def _files_of(self, node: Node, found: Found) -> None:
        """Add a file, or every file below a directory (empty parts are fine)."""
        if isinstance(node, FileNode) and node.kind == "data":
            found.ids[node.data.id] = None
            return
        if isinstance(node, DownloadsDir) or not isinstance(node, DirNode):
            raise BadManifest("not a Flow data file or directory")
        if not await self._files_below(node, found):
            raise BadManifest("no data files below it")

    async def _files_below(self, node: DirNode, found: Found) -> int:
        """How many files are below ``node``; each directory is walked once per check."""
        if node in found.walked:
            return found.walked[node]
        count = 0
        for child in (await node.entries()).values():
            await found.step()
            if isinstance(child, FileNode) and child.kind == "data":
                found.ids[child.data.id] = None
                count += 1
            elif isinstance(child, DirNode) and not isinstance(child, DownloadsDir):
                count += await self._files_below(child, found)
            if found.too_many:
                break
        found.walked[node] = count
        return count
