"""Task helpers: run jobs concurrently and raise one plain error, not a group.

trio wraps the errors of a nursery's tasks in an ``ExceptionGroup``; the daemon's
callers catch domain errors (``except Transient``), which a group would slip past.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from flowfs.errors import FlowError


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first leaf of an exception group, preferring domain errors (for the errno)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    flow = [e for e in leaves if isinstance(e, FlowError)]
    return (flow or leaves)[0]


async def gather(*jobs: Callable[[], Awaitable[None]]) -> None:
    """Run ``jobs`` concurrently; on failure raise one plain error, not a group.

    trio wraps errors from a nursery in an ExceptionGroup; callers here catch
    domain errors (``except Transient``), which a group would slip past.
    """
    try:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
