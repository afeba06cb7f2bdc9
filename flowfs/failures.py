"""The failures a mount answered with an error: how many of each errno, and the last one.

``ops.fuse_errors`` records every request it answers with ``EIO`` or ``EACCES``
(the errors a user cannot explain from the tree itself: a timeout, an
unreachable server, refused credentials), so ``flowfs status`` can say what
went wrong and when without anyone reading the log. ``ENOENT`` for a name that
does not exist, ``EROFS`` for a write outside ``.downloads/`` and the like are
answers, not failures, and are not counted.

The message is the same one the log carries, with the log's patterns for
secrets (tokens, passwords in URLs) blanked: ``.flowfs/stats`` is readable by
everyone who may enter the mount.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowfs.logs import Redactor

RECORDED = frozenset({errno.EIO, errno.EACCES})
MAX_MESSAGE = 500


@dataclass(frozen=True)
class Failure:
    """One failed request: the operation, its errno's name, what happened, when."""

    operation: str
    error: str
    message: str
    at: float  # seconds since the epoch

    def as_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "error": self.error, "message": self.message,
                "at": round(self.at, 3)}


class Failures:
    """The counts of the failures a mount answered, by errno, and the last of them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._redactor = Redactor()
        self.by_error: Counter[str] = Counter()
        self.last: Failure | None = None

    def record(self, operation: str, code: int, message: str) -> None:
        """Count a request answered with ``code``, if it is a failure (see ``RECORDED``)."""
        if code not in RECORDED:
            return
        name = errno.errorcode.get(code, str(code))
        self.by_error[name] += 1
        text = self._redactor.redact(message)
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 1] + "…"
        self.last = Failure(operation, name, text, self._clock())

    @property
    def count(self) -> int:
        return sum(self.by_error.values())

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "by_error": dict(sorted(self.by_error.items())),
                "last": None if self.last is None else self.last.as_json()}
