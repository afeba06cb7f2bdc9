"""Remembered names: which item holds which name in each directory, across remounts.

``names.assign`` keeps a name with the item that held it, given what the directory
held. A :class:`NameBook` holds that per directory key (``projects``, ``sample/60``,
``execution/20/results``) for a mount, and a :class:`NameStore` keeps it on disk, one
SQLite file per (server, user) under ``$XDG_STATE_HOME/flowfs/names/``, so that a path
keeps its item after a remount too.

Why SQLite (the standard library's): a listing that changes nothing writes nothing, and
one that changes writes only the changed rows, in one transaction; a 50,000-entry
directory is never rewritten as a whole. Its locking lets two mounts of the same user
share a file: each write is a transaction that deletes the names its mount freed (only
if they still have the same holder) and writes the names it gave, so the last writer
wins name by name and nothing is half-written. The rollback journal (not WAL) keeps it
working on network home directories.

Rules kept here:
1. No await between reading a directory's held names and storing the new ones
   (``NameBook.assign``): two listings of one directory never lose each other's names.
2. Writes leave the listing path: changed directories are marked and written by
   ``run`` at most once per ``delay`` (and by ``flush`` at unmount), in a worker thread.
3. A store that cannot be opened, read or written is never fatal: the mount warns once
   and goes on with names remembered in memory only (as stable within the mount; a
   directory without history in memory is named by the first-listing rule).
4. Memory holds the directories listed lately, up to ``memory_names`` names; a directory
   is dropped from memory only once it is safely stored (and read again when listed).
   A directory whose listing the tree let go of (``release``) leaves memory as soon as it
   is stored, whatever the bound: names cost memory while they are shown, not after.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import trio

from flowfs.config import state_dir
from flowfs.model import is_id
from flowfs.names import assign, sanitize

log = logging.getLogger(__name__)

MAX_NAMES = 500_000  # in one store (about 20 MB); the least recently listed directories go
MEMORY_NAMES = 100_000  # held in memory once stored (about 17 MB of typical names)
FLUSH_DELAY = 1.0  # seconds between a change and its write
_TOUCH_AFTER = 86_400.0  # a directory's "last listed" time is refreshed at most daily
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dirs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,
                                 used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dirs_used ON dirs (used);
CREATE TABLE IF NOT EXISTS names (dir INTEGER NOT NULL, name TEXT NOT NULL,
                                  item TEXT NOT NULL, PRIMARY KEY (dir, name)) WITHOUT ROWID;
"""

Held = dict[str, str]  # name -> id of its holder


class StoreError(Exception):
    """The store cannot be used (damaged, unreadable, a newer format)."""


class StoreBusy(StoreError):
    """Another mount holds the store's lock for too long: try again later."""


def store_path(api_url: str, user: str, base: Path | None = None) -> Path:
    """The store of one (server, user): ``names/<user>@<host>-<hash>.sqlite3``."""
    host = urlsplit(api_url).netloc
    slug = re.sub(r"[^A-Za-z0-9._@-]", "_", f"{user}@{host}")[:100]
    digest = hashlib.sha256(f"{api_url}\0{user}".encode()).hexdigest()[:12]
    return (base or state_dir()) / "names" / f"{slug}-{digest}.sqlite3"


class NameStore:
    """The SQLite file behind a :class:`NameBook`. Blocking: call it from a worker thread."""

    def __init__(self, path: Path, *, api_url: str = "", user: str = "",
                 max_names: int = MAX_NAMES, lock_timeout: float = 2.0) -> None:
        self.path = path
        self._max = max_names
        self._lock_timeout = lock_timeout  # waiting for another mount's write
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        try:
            self._db = self._open(api_url, user)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: {exc}") from None

    def _open(self, api_url: str, user: str) -> sqlite3.Connection:
        # Names of projects and samples are nobody else's business: 0700 and 0600.
        for folder in (self.path.parent.parent, self.path.parent):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the journal SQLite makes takes the file's mode
        finally:
            os.close(fd)
        db = sqlite3.connect(self.path, timeout=self._lock_timeout, isolation_level=None,
                             check_same_thread=False)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StoreError(f"written by a newer flowfs (format {version})")
            if version < _SCHEMA_VERSION:  # a new file; an existing one is opened without a write
                db.executescript(_SCHEMA)
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [("api_url", api_url), ("user", user)])
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM dirs").fetchone()  # damaged? say so now
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def load(self, key: str) -> Held:
        """The names the directory ``key`` held (rows no assignment could make are skipped)."""
        with self._lock, _errors():
            row = self._db.execute("SELECT id, used FROM dirs WHERE key = ?", (key,)).fetchone()
            if row is None:
                return {}
            dir_id, used = row
            if time.time() - used > _TOUCH_AFTER:
                self._db.execute("UPDATE dirs SET used = ? WHERE id = ?", (time.time(), dir_id))
            rows = self._db.execute("SELECT name, item FROM names WHERE dir = ?", (dir_id,))
            return {name: item for name, item in rows
                    if isinstance(name, str) and isinstance(item, str) and is_id(item)
                    and sanitize(name) == name}

    def save(self, changes: Iterable[tuple[str, Held, Held]]) -> None:
        """Write (key, held before, held now) changes in one transaction, then keep the bound."""
        now = time.time()
        added = 0
        with self._lock, _errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, before, after in changes:
                    self._db.execute("INSERT INTO dirs (key, used) VALUES (?, ?) ON CONFLICT "
                                     "(key) DO UPDATE SET used = excluded.used", (key, now))
                    (dir_id,) = self._db.execute("SELECT id FROM dirs WHERE key = ?",
                                                 (key,)).fetchone()
                    self._db.executemany(
                        "DELETE FROM names WHERE dir = ? AND name = ? AND item = ?",
                        [(dir_id, n, i) for n, i in before.items() if after.get(n) != i])
                    new = [(dir_id, n, i) for n, i in after.items() if before.get(n) != i]
                    self._db.executemany("INSERT OR REPLACE INTO names VALUES (?, ?, ?)", new)
                    added += len(new)
                if added:
                    self._prune()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _prune(self) -> None:
        """Forget the least recently listed directories until the store is under its bound.

        Cut to nine tenths of it, so that a store at its bound is not pruned on every write.
        """
        (count,) = self._db.execute("SELECT count(*) FROM names").fetchone()
        if count <= self._max:
            return
        target = self._max * 9 // 10
        oldest = self._db.execute("SELECT id FROM dirs ORDER BY used, id").fetchall()
        for (dir_id,) in oldest:
            if count <= target:
                break
            (n,) = self._db.execute("SELECT count(*) FROM names WHERE dir = ?",
                                    (dir_id,)).fetchone()
            self._db.execute("DELETE FROM names WHERE dir = ?", (dir_id,))
            self._db.execute("DELETE FROM dirs WHERE id = ?", (dir_id,))
            count -= n


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """sqlite3 and OS errors as StoreError (StoreBusy for a lock held by another mount)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreBusy(str(exc)) from None
        raise StoreError(str(exc)) from None
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(str(exc)) from None


def open_store(api_url: str, user: str | None, base: Path | None = None) -> NameStore | None:
    """The store of (server, user), or None (with a warning) when there cannot be one."""
    if not user:
        log.warning("the server did not say who you are: names are remembered for this "
                    "mount only")
        return None
    path = store_path(api_url, user, base)
    try:
        return NameStore(path, api_url=api_url, user=user)
    except StoreError as exc:
        log.warning("names are remembered for this mount only: cannot use the store %s "
                    "(remove it to start afresh)", exc)
        return None


class NameBook:
    """The names each directory holds, for ``names.assign``; see the module's rules."""

    def __init__(self, store: NameStore | None = None, *, memory_names: int = MEMORY_NAMES,
                 delay: float = FLUSH_DELAY) -> None:
        self._store = store
        self._memory_names = memory_names
        self._delay = delay
        self._held: OrderedDict[str, Held] = OrderedDict()  # least recently listed first
        self._count = 0
        self._stored: dict[str, Held] = {}  # changed directories -> what the store has
        self._released: set[str] = set()  # no listing shows them: drop once stored
        self._changed = trio.Event()

    @property
    def persistent(self) -> bool:
        """Whether names are written to a store (else they last as long as the mount)."""
        return self._store is not None

    @property
    def names_in_memory(self) -> int:
        return self._count

    async def assign(self, key: str, items: Iterable[tuple[str, str]],
                     taken: Iterable[str] = ()) -> dict[str, str]:
        """Names for a complete listing of directory ``key``, remembered for the next one."""
        if key not in self._held:
            loaded = await self._load(key)
            if key not in self._held:  # no other listing of it loaded it meanwhile
                self._put(key, loaded)
        # Rule 1: no await from here on.
        self._released.discard(key)
        held = self._held[key]
        self._held.move_to_end(key)
        out = assign(items, taken, held)
        if out.held != held:
            self._stored.setdefault(key, held)
            self._put(key, out.held)
            self._changed.set()
        self._evict()
        return out.names

    def _put(self, key: str, held: Held) -> None:
        self._count += len(held) - len(self._held.get(key, ()))
        self._held[key] = held
        self._held.move_to_end(key)

    def release(self, key: str) -> None:
        """No listing shows directory ``key`` now: its names leave memory once stored.

        Without a store they stay (memory is their only copy).
        """
        if self._store is None or key not in self._held:
            return
        if key in self._stored:
            self._released.add(key)  # dropped once the next flush has written it
        else:
            self._count -= len(self._held.pop(key))

    def _drop_released(self) -> None:
        for key in [k for k in self._released if k not in self._stored]:
            self._released.discard(key)
            if key in self._held:
                self._count -= len(self._held.pop(key))

    def _evict(self) -> None:
        if self._store is None or self._count <= self._memory_names:
            return  # (without a store, memory is the only copy)
        for key in list(self._held):
            if self._count <= self._memory_names:
                return
            if key not in self._stored:
                self._count -= len(self._held.pop(key))

    async def _load(self, key: str) -> Held:
        store = self._store
        if store is None:
            return {}
        try:
            return await trio.to_thread.run_sync(store.load, key, abandon_on_cancel=True)
        except StoreError as exc:
            if self._store is store and not isinstance(exc, StoreBusy):
                self._give_up(exc)
            else:
                log.warning("names of %s are not known from earlier mounts: %s", key, exc)
            return {}

    async def run(self) -> None:
        """Rule 2: write changes at most once per ``delay``, until cancelled."""
        while True:
            await self._changed.wait()
            await trio.sleep(self._delay)
            await self.flush()

    async def close(self) -> None:
        """Write what is left and close the store (at unmount)."""
        await self.flush()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def flush(self) -> None:
        """Write every change made so far (in a worker thread)."""
        self._changed = trio.Event()
        store = self._store
        if store is None or not self._stored:
            self._stored.clear()
            return
        changes = [(key, before, self._held[key]) for key, before in self._stored.items()]
        self._stored = {}
        try:
            await trio.to_thread.run_sync(store.save, changes)
            self._drop_released()
        except StoreBusy as exc:
            log.info("the name store is busy (%s): writing later", exc)
            for key, before, _ in changes:  # what the store has is still the older state
                self._stored[key] = before
            self._changed.set()
        except StoreError as exc:
            self._give_up(exc)

    def _give_up(self, exc: StoreError) -> None:
        """Rule 3: warn once, then keep every name in memory only."""
        if self._store is None:
            return
        log.warning("names are remembered for this mount only from now on: the store %s "
                    "failed: %s (remove it to start afresh)", self._store.path, exc)
        store, self._store = self._store, None
        self._stored.clear()
        self._released.clear()
        store.close()
