"""Region queries run again on a new mount over the same disk cache ask the network for
nothing, even where the new mount's link estimate draws read-ahead windows wider: the
reader over the disk cache, as a mount wires them (rule 8 of flowfs.reader)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from test_diskfetch import Data, File

from flowfs.diskcache import Store
from flowfs.diskfetch import DiskFetch
from flowfs.link import LinkEstimate
from flowfs.reader import Reader, ReaderConfig

pytestmark = pytest.mark.timeout(60)

KiB, MiB = 2**10, 2**20
BS = 256 * KiB


@dataclass
class Network:
    body: bytes
    calls: list[tuple[int, int]] = field(default_factory=list)

    async def __call__(self, target: File, start: int, end: int) -> bytes:
        self.calls.append((start, end))
        await trio.sleep(0.001)
        return self.body[start:end]


@asynccontextmanager
async def mounted(root: Path, network: Network, link: LinkEstimate
                  ) -> AsyncIterator[tuple[Reader, DiskFetch]]:
    """One mount: the reader over the disk cache in ``root``; on leaving, everything in
    flight has landed and is written (as the bench waits before it unmounts)."""
    store = Store(root)
    store.open()
    disk = DiskFetch(store, network, block_size=BS, max_bytes=10**10)
    async with trio.open_nursery() as nursery:
        # As flowfs.mount wires them (the disk's targets are the reader's FileNodes).
        reader = Reader(disk, nursery, ReaderConfig(block_size=BS),  # type: ignore[arg-type]
                        link=link, ahead=disk.ahead)  # type: ignore[arg-type]
        nursery.start_soon(disk.run, reader.cached, lambda: link.far)
        yield reader, disk
        with trio.fail_after(20):
            while (reader.stats()["inflight"] or reader.stats()["readahead_requests"]
                   or disk.stats()["queued_bytes"] or disk.stats()["owed_bytes"]):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def queries(reader: Reader, target: File, body: bytes, offsets: list[int]) -> None:
    """samtools' reads of a region: 36 KiB at the BGZF block, the kernel's 128 KiB after
    it, then the next 256 KiB of the region; each query its own open."""
    for offset in offsets:
        stream = reader.open(target)
        position = offset
        for size in (36 * KiB, 128 * KiB, 256 * KiB):
            assert await reader.read(stream, position, size) == body[position : position + size]
            position += size
        reader.close(stream)


async def test_region_queries_after_a_remount_ask_the_network_for_nothing(
        tmp_path: Path) -> None:
    body = random.Random(7).randbytes(48 * MiB)
    target = File(Data("bam", None), len(body))
    offsets = sorted(random.Random(8).sample(range(0, len(body) - MiB, 4096), 12))
    network = Network(body)
    # The first mount measured a slow link (small windows); the second has only the
    # API's hint of the latency, and guesses the rate higher (wider windows).
    async with mounted(tmp_path, network, LinkEstimate.of(0.1, 4 * MiB)) as (reader, _):
        await queries(reader, target, body, offsets)
    assert network.calls  # the first run did use the network
    network.calls.clear()
    hinted = LinkEstimate()
    hinted.hint(0.1)
    async with mounted(tmp_path, network, hinted) as (reader, disk):
        await queries(reader, target, body, offsets)
    assert network.calls == []
    assert disk.counts["hits"] > 0
