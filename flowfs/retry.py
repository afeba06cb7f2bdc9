"""When a failed HTTP exchange is tried again, and after how long: the one retry policy.

Pure code, no I/O. ``api`` runs one loop per request and asks :meth:`Retry.delay` after
every failure; the answer is a number of seconds to wait, or ``None``: give up and
report the failure. One budget covers every kind of failure of one request (a
connection refused, a 503, a body cut short): at most ``attempts`` exchanges, and never
a wait that would end past the caller's deadline (a read's ``--io-timeout``, a
listing's), so a request that cannot succeed in time fails with its real cause rather
than with "timed out".

What is retried:
- a connection that was never made (refused, timed out, no free slot): always;
- a failure after the request may have reached the server (reset, cut reply): only if
  sending it twice is harmless (``resend``: GET, DELETE), never a job's POST;
- 429 always, 5xx where the caller allows it (``retry_5xx``), honouring Retry-After;
- a body that ended early or did not match the request (``body``): for reads only.
A refused certificate, 4xx and the rest are answers, not failures to retry.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

MAX_ATTEMPTS = 6
MAX_BACKOFF = 5.0
MAX_RETRY_AFTER = 30.0


class Failure(enum.Enum):
    UNSENT = "unsent"  # no connection was made: the server saw nothing
    MAYBE_SENT = "maybe-sent"  # the request may have reached the server
    UNTRUSTED = "untrusted"  # the certificate failed verification: retrying cannot help
    STATUS = "status"  # an HTTP status the caller did not accept
    BODY = "body"  # the reply's body was cut short or does not match the request


def backoff_delay(attempt: int, retry_after: str | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): jittered exponential, capped."""
    if retry_after is not None:
        try:
            value = float(retry_after)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return min(max(value, 0.0), MAX_RETRY_AFTER)
    base = min(0.1 * 2 ** (attempt - 1), MAX_BACKOFF)
    return base / 2 + random.random() * base / 2


@dataclass(frozen=True)
class Retry:
    """The retry budget of one request (see the module docstring)."""

    attempts: int = MAX_ATTEMPTS
    retry_5xx: bool = True
    resend: bool = True
    body: bool = False

    def delay(self, failure: Failure, attempt: int, *, status: int = 0,
              retry_after: str | None = None, now: float = 0.0,
              deadline: float = math.inf) -> float | None:
        """Seconds to wait before trying again after ``attempt`` failed; None: give up."""
        if attempt >= self.attempts or not self._retryable(failure, status):
            return None
        wait = backoff_delay(attempt, retry_after if failure is Failure.STATUS else None)
        if now + wait >= deadline:
            return None  # the caller would be cancelled while waiting: report the cause now
        return wait

    def _retryable(self, failure: Failure, status: int) -> bool:
        if failure is Failure.UNSENT:
            return True
        if failure is Failure.MAYBE_SENT:
            return self.resend
        if failure is Failure.BODY:
            return self.body
        if failure is Failure.STATUS:
            return status == 429 or (status >= 500 and self.retry_5xx)
        return False
