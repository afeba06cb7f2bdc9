"""Running a mount: build the components, mount, serve, unmount.

One nursery holds everything the daemon runs (FUSE workers, read-ahead,
signal watcher); each component's teardown sits beside its setup. The
readiness report (``ready``) is sent only once the kernel has answered a
``stat`` of the mount point through us.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from flowfs import metrics
from flowfs.api import FlowAPI, lean_route, new_client
from flowfs.auth import Credentials
from flowfs.buffers import BufferPool
from flowfs.config import STATS_DIR, MountConfig
from flowfs.diskfetch import DiskFetch, open_cache
from flowfs.downloads import Downloads
from flowfs.errors import AuthExpired, ConfigError, FlowError, Forbidden, Transient, Untrusted
from flowfs.inodes import InodeTable
from flowfs.kernel import Tuning, tune
from flowfs.link import LinkEstimate
from flowfs.logs import parse_levels
from flowfs.mounts import Hung, within
from flowfs.namebook import NameBook, open_store
from flowfs.nodes import FileNode, Node
from flowfs.ops import Operations
from flowfs.reader import Reader, ReaderConfig
from flowfs.stats import MountState, stats_dir
from flowfs.tree import Tree

log = logging.getLogger(__name__)

Ready = Callable[[str | None], None]  # None = mounted; else the error to report


def check_mountpoint(path: Path) -> None:
    """Refuse a missing, non-directory, non-empty or stale mount point, saying what to do."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"mount point {path} does not exist (mkdir -p {path})") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise ConfigError(
                f"{path} is a stale mount of a dead daemon; run 'flowfs umount {path}' first"
            ) from None
        raise ConfigError(f"mount point {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        # stat() alone can succeed on a dead daemon's mount (the kernel kept the root's
        # attributes); asking the filesystem itself tells a stale mount from a live one.
        if _probe(path) == errno.ENOTCONN:
            raise ConfigError(f"{path} is a stale mount of a dead daemon; "
                              f"run 'flowfs umount {path}' first")
        raise ConfigError(f"{path} is already a mount point; 'flowfs umount {path}' first")
    held = sorted(os.listdir(path))
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise ConfigError(
            f"mount point {path} is not empty (it holds {shown}): mounting would hide them; "
            f"mount on an empty directory, or a new one with "
            f"'flowfs mount --mkdir {path.with_name(path.name + '-2')}'")


PROBE_TIMEOUT = 2.0


def _probe(path: Path) -> int | None:
    """The errno of a ``statvfs`` of ``path`` (None: it answered, or not within 2 s).

    A hung daemon would block the call: it runs in a thread that is then abandoned.
    """
    try:
        within(lambda: os.statvfs(path), PROBE_TIMEOUT, "flowfs-probe")
    except OSError as exc:
        return exc.errno
    except Hung:
        pass
    return None


async def preflight(api: FlowAPI, creds: Credentials | None) -> str | None:
    """Talk to the server once before mounting, so bad credentials fail loudly now.

    Returns the user's name as the server knows it.
    """
    if creds is None:
        raise ConfigError(
            "no credentials: run 'flowfs login', or set FLOW_API_TOKEN or FLOW_TOKEN_FILE"
        )
    try:
        me = await api.get_json("/me")
    except (AuthExpired, Forbidden):
        raise ConfigError(
            f"the server refused the credentials from {creds.source}: run 'flowfs login'"
        ) from None
    except Untrusted as exc:
        raise ConfigError(f"cannot mount {api.api_url}: {exc}") from None
    except Transient as exc:
        raise ConfigError(
            f"cannot reach Flow at {api.api_url}: {exc} (check the URL with 'flowfs config', "
            "and any proxy settings)"
        ) from None
    user = me.get("username")
    return user if isinstance(user, str) else None


def fuse_options(config: MountConfig) -> set[str]:
    options = {"fsname=flowfs", "subtype=flowfs", "noatime"}
    if config.allow_other:
        # Others may enter only where the mode bits allow: the kernel checks them.
        options |= {"allow_other", "default_permissions"}
    if parse_levels(config.log_level).fuse_debug:  # libfuse's raw dump: only when named
        options.add("debug")
    return options


def receive_buffers(config: ReaderConfig, files_url: str) -> BufferPool | None:
    """Where evicted blocks go to take new bodies; None where nothing would take them.

    Only the lean transport receives into buffers it is given (HTTP or HTTPS, without a
    proxy); elsewhere httpx makes its own, and spares offered to a pool nobody takes from
    would only pile up (up to a quarter of the cache).
    """
    if not lean_route(files_url):
        return None
    return BufferPool(config.block_size, limit=config.spare_buffers)


def sized_for_link(config: ReaderConfig, link: LinkEstimate) -> ReaderConfig:
    """Half the memory budget for read-ahead in flight where the files are far, as the
    API's replies before the mount hint it (``LinkEstimate.hint``), else a quarter.

    Over 100 ms per request eight files at once read at 291-305 MiB/s with a quarter and
    375-400 with half (emulated link, 512 MiB budget): bytes in flight, not bytes kept,
    decide it there. The cache keeps the rest, so the budget holds either way; a link
    that turns out near only keeps less in the cache. "Half" stops at what the cache
    keeps (``ReaderConfig.readahead_budget``): with the disk's write queue held outside,
    a little less than half.
    """
    return dataclasses.replace(config, readahead_part=2) if link.far else config


def _invalidate(parent: int, name: str) -> None:
    pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)


async def run(config: MountConfig, creds: Credentials | None, ready: Ready,
              stopping: Callable[[], None] | None = None) -> None:
    """Mount and serve until unmounted or signalled.

    Reports readiness through ``ready``; calls ``stopping`` once unmounting begins.
    """
    reader_config = ReaderConfig(cache_bytes=config.cache_size, io_timeout=config.io_timeout)
    buffers = receive_buffers(reader_config, config.files_url)
    async with new_client(allocate=bytearray if buffers is None else buffers.take) as client:
        api = FlowAPI(config.api_url, config.files_url, creds, client)
        user = await preflight(api, creds)
        names = NameBook(await trio.to_thread.run_sync(open_store, config.api_url, user))
        scrape = await metrics.listen(config.metrics_addr) if config.metrics_addr else None
        async with trio.open_nursery() as nursery:
            reader, disk = _open_reader(config, reader_config, api, buffers, nursery)
            inodes: InodeTable[Node] = InodeTable()
            tree = Tree(api, inodes, ttl=config.dir_ttl, invalidate=_invalidate,
                        io_timeout=config.io_timeout, names=names, spawn=nursery.start_soon)
            downloads = Downloads(tree, str(config.mountpoint))
            # Its kernel tuning is filled in once the mount answers; failures, as they come.
            state = MountState(config, api, reader, inodes, downloads, user,
                               creds.source if creds else None, buffers, disk=disk)
            tree.add_root_entries({".downloads": downloads.directory,
                                   STATS_DIR: stats_dir(tree, state.snapshot)})
            ops = Operations(tree, inodes, reader, downloads, uid=config.uid, gid=config.gid,
                             ttl=config.dir_ttl, umask=config.umask, failures=state.failures)
            pyfuse3.init(ops, str(config.mountpoint), fuse_options(config))
            try:
                tree.warm()
                _start_tasks(nursery, state, names, ready, scrape)
                await pyfuse3.main(min_tasks=4, max_tasks=MAX_REQUESTS)
            finally:
                await _unmount(config, names, stopping, nursery)


def _open_reader(config: MountConfig, reader_config: ReaderConfig, api: FlowAPI,
                 buffers: BufferPool | None, nursery: trio.Nursery
                 ) -> tuple[Reader, DiskFetch | None]:
    """The reader, over the disk cache (if any, its tasks started) over the network.

    The disk cache sits under the reader's memory cache, inside its fetch: the
    reader's single-flight and read-ahead rules apply unchanged.
    """
    async def network(target: FileNode, start: int, end: int) -> Any:
        # Block-sized pieces go straight into the cache without another copy.
        return await api.fetch_range(target.url, start, end, chunk=reader_config.block_size,
                                     size=target.size)

    reader_config = sized_for_link(reader_config, api.link)
    disk = open_cache(config, network, reader_config.block_size, buffers)
    if disk is not None:
        reader_config = dataclasses.replace(reader_config, held_outside=disk.queue_bytes)
    if buffers is not None:  # spares for what can be in flight, the write queue counted
        buffers.limit = reader_config.spare_buffers
    fetch = network if disk is None else disk
    reader = Reader(fetch, nursery, reader_config,  # type: ignore[arg-type]
                    recycle=None if buffers is None else buffers.offer, link=api.link,
                    ahead=None if disk is None else disk.ahead)  # type: ignore[arg-type]
    if disk is not None:
        # Writes owed while its queue was full come from the reader's cache; only
        # where the files are far (a fetch again costs little near).
        nursery.start_soon(disk.run, reader.cached, lambda: api.link.far)
    return reader, disk


def _start_tasks(nursery: trio.Nursery, state: MountState, names: NameBook, ready: Ready,
                 scrape: list[trio.SocketListener] | None) -> None:
    """What runs beside the FUSE loop while mounted."""
    nursery.start_soon(_watch_signals)
    nursery.start_soon(names.run)
    nursery.start_soon(state.downloads.run)
    nursery.start_soon(_announce_ready, state.config.mountpoint, ready, state.kernel)
    nursery.start_soon(state.api.warm_files, WARM_CONNECTIONS)
    if scrape is not None:
        nursery.start_soon(metrics.serve, scrape,
                           lambda: metrics.exposition(state.snapshot()))


async def _unmount(config: MountConfig, names: NameBook, stopping: Callable[[], None] | None,
                   nursery: trio.Nursery) -> None:
    """Unmount, store the names given since the last write, and stop every task."""
    log.info("unmounting %s", config.mountpoint)
    if stopping is not None:
        stopping()
    pyfuse3.close(unmount=True)
    with trio.move_on_after(10) as last_write:
        last_write.shield = True  # the names given since the last write
        await names.close()
    nursery.cancel_scope.cancel()


async def _watch_signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


async def _announce_ready(mountpoint: Path, ready: Ready, tuning: Tuning) -> None:
    """Report readiness once a stat of the mount point is answered by this process."""
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError as exc:
        ready(f"the mount does not answer: {exc.strerror}")
        return
    if st.st_ino != pyfuse3.ROOT_INODE:
        ready("the mount point does not show the mounted filesystem")
        return
    await trio.to_thread.run_sync(tune, st.st_dev, tuning)
    ready(None)


# FUSE requests handled at once. A request waiting for the network holds its handler: with
# 64 of them, 100 lookups of a pipeline's processes on a stalled API froze every `ls` and
# `stat` of the mount until they timed out (and 64 read-ahead requests in flight, see
# kernel.MAX_BACKGROUND, could take them all). Handlers are trio tasks: cheap, made on demand.
MAX_REQUESTS = 1024
# Keep-alive connections to the files server opened right after mounting: a TLS
# handshake costs round trips that the first reads would otherwise wait for.
WARM_CONNECTIONS = 8


def unmount(path: Path) -> str:
    """Unmount a live or stale flowfs mount; returns what happened, raises FlowError if not."""
    for args in (["fusermount3", "-u"], ["fusermount3", "-u", "-z"]):
        proc = subprocess.run([*args, str(path)], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return "unmounted" if "-z" not in args else "unmounted (lazily: files were open)"
        err = proc.stderr.strip()
        if "not found in /etc/mtab" in err or "not mounted" in err:
            raise FlowError(f"{path} is not mounted")
    raise FlowError(f"could not unmount {path}: {err}")
