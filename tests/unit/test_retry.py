"""The one retry policy: what is tried again, how long it waits, and the one budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowfs.retry import MAX_ATTEMPTS, Failure, Retry, backoff_delay


@pytest.mark.parametrize(("policy", "failure", "status", "retried"), [
    (Retry(), Failure.UNSENT, 0, True),
    (Retry(resend=False), Failure.UNSENT, 0, True),  # the server saw nothing: always safe
    (Retry(), Failure.MAYBE_SENT, 0, True),
    (Retry(resend=False), Failure.MAYBE_SENT, 0, False),  # a job's POST is never sent twice
    (Retry(), Failure.UNTRUSTED, 0, False),  # a refused certificate stays refused
    (Retry(), Failure.STATUS, 503, True),
    (Retry(retry_5xx=False), Failure.STATUS, 503, False),
    (Retry(retry_5xx=False), Failure.STATUS, 429, True),
    (Retry(), Failure.STATUS, 404, False),
    (Retry(), Failure.STATUS, 400, False),
    (Retry(), Failure.BODY, 0, False),  # only reads say their bodies may be fetched again
    (Retry(body=True), Failure.BODY, 0, True),
])
def test_what_is_tried_again(policy: Retry, failure: Failure, status: int,
                             retried: bool) -> None:
    assert (policy.delay(failure, 1, status=status) is not None) is retried


def test_the_budget_is_a_number_of_exchanges_whatever_failed() -> None:
    policy = Retry(body=True)
    kinds = [Failure.UNSENT, Failure.BODY, Failure.STATUS, Failure.MAYBE_SENT, Failure.BODY]
    for attempt, kind in enumerate(kinds, 1):
        assert policy.delay(kind, attempt, status=503) is not None
    assert policy.delay(Failure.UNSENT, MAX_ATTEMPTS) is None


def test_no_wait_ends_past_the_callers_deadline() -> None:
    # Waiting into a cancellation would report "timed out" instead of the real cause.
    assert Retry().delay(Failure.STATUS, 1, status=503, retry_after="10", now=100.0,
                         deadline=105.0) is None
    assert Retry().delay(Failure.STATUS, 1, status=503, retry_after="2", now=100.0,
                         deadline=105.0) == 2.0


@given(attempt=st.integers(1, 1000), after=st.one_of(st.none(), st.text(max_size=12)))
def test_waits_are_finite_bounded_and_never_negative(attempt: int, after: str | None) -> None:
    wait = backoff_delay(attempt, after)
    assert math.isfinite(wait) and 0 <= wait <= 30.0
