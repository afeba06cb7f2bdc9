"""Remembered names: a path keeps its item across listings and remounts, whatever the store."""

from __future__ import annotations

import logging
import sqlite3
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

from flowfs.namebook import NameBook, NameStore, StoreError, open_store, store_path

API = "https://app.flow.test/api"


def liver(*ids: str) -> list[tuple[str, str]]:
    return [(i, "Liver") for i in ids]


class CountingStore(NameStore):
    """A store that counts its writes (and can be made to fail them)."""

    def __init__(self, path: Path, **kwargs: int) -> None:
        super().__init__(path, **kwargs)
        self.saves = 0
        self.broken = False

    def save(self, changes: Iterable[tuple[str, dict[str, str], dict[str, str]]]) -> None:
        self.saves += 1
        if self.broken:
            raise StoreError("disk I/O error")
        super().save(changes)


async def test_a_name_survives_a_remount_when_a_lower_id_namesake_appears(
        tmp_path: Path) -> None:
    path = store_path(API, "alice", tmp_path)
    first = NameBook(NameStore(path))
    assert await first.assign("projects", liver("50")) == {"50": "Liver"}
    await first.close()

    second = NameBook(NameStore(path))
    assert await second.assign("projects", liver("50", "5")) == {"50": "Liver", "5": "Liver~5"}
    await second.close()


async def test_a_fresh_store_names_by_the_lowest_id(tmp_path: Path) -> None:
    book = NameBook(NameStore(store_path(API, "alice", tmp_path)))
    assert await book.assign("projects", liver("50", "5")) == {"5": "Liver", "50": "Liver~50"}


async def test_each_user_and_server_has_a_store_of_its_own(tmp_path: Path) -> None:
    paths = {store_path(API, "alice", tmp_path), store_path(API, "bob", tmp_path),
             store_path("https://other.test/api", "alice", tmp_path)}
    assert len(paths) == 3
    book = NameBook(NameStore(store_path(API, "alice", tmp_path)))
    await book.assign("projects", liver("50"))
    await book.close()
    other = NameBook(NameStore(store_path(API, "bob", tmp_path)))
    assert await other.assign("projects", liver("50", "5")) == {"5": "Liver", "50": "Liver~50"}


async def test_the_store_is_private_to_its_user(tmp_path: Path) -> None:
    path = store_path(API, "alice", tmp_path / "state")
    book = NameBook(NameStore(path))
    await book.assign("projects", liver("50"))
    await book.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert "alice@app.flow.test" in path.name


async def test_a_listing_that_changes_nothing_writes_nothing(tmp_path: Path) -> None:
    store = CountingStore(store_path(API, "alice", tmp_path))
    book = NameBook(store)
    items = [(str(i), f"file{i % 50}.txt") for i in range(1, 2001)]
    await book.assign("sample/1", items)
    await book.flush()
    assert store.saves == 1
    for _ in range(5):
        await book.assign("sample/1", list(reversed(items)))
        await book.flush()
    assert store.saves == 1


async def test_a_change_writes_only_the_changed_names(tmp_path: Path) -> None:
    store = NameStore(store_path(API, "alice", tmp_path))
    book = NameBook(store)
    items = [(str(i), f"f{i}") for i in range(1, 1001)]
    await book.assign("sample/1", items)
    await book.flush()
    before = store._db.total_changes
    await book.assign("sample/1", [*items[1:], ("5000", "f1")])  # one gone, one new
    await book.flush()
    assert store._db.total_changes - before <= 3  # delete f1, insert f1, touch the dir
    again = NameBook(NameStore(store.path))
    assert await again.assign("sample/1", [*items[1:], ("5000", "f1")]) == {
        **{i: n for i, n in items[1:]}, "5000": "f1"}


async def test_a_damaged_store_warns_and_the_mount_names_as_before(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = store_path(API, "alice", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        store = await trio.to_thread.run_sync(open_store, API, "alice", tmp_path)
    assert store is None
    assert "for this mount only" in caplog.text and str(path) in caplog.text
    book = NameBook(store)
    assert await book.assign("projects", liver("50", "5")) == {"5": "Liver", "50": "Liver~50"}
    assert await book.assign("projects", liver("50", "5", "1")) == {
        "5": "Liver", "50": "Liver~50", "1": "Liver~1"}


async def test_an_unreadable_store_warns_instead_of_failing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = store_path(API, "alice", tmp_path)
    path.mkdir(parents=True)  # cannot be opened as a file, even by root
    with caplog.at_level(logging.WARNING):
        assert open_store(API, "alice", tmp_path) is None
    assert "remove it to start afresh" in caplog.text


async def test_a_store_that_fails_later_keeps_names_stable_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore(store_path(API, "alice", tmp_path))
    book = NameBook(store, memory_names=1)
    await book.assign("projects", liver("50"))
    store.broken = True
    with caplog.at_level(logging.WARNING):
        await book.assign("sample/9", [("1", "x")])
        await book.flush()
    assert "for this mount only from now on" in caplog.text
    assert not book.persistent
    assert await book.assign("projects", liver("50", "5")) == {"50": "Liver", "5": "Liver~5"}
    assert await book.assign("sample/9", [("1", "x"), ("0", "x")]) == {"1": "x", "0": "x~0"}


async def test_a_store_locked_by_another_mount_is_written_later(tmp_path: Path) -> None:
    path = store_path(API, "alice", tmp_path)
    book = NameBook(NameStore(path, lock_timeout=0.1))
    await book.assign("projects", liver("50"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    await book.flush()  # waits for the lock up to its timeout, then gives up for now
    assert book.persistent
    other.execute("ROLLBACK")
    other.close()
    await book.flush()
    again = NameBook(NameStore(path))
    assert await again.assign("projects", liver("50", "5")) == {"50": "Liver", "5": "Liver~5"}


async def test_two_mounts_sharing_a_store_both_write_and_keep_their_names(
        tmp_path: Path) -> None:
    path = store_path(API, "alice", tmp_path)
    a, b = NameBook(NameStore(path)), NameBook(NameStore(path))
    assert await a.assign("sample/1", [("10", "r.txt")]) == {"10": "r.txt"}
    assert await b.assign("sample/2", [("20", "s.txt")]) == {"20": "s.txt"}
    errors: list[BaseException] = []

    def hammer(book_store: NameStore, key: str) -> None:
        try:
            for n in range(30):
                book_store.save([(key, {}, {f"n{n}": str(n + 1)})])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(NameStore(path), k))
               for k in ("sample/3", "sample/4")]
    for t in threads:
        t.start()
    await a.flush()
    await b.flush()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    fresh = NameBook(NameStore(path))
    assert await fresh.assign("sample/1", [("10", "r.txt"), ("1", "r.txt")]) == {
        "10": "r.txt", "1": "r~1.txt"}
    assert await fresh.assign("sample/2", [("20", "s.txt"), ("2", "s.txt")]) == {
        "20": "s.txt", "2": "s~2.txt"}


async def test_the_store_is_bounded_and_forgets_the_least_recently_listed_first(
        tmp_path: Path) -> None:
    path = store_path(API, "alice", tmp_path)
    store = NameStore(path, max_names=100)
    book = NameBook(store)
    for d in range(10):
        await book.assign(f"sample/{d}", [(str(i), "x") for i in range(1, 31)])
        await book.flush()
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT count(*) FROM names").fetchone()
        keys = {k for (k,) in db.execute("SELECT key FROM dirs")}
    assert count <= 100
    assert "sample/9" in keys and "sample/0" not in keys


async def test_memory_holds_a_bounded_number_of_names_and_reloads_the_rest(
        tmp_path: Path) -> None:
    book = NameBook(NameStore(store_path(API, "alice", tmp_path)), memory_names=50)
    for d in range(10):
        await book.assign(f"sample/{d}", [(str(i), "x") for i in range(10, 30)])
        await book.flush()
        await book.assign("noop", [])
    assert book.names_in_memory <= 50
    assert (await book.assign("sample/0", [(str(i), "x") for i in range(1, 30)]))["10"] == "x"


async def test_rows_no_assignment_could_make_are_ignored(tmp_path: Path) -> None:
    path = store_path(API, "alice", tmp_path)
    NameStore(path).save([("projects", {}, {"Liver": "50"})])
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO names SELECT id, 'evil\u202etxt', '5' FROM dirs")
        db.execute("INSERT INTO names SELECT id, 'x', 'not-an-id' FROM dirs")
        db.execute("INSERT INTO names SELECT id, 'y', 5 FROM dirs")
    book = NameBook(NameStore(path))
    assert await book.assign("projects", liver("50", "5")) == {"50": "Liver", "5": "Liver~5"}


async def test_names_of_a_released_directory_leave_memory_once_stored(tmp_path: Path) -> None:
    book = NameBook(NameStore(store_path(API, "alice", tmp_path)))
    await book.assign("sample/60", [("600", "a.txt"), ("601", "b.txt")])
    book.release("sample/60")  # not stored yet: kept until it is
    assert book.names_in_memory == 2
    await book.flush()
    assert book.names_in_memory == 0
    await book.assign("sample/61", [("610", "c.txt")])
    await book.flush()
    book.release("sample/61")  # stored already: gone at once
    assert book.names_in_memory == 0
    # Listed again: read back from the store, the same names.
    assert await book.assign("sample/60", [("601", "b.txt"), ("600", "a.txt")]) == {
        "600": "a.txt", "601": "b.txt"}
    assert book.names_in_memory == 2
    await book.close()


async def test_a_directory_listed_again_before_the_write_stays_in_memory(
        tmp_path: Path) -> None:
    book = NameBook(NameStore(store_path(API, "alice", tmp_path)))
    await book.assign("sample/60", [("600", "a.txt")])
    book.release("sample/60")
    await book.assign("sample/60", [("600", "a.txt")])  # shown again: in use
    await book.flush()
    assert book.names_in_memory == 1
    await book.close()


async def test_without_a_store_released_names_stay_in_memory() -> None:
    book = NameBook()
    assert await book.assign("sample/60", liver("600")) == {"600": "Liver"}
    book.release("sample/60")
    await book.flush()
    assert book.names_in_memory == 1  # memory is their only copy: names stay stable
    assert await book.assign("sample/60", liver("6", "600")) == {"600": "Liver", "6": "Liver~6"}
