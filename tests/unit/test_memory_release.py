"""memory.Release: memory goes back after a large release, and again once releases stop.

The kernel forgets a browsed tree in many batches, the largest part (directories and
their listings) last; a give-back only at the first large batch left most of it held.
"""

from __future__ import annotations

import trio

from flowfs.memory import Release


async def test_a_large_release_gives_back_at_once_and_again_when_releases_settle(
        autojump_clock: object) -> None:
    given: list[float] = []
    async with trio.open_nursery() as nursery:
        release = Release(nursery.start_soon, settle=1.0,
                          give=lambda: given.append(trio.current_time()))
        start = trio.current_time()
        release.freed(much=True)
        assert given == [start]  # at once
        for _ in range(5):  # more batches, each small, 0.5 s apart: the wait starts again
            await trio.sleep(0.5)
            release.freed(much=False)
    # Once more, a second after the last batch, and only once.
    assert given == [start, start + 3.5]


async def test_small_releases_alone_give_nothing_back(autojump_clock: object) -> None:
    given: list[float] = []
    async with trio.open_nursery() as nursery:
        release = Release(nursery.start_soon, give=lambda: given.append(trio.current_time()))
        for _ in range(10):
            release.freed(much=False)
            await trio.sleep(0.1)
    assert given == []


async def test_without_a_nursery_only_the_immediate_give_back_happens() -> None:
    given: list[int] = []
    release = Release(None, give=lambda: given.append(1))
    release.freed(much=True)
    release.freed(much=False)
    assert given == [1]


async def test_a_second_large_release_while_waiting_plans_no_second_wait(
        autojump_clock: object) -> None:
    given: list[float] = []
    async with trio.open_nursery() as nursery:
        release = Release(nursery.start_soon, settle=1.0,
                          give=lambda: given.append(trio.current_time()))
        release.freed(much=True)
        await trio.sleep(0.5)
        release.freed(much=True)
    assert given == [0.0, 0.5, 1.5]
