"""Link estimate and per-stream limits: pure policy, sized to what the link measured."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowfs.link import FAR_REQUEST, LinkEstimate, StreamLimits, stream_limits

MiB = 2**20
BS = 256 * 1024
NEAR = {"block_size": BS, "max_request": 8 * MiB, "near_cap": 64 * MiB, "near_parallel": 8}


def link(latency: float, rate: float, samples: int = 10) -> LinkEstimate:
    return LinkEstimate.of(latency, rate, samples)


def limits(est: LinkEstimate, share: int = 256 * MiB) -> StreamLimits:
    return stream_limits(est, share=share, **NEAR)  # type: ignore[arg-type]


def test_a_near_link_keeps_the_loopback_settings() -> None:
    got = limits(link(0.0005, 900 * MiB))
    assert got == StreamLimits(request_blocks=32, cap_blocks=256, max_parallel=8, growth=2)
    assert got.opening_blocks == 0 and got.margin == 0  # near: a round trip costs little


def test_a_distant_link_keeps_many_small_requests_in_flight() -> None:
    # 50 ms to the first byte, 50 MiB/s per reply: 4 MiB take ~130 ms, so filling a
    # fast consumer needs well over the loopback window and its eight requests.
    got = limits(link(0.05, 50 * MiB))
    assert got.request_blocks * BS == FAR_REQUEST
    assert got.cap_blocks * BS > 64 * MiB
    assert got.max_parallel >= 16 and got.growth == 4
    # the ramp starts at what one reply brings in one latency, at most one request
    assert got.initial_blocks == 10 and got.initial_blocks <= got.request_blocks
    # and a bulk read from a file's start brings that much beside its first block
    assert got.opening_blocks == got.initial_blocks
    # a random read also takes the kernel's read-ahead after it along (128 KiB)
    assert got.margin == 128 * 1024


def test_more_latency_means_a_larger_window_up_to_the_share() -> None:
    caps = [limits(link(latency, 100 * MiB)).cap_blocks
            for latency in (0.005, 0.01, 0.05, 0.5)]
    assert caps == sorted(caps) and caps[0] < caps[-1]
    assert caps[-1] * BS == 256 * MiB  # the share bounds it


def test_a_distant_window_covers_twice_what_a_mount_can_consume() -> None:
    # Only about two thirds of a window is in flight on average (the rest landed and
    # waits to be read, or waits for the reader to free a slot): a window of 1 GiB/s
    # times one request's duration held wan50 to ~45 MiB in flight and ~650 MiB/s.
    got = limits(link(0.05, 100 * MiB), share=1024 * MiB)
    duration = 0.05 + FAR_REQUEST / (100 * MiB)  # 90 ms
    assert got.cap_blocks * BS >= 2 * 1024 * MiB * duration
    assert got.max_parallel * FAR_REQUEST >= got.cap_blocks * BS  # enough requests for it


@given(latency=st.floats(0, 10), rate=st.floats(0, 1e12), share=st.integers(BS, 2**34))
def test_limits_never_exceed_the_share_and_stay_usable(latency: float, rate: float,
                                                      share: int) -> None:
    got = limits(link(latency, rate), share=share)
    assert 1 <= got.cap_blocks <= max(1, -(-share // BS))
    assert 1 <= got.request_blocks <= 8 * MiB // BS
    assert 1 <= got.max_parallel <= 64 and got.growth in (2, 4)
    assert 1 <= got.initial_blocks <= min(got.request_blocks, got.cap_blocks)
    assert 0 <= got.opening_blocks <= got.request_blocks


def test_before_any_range_reply_the_api_hints_the_latency() -> None:
    # A fresh mount has talked to the API (login, listings) before it reads a file: its
    # first file over a distant link must not ramp as if the link were loopback.
    est = LinkEstimate()
    assert not est.far
    est.hint(0.080)  # the first API reply, with its TLS handshake
    est.hint(0.052)
    est.hint(0.300)  # a slow listing says nothing new: the least counts
    assert est.latency == 0.052 and est.far
    assert limits(est).opening_blocks > 0 and limits(est).request_blocks * BS == FAR_REQUEST
    # the first Range reply replaces the guess, whichever way it was wrong...
    est.observe(4 * MiB, first_byte=0.0004, total=0.004)
    assert est.latency == 0.0004 and not est.far
    # ...and later API replies no longer move it
    est.hint(0.05)
    assert est.latency == 0.0004


def test_the_estimate_follows_the_replies_it_is_given() -> None:
    est = LinkEstimate()
    est.observe(4 * MiB, first_byte=0.05, total=0.13)
    assert est.latency == 0.05 and abs(est.rate - 4 * MiB / 0.08) < 1 and est.far
    for _ in range(40):
        est.observe(4 * MiB, first_byte=0.001, total=0.005)
    assert est.latency == 0.001 and not est.far  # the distant replies left the window
    before = (est.latency, est.rate, est.samples)
    est.observe(4 * MiB, first_byte=0.2, total=0.1)  # impossible timings are ignored
    assert (est.latency, est.rate, est.samples) == before


def test_a_busy_loopback_is_still_near() -> None:
    # Under load single replies of a loopback server took 5 to 40 ms to start: queueing
    # only adds delay, so the least of the recent ones is the path's own.
    est = LinkEstimate()
    for delay in [0.0004, 0.009, 0.039, 0.0055, 0.012, 0.0007, 0.021, 0.0075] * 4:
        est.observe(8 * MiB, first_byte=delay, total=delay + 0.01)
    assert est.latency == 0.0004 and not est.far
    # a real 50 ms path never answers faster than 50 ms
    far = LinkEstimate()
    for delay in [0.05, 0.09, 0.12, 0.051] * 8:
        far.observe(4 * MiB, first_byte=delay, total=delay + 0.08)
    assert far.latency == 0.05 and far.far
