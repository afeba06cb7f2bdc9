"""Fixtures for real mounts against the reference server (see harness.py)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Mount, Server, user_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.path.exists("/dev/fuse") and shutil.which("fusermount3"):
        return
    skip = pytest.mark.skip(reason="needs /dev/fuse and fusermount3")
    for item in items:
        if "mount" in str(item.fspath):
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
def server(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(demo, tmp_path_factory.mktemp("server"))
    try:
        yield srv.start()
    finally:
        srv.stop()


MountFactory = Callable[..., Mount]


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountFactory]:
    """Make mounts; every one is unmounted and its daemon stopped at the end."""
    made: list[Mount] = []
    base = tmp_path_factory.mktemp("mnt")

    def make(server: Server, user: str = "alice", *args: str, **env: str) -> Mount:
        m = Mount(server, base / f"{user}-{len(made)}", user_env(user, f"{user}-pw", **env),
                  args)
        made.append(m)
        return m.start()

    try:
        yield make
    finally:
        for m in made:
            m.close()


@pytest.fixture(scope="module")
def alice(server: Server, mounts: MountFactory) -> Mount:
    return mounts(server, "alice")


@pytest.fixture(scope="module")
def bob(server: Server, mounts: MountFactory) -> Mount:
    return mounts(server, "bob")


ServerFactory = Callable[..., Server]


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Reference servers of a test's own (catalog, flags); every one stopped at the end.

    ``make(catalog, *flags)``; a test may stop and ``start()`` one again (same port and
    state dir).
    """
    made: list[Server] = []

    def make(catalog: Path, *args: str) -> Server:
        srv = Server(catalog, tmp_path_factory.mktemp("own-server"), args)
        made.append(srv)
        return srv.start()

    try:
        yield make
    finally:
        for srv in made:
            srv.stop()


@pytest.fixture
def own_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountFactory]:
    """Foreground mounts with a test's own environment: ``make(server, env, *flags)``.

    Every one is lazily unmounted and its daemon stopped at the end of the test.
    """
    made: list[Mount] = []
    base = tmp_path_factory.mktemp("own-mnt")

    def make(server: Server, env: dict[str, str], *args: str) -> Mount:
        m = Mount(server, base / f"m{len(made)}", env, args)
        made.append(m)
        return m.start()

    try:
        yield make
    finally:
        for m in made:
            m.close()


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


ProxyFactory = Callable[..., Any]


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyFactory]:
    """Fault proxies in front of servers: ``make(server, spec="off", seed=0, *flags)``.

    Every one is stopped at the end of the module.
    """
    from harness import FaultProxy

    made: list[FaultProxy] = []

    def make(server: Server, spec: str = "off", seed: int = 0, *args: str) -> FaultProxy:
        proxy = FaultProxy(server, tmp_path_factory.mktemp("proxy"), spec, seed, args)
        made.append(proxy)
        return proxy.start()

    try:
        yield make
    finally:
        for proxy in made:
            proxy.stop()
