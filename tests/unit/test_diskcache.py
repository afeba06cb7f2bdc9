"""The on-disk block store: keys, checks on every read, damage, eviction, concurrent users."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowfs.diskcache import Damaged, Store, filesystem_type, is_network_fs
from flowfs.extentfile import (
    EXTENT_BLOCKS,
    HEADER_SIZE,
    TABLE_BYTES,
    Entry,
    clear_headers,
    entry,
)

BS = 4096  # a block size direct writes take (directio.ALIGN), so both ways are tried


def content(size: int, seed: int = 0) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return out[:size]


def fill(store: Store, item: Entry, data: bytes) -> None:
    for index in range(item.blocks):
        store.put(item, index, data[index * BS : (index + 1) * BS])


def block_path(store: Store, item: Entry, index: int) -> Path:
    """The extent file that holds block ``index``."""
    return store.place(item, index).path


@pytest.fixture(params=[False, True], ids=["page-cache", "direct"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    s = Store(tmp_path / "cache", direct=request.param)
    s.open()
    if request.param and not s.direct:
        pytest.skip(f"{tmp_path} takes no direct writes")
    return s


def test_the_key_changes_with_md5_size_id_and_block_size() -> None:
    base = entry("17", 4096, "a" * 32, BS)
    others = [entry("18", 4096, "a" * 32, BS), entry("17", 4097, "a" * 32, BS),
              entry("17", 4096, "b" * 32, BS), entry("17", 4096, None, BS),
              entry("17", 4096, "a" * 32, 2 * BS)]
    assert len({base.digest, *(o.digest for o in others)}) == 1 + len(others)
    assert entry("17", 4096, "a" * 32, BS) == base


def test_blocks_come_back_as_written_and_absent_ones_as_none(store: Store) -> None:
    data = content(3 * BS + 100)
    item = entry("1", len(data), None, BS)
    assert store.get(item, 0) is None
    fill(store, item, data)
    assert b"".join(bytes(store.get(item, i) or b"") for i in range(item.blocks)) == data


def test_a_run_across_extents_comes_back_in_the_buffers_given(store: Store) -> None:
    """One write of a run that spans two extent files; read back into the caller's
    buffers, with the blocks never written as None."""
    data = content(40 * BS + 17, 4)
    item = entry("r", len(data), None, BS)
    first, last = EXTENT_BLOCKS - 4, item.blocks  # blocks 28..40: two files
    assert store.write_run(item, first, [data[i * BS : (i + 1) * BS]
                                         for i in range(first, last)]) == (last - first, None)
    assert block_path(store, item, first) != block_path(store, item, last - 1)
    wanted = range(first - 2, last)
    into = [bytearray(item.block_length(i)) for i in wanted]
    found = store.read(item, wanted, into)
    assert found.damaged == [] and found.errors == []
    assert found.blocks[:2] == [None, None]
    assert all(got is buffer for got, buffer in zip(found.blocks[2:], into[2:], strict=True))
    assert b"".join(bytes(b or b"") for b in found.blocks) == data[first * BS :]


@pytest.mark.parametrize("gap", [2, EXTENT_BLOCKS + 2])
def test_a_read_until_the_gap_stops_there_and_harms_nothing_after_it(
        store: Store, gap: int) -> None:
    """Read-ahead of a window read before reads only the blocks before the first absent
    one (in the same extent file or a later one); the blocks after it are not read, not
    taken for damage, and still there for the next read."""
    data = content((EXTENT_BLOCKS + 8) * BS, 5)
    item = entry("g", len(data), None, BS)
    fill(store, item, data)
    clear_headers(block_path(store, item, gap), [gap])  # block ``gap`` is absent
    wanted = range(gap - 2, gap + 4)
    found = store.read(item, wanted, until_gap=True)
    assert found.damaged == [] and found.errors == []
    assert [b is not None for b in found.blocks] == [True, True, False, False, False, False]
    assert store.holds(item, gap - 1) and not store.holds(item, gap)
    again = store.read(item, wanted)  # all of them: the ones after the gap are intact
    assert [bytes(b) if b is not None else None for b in again.blocks] == [
        data[i * BS : (i + 1) * BS] if i != gap else None for i in wanted]


def test_a_block_of_the_wrong_length_is_refused(store: Store) -> None:
    item = entry("1", 2 * BS, None, BS)
    with pytest.raises(ValueError):
        store.put(item, 0, b"x" * (BS - 1))


def test_a_changed_md5_does_not_see_the_old_blocks(store: Store) -> None:
    old = entry("1", BS, "0" * 32, BS)
    store.put(old, 0, content(BS))
    assert store.get(entry("1", BS, "1" * 32, BS), 0) is None


# -- damage: every kind is detected, the file removed, and no wrong byte returned ------------

def damage_cases(store: Store, item: Entry, index: int, how: str) -> None:
    place = store.place(item, index)
    raw = bytearray(place.path.read_bytes())
    if how == "flip-data":
        raw[place.data_at + 10] ^= 0x01
    elif how == "flip-header":
        raw[place.header_at + 5] ^= 0x80
    elif how == "truncate":  # the file cut one byte short of the block's end
        raw = raw[: place.data_at + item.block_length(index) - 1]
    elif how == "half-header":  # a header write torn by a crash of the machine
        raw[place.header_at + 10 : place.header_at + HEADER_SIZE] = bytes(HEADER_SIZE - 10)
    elif how == "bytes-lost":  # a crash lost the bytes' pages, not the header's
        raw[place.data_at : place.data_at + item.block_length(index)] = bytes(
            item.block_length(index))
    place.path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["flip-data", "flip-header", "truncate", "half-header",
                                 "bytes-lost"])
def test_damage_is_detected_and_the_block_cleared(store: Store, how: str) -> None:
    item = entry("1", 3 * BS, None, BS)
    store.write_run(item, 0, [content(BS, i) for i in range(3)])
    damage_cases(store, item, 1, how)
    with pytest.raises(Damaged):
        store.get(item, 1)
    assert store.get(item, 1) is None  # cleared: now simply absent
    assert store.get(item, 0) == content(BS, 0)  # its neighbour is intact
    store.put(item, 1, content(BS, 1))  # and it can be stored again
    assert store.get(item, 1) == content(BS, 1)


def test_an_extent_moved_under_another_name_is_damage(store: Store) -> None:
    size = 2 * EXTENT_BLOCKS * BS
    item, other = entry("1", size, None, BS), entry("2", size, None, BS)
    store.put(item, 0, content(BS, 1))
    store.put(other, 0, content(BS, 2))
    os.replace(block_path(store, item, 0), block_path(store, item, EXTENT_BLOCKS))
    with pytest.raises(Damaged):
        store.get(item, EXTENT_BLOCKS)  # right length and checksum, wrong position
    block_path(store, item, 0).write_bytes(block_path(store, other, 0).read_bytes())
    with pytest.raises(Damaged):
        store.get(item, 0)  # another file's block


def test_bytes_written_without_their_header_are_never_read(store: Store) -> None:
    """A writer killed between a run's bytes and its headers leaves blocks absent."""
    item = entry("1", 2 * BS, None, BS)
    store.put(item, 0, content(BS, 0))
    place = store.place(item, 1)
    with open(place.path, "r+b") as f:
        f.seek(place.data_at)
        f.write(content(BS, 1))
    assert store.get(item, 1) is None
    assert store.usage().blocks == 1


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, TABLE_BYTES + 2 * BS + 4), st.integers(1, 255)),
                min_size=1, max_size=4),
       st.integers(-4, TABLE_BYTES + 2 * BS + 4))
def test_no_damage_ever_yields_a_wrong_byte(store: Store, flips: list[tuple[int, int]],
                                            cut: int) -> None:
    """Any bit flips in an extent file (its table included), then a truncation or an
    extension: each block is the right bytes or a miss."""
    data = content(2 * BS, 7)
    item = entry("1", len(data), None, BS)
    store.write_run(item, 0, [data[:BS], data[BS:]])
    path = block_path(store, item, 0)
    raw = bytearray(path.read_bytes())
    for position, mask in flips:
        if position < len(raw):
            raw[position] ^= mask
    raw = raw[:cut] if cut >= 0 else raw + b"\xff" * -cut
    path.write_bytes(bytes(raw))
    for index in (0, 1):
        try:
            got = store.get(item, index)
        except Damaged:
            got = None
        assert got is None or bytes(got) == data[index * BS : (index + 1) * BS]


# -- whole files ---------------------------------------------------------------------------

def test_a_complete_file_is_checked_against_md5_once(store: Store) -> None:
    data = content(3 * BS + 5)
    item = entry("1", len(data), hashlib.md5(data).hexdigest(), BS)
    store.put(item, 0, data[:BS])
    assert store.verify(item) is None  # incomplete
    fill(store, item, data)
    assert store.verify(item) is True
    assert (block_path(store, item, 0).parent / "verified").exists()


def test_a_complete_file_that_mismatches_md5_is_removed(store: Store) -> None:
    data = content(2 * BS)
    item = entry("1", len(data), hashlib.md5(b"other bytes").hexdigest(), BS)
    fill(store, item, data)
    assert store.verify(item) is False
    assert all(store.get(item, i) is None for i in range(item.blocks))


# -- eviction --------------------------------------------------------------------------------

def age(path: Path, seconds_ago: float) -> None:
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def test_prune_removes_the_least_recently_used_blocks(store: Store) -> None:
    items = [entry(str(i), BS, None, BS) for i in range(5)]
    for n, item in enumerate(items):
        store.put(item, 0, content(BS, n))
        age(block_path(store, item, 0), 1000 - n)  # items[0] is the oldest
    age(block_path(store, items[0], 0), 2000)
    assert store.get(items[0], 0) is not None  # a read makes it the most recent
    each = store.usage().bytes // 5  # one extent file per item
    left = store.prune(3 * each)
    assert left is not None and left.blocks == 3 and left.bytes <= 3 * each
    kept = [i for i, item in enumerate(items) if store.get(item, 0) is not None]
    assert kept == [0, 3, 4]
    assert store.usage() == left
    assert not (block_path(store, items[1], 0).parent).exists()  # emptied entries go too


def test_prune_and_clear_remove_the_old_format(store: Store) -> None:
    old = store.root / "v1" / "ab" / ("ab" + "0" * 30)
    old.mkdir(parents=True)
    (old / "0").write_bytes(b"a block no version reads any more")
    store.prune(10**9)
    assert not (store.root / "v1").exists()


def test_clear_removes_everything(store: Store) -> None:
    fill(store, entry("1", 3 * BS, None, BS), content(3 * BS))
    assert store.clear().blocks == 3
    assert store.usage().blocks == 0


def test_the_budget_leaves_the_free_space_floor(store: Store) -> None:
    fs = os.statvfs(store.base)
    free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
    floor = min(2**30, total // 20)
    assert store.budget(0, 10**18) <= max(0, free - floor) + fs.f_frsize
    assert store.budget(0, 1000) == min(1000, max(0, free - floor))


# -- modes -------------------------------------------------------------------------------------

def test_a_cache_home_that_does_not_exist_yet_is_made_private(tmp_path: Path) -> None:
    """A fresh account has no ~/.cache: the cache must not be off for that."""
    root = tmp_path / "home" / ".cache" / "flowfs"
    assert Store(root).open()
    assert (root / "v2").is_dir()
    for made in (tmp_path / "home", tmp_path / "home" / ".cache", root):
        assert made.stat().st_mode & 0o777 == 0o700


def test_a_group_cache_whose_parent_is_missing_is_not_made(tmp_path: Path) -> None:
    """A directory shared with a group is the administrator's to make, parents too."""
    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "missing" / "flowfs", shared=True).open()
    assert not (tmp_path / "missing").exists()


def test_private_and_group_modes(tmp_path: Path) -> None:
    """Every directory and file the store makes, the md5 mark included, whatever the umask."""
    data = content(BS)
    item = entry("1", BS, hashlib.md5(data).hexdigest(), BS)
    old = os.umask(0o022)
    try:
        private, shared = Store(tmp_path / "p"), Store(tmp_path / "g", shared=True)
        for s in (private, shared):
            s.open()
            s.put(item, 0, data)
            assert s.verify(item) is True
    finally:
        os.umask(old)

    def modes(s: Store) -> set[tuple[str, int]]:
        return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode))
                for p in s.base.rglob("*")}
    assert modes(private) == {("dir", 0o700), ("file", 0o600)}
    assert modes(shared) == {("dir", 0o2770), ("file", 0o660)}
    assert stat.S_IMODE(private.root.stat().st_mode) == 0o700


# -- concurrent users ------------------------------------------------------------------------

def test_threads_writing_reading_and_pruning_never_see_a_wrong_byte(store: Store) -> None:
    data = content(16 * BS, 3)
    item = entry("1", len(data), None, BS)
    wrong: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            fill(store, item, data)

    def reader() -> None:
        while not stop.is_set():
            for index in range(item.blocks):
                try:
                    got = store.get(item, index)
                except Damaged:
                    wrong.append(-1 - index)  # headers follow bytes: never seen as damage
                    continue
                if got is not None and bytes(got) != data[index * BS : (index + 1) * BS]:
                    wrong.append(index)

    def pruner() -> None:
        while not stop.is_set():
            store.prune(4 * BS)

    threads = [threading.Thread(target=f) for f in (writer, writer, reader, reader, pruner)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # a soak of fixed length: nothing to wait for but time itself
    stop.set()
    for t in threads:
        t.join(10)
    assert wrong == []


def _process_writer(root: str, seed: int, rounds: int) -> None:
    s = Store(Path(root))
    data = content(8 * BS, 5)
    item = entry("1", len(data), None, BS)
    for _ in range(rounds):
        fill(s, item, data)
        if seed % 2:
            s.prune(2 * BS)


def test_processes_sharing_a_directory_leave_only_good_blocks(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(str(store.root), n, 30))
             for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = content(8 * BS, 5)
    item = entry("1", len(data), None, BS)
    for index in range(item.blocks):
        got = store.get(item, index)  # raises Damaged if any torn block were left
        assert got is None or bytes(got) == data[index * BS : (index + 1) * BS]


# -- where the cache lives -----------------------------------------------------------------------

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /home rw,relatime shared:2 - nfs4 server:/home rw,vers=4.2
41 40 0:41 / /home/scratch\\040space rw - xfs /dev/sdb1 rw
"""


@pytest.mark.parametrize("path, fstype, network", [
    ("/var/cache/flowfs", "ext4", False),
    ("/home/alice/.cache/flowfs", "nfs4", True),
    ("/home/scratch space/flowfs", "xfs", False),
    ("/homeless", "ext4", False),
])
def test_the_filesystem_type_of_a_cache_directory(path: str, fstype: str, network: bool) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == fstype
    assert is_network_fs(fstype) is network
