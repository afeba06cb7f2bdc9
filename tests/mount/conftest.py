"""Fixtures for real mounts against the reference server (see harness.py)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import FaultProxy, Mount, MountFactory, Processes, Server, ServerFactory, user_env

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: `-m "not mount"` leaves these out
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a ``mount`` test; ``mount`` tests need /dev/fuse and fusermount3."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.mount)
    if os.path.exists("/dev/fuse") and shutil.which("fusermount3"):
        return
    skip = pytest.mark.skip(reason="needs /dev/fuse and fusermount3")
    for item in items:
        if item.get_closest_marker("mount") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalog, generated once per test session."""
    from flowfs.server.demodata import generate

    return generate(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def catalog(demo: Path) -> dict[str, Any]:
    return json.loads(demo.read_text())


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """The module's own servers, proxies and mounts (``server``'s and ``mounts``' too):
    ``.server(catalog, *flags)``, ``.proxy(server, spec, seed, *flags)``,
    ``.mount(server, env, *flags)``; all stopped at the end of the module, mounts first."""
    with Processes(tmp_path_factory.mktemp) as procs:
        yield procs


@pytest.fixture
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Like ``module_processes``, stopped at the end of the test."""
    with Processes(tmp_path_factory.mktemp) as procs:
        yield procs


@pytest.fixture(scope="module")
def server(demo: Path, module_processes: Processes) -> Server:
    return module_processes.server(demo)


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory,
           module_processes: Processes) -> MountFactory:
    """Make mounts; every one is unmounted and its daemon stopped at the end."""
    base = tmp_path_factory.mktemp("mnt")
    serial = itertools.count()

    def make(server: Server, user: str = "alice", *args: str, **env: str) -> Mount:
        return module_processes.mount(server, user_env(user, f"{user}-pw", **env), *args,
                                      path=base / f"{user}-{next(serial)}")

    return make


@pytest.fixture(scope="module")
def alice(server: Server, mounts: MountFactory) -> Mount:
    return mounts(server, "alice")


@pytest.fixture(scope="module")
def bob(server: Server, mounts: MountFactory) -> Mount:
    return mounts(server, "bob")


@pytest.fixture
def servers(processes: Processes) -> ServerFactory:
    """Reference servers of a test's own (catalog, flags); every one stopped at the end.

    ``make(catalog, *flags)``; a test may stop and ``start()`` one again (same port and
    state dir).
    """
    return processes.server


@pytest.fixture
def own_mounts(processes: Processes) -> MountFactory:
    """Foreground mounts with a test's own environment: ``make(server, env, *flags)``.

    Every one is lazily unmounted and its daemon stopped at the end of the test.
    """
    return processes.mount


@pytest.fixture
def daemons() -> Iterator[list[Path]]:
    """Mount points of daemon-mode mounts (`flowfs mount` without --foreground).

    A test appends each mount point before mounting; at the end each is lazily unmounted
    and every daemon still serving it is stopped, by pid.
    """
    import subprocess

    from harness import daemon_pids, stop_pid

    paths: list[Path] = []
    try:
        yield paths
    finally:
        for path in paths:
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True,
                           timeout=30, check=False)
            for pid in daemon_pids(path):
                stop_pid(pid)


ProxyFactory = Callable[..., FaultProxy]


@pytest.fixture
def proxies(processes: Processes) -> ProxyFactory:
    """Fault proxies in front of servers: ``make(server, spec="off", seed=0, *flags)``.

    Every one is stopped at the end of the test.
    """
    return processes.proxy
