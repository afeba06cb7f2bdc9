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
