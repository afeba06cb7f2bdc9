"""Access-pattern policy: small random reads, growing sequential read-ahead, resets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowfs.readahead import AccessPattern, Plan, Policy

pytestmark = pytest.mark.timeout(60)

BS = 1024
NBLOCKS = 10_000


def pattern(**overrides: int) -> AccessPattern:
    settings = {"block_size": BS, "first_blocks": 1, "max_blocks": 64, "slack": 4 * BS}
    settings.update(overrides)
    return AccessPattern(Policy(**settings))


def read(p: AccessPattern, offset: int, length: int, nblocks: int = NBLOCKS) -> Plan:
    return p.on_read(offset, offset + length, nblocks)


def test_first_read_fetches_only_what_it_needs() -> None:
    p = pattern()
    plan = read(p, 5 * BS + 10, 100)
    assert plan.need == range(5, 6)
    assert plan.demand == range(5, 6)
    assert not plan.prefetch
    assert not p.sequential


def test_first_read_is_rounded_up_to_first_fetch() -> None:
    p = pattern(first_blocks=4)
    plan = read(p, 5 * BS, 100)
    assert plan.need == range(5, 6)
    assert plan.demand == range(5, 9)
    # ...but never past EOF.
    assert read(pattern(first_blocks=4), 5 * BS, 100, nblocks=7).demand == range(5, 7)


def test_sequential_reads_double_the_window_up_to_the_cap() -> None:
    p = pattern(max_blocks=16)
    position = 0
    chunks = []
    for _ in range(200):
        plan = read(p, position, BS // 2)
        position += BS // 2
        if plan.prefetch:
            chunks.append(plan.prefetch)
    sizes_seen = [len(c) for c in chunks]
    assert sizes_seen[0] == 1
    assert max(sizes_seen) <= 16
    assert p.window == 16
    # Chunks are contiguous: nothing is requested twice, nothing skipped.
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    # Read-ahead never runs more than the cap ahead of the reader.
    assert chunks[-1].stop - position // BS <= 16 + 1


def test_window_doubles_each_time_it_is_topped_up() -> None:
    p = pattern(max_blocks=64)
    windows = []
    for block in range(300):
        plan = read(p, block * BS, BS)
        if plan.prefetch:
            windows.append(p.window)
    assert windows[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert set(windows[7:]) == {64}


def test_ramp_is_proportional_to_what_was_read() -> None:
    """A reader that stops early wastes at most about what it read."""
    p = pattern(max_blocks=1024)
    furthest = 0
    for block in range(40):
        plan = read(p, block * BS, BS)
        furthest = max(furthest, plan.prefetch.stop if plan.prefetch else 0)
    assert furthest <= 3 * 40


def test_far_seek_resets_the_window() -> None:
    p = pattern()
    for block in range(20):
        read(p, block * BS, BS)
    assert p.sequential
    plan = read(p, 5000 * BS, BS)  # far forward
    assert not p.sequential
    assert not plan.prefetch
    assert plan.demand == range(5000, 5001)
    for block in range(5001, 5010):
        read(p, block * BS, BS)
    assert p.sequential
    plan = read(p, 100 * BS, BS)  # far backward
    assert not p.sequential
    assert not plan.prefetch


def test_forward_skip_inside_issued_readahead_keeps_the_window() -> None:
    p = pattern(max_blocks=64, slack=BS)
    for block in range(100):
        read(p, block * BS, BS)
    window = p.window
    ahead = p.readahead_end
    assert ahead > 110
    read(p, (ahead - 2) * BS, BS)
    assert p.window >= window


def test_rereading_the_last_bytes_does_not_reset() -> None:
    p = pattern()
    for block in range(10):
        read(p, block * BS, BS)
    window = p.window
    plan = read(p, 10 * BS - 100, 100)  # re-read the tail of the previous read
    assert p.window == window
    assert plan.demand == range(9, 10)
    assert not plan.prefetch
    plan = read(p, 10 * BS, BS)  # and carry on
    assert p.window >= window


def test_out_of_order_reads_within_slack_stay_sequential() -> None:
    p = pattern(slack=4 * BS)
    order = [0, 1, 3, 2, 4, 6, 5, 7, 8]
    for block in order:
        read(p, block * BS, BS)
        if block >= 1:
            assert p.sequential


def test_retract_replans_the_unstarted_readahead() -> None:
    p = pattern()
    for block in range(6):
        plan = read(p, block * BS, BS)
        if plan.prefetch:
            p.retract(plan.prefetch.start)  # nothing could be started
    # The reader is never left without read-ahead being re-planned.
    plan = read(p, 6 * BS, BS)
    assert plan.prefetch and plan.prefetch.start <= 7


def test_cap_argument_limits_the_window() -> None:
    p = pattern(max_blocks=64)
    for block in range(200):
        plan = p.on_read(block * BS, (block + 1) * BS, NBLOCKS, cap=4)
        assert len(plan.prefetch) <= 4
    assert p.window == 4


def test_prefetch_stops_at_eof() -> None:
    p = pattern()
    for block in range(12):
        plan = read(p, block * BS, BS, nblocks=12)
        assert plan.prefetch.stop <= 12
        assert plan.need.stop <= 12


@given(
    reads=st.lists(st.tuples(st.integers(0, 64 * BS), st.integers(1, 3 * BS)), max_size=60),
)
def test_plans_always_cover_the_read(reads: list[tuple[int, int]]) -> None:
    nblocks = 64 + 4
    p = pattern(max_blocks=8, first_blocks=2)
    for offset, length in reads:
        plan = read(p, offset, length, nblocks=nblocks)
        assert plan.need.start == offset // BS
        assert plan.need.stop == (offset + length - 1) // BS + 1
        assert plan.demand.start == plan.need.start
        assert plan.demand.stop >= plan.need.stop
        assert plan.demand.stop <= max(nblocks, plan.need.stop)
        assert len(plan.prefetch) <= 8
        assert not plan.prefetch or plan.prefetch.start >= plan.need.stop


def test_a_steeper_ramp_reaches_the_cap_in_fewer_steps() -> None:
    # On a distant link every ramp step costs a round trip: growth 4 gets there in half.
    steps = {}
    for growth in (2, 4):
        p, position, tops = pattern(max_blocks=256), 0, 0
        while p.window < 256:
            plan = p.on_read(position, position + BS, NBLOCKS, cap=256, growth=growth)
            position += BS
            tops += bool(plan.prefetch)
        steps[growth] = tops
    assert steps[4] <= steps[2] // 2 + 1


def test_at_the_cap_the_window_is_kept_full_one_request_at_a_time() -> None:
    # Once ramped up, the read-ahead in flight must not swing between half the window and
    # all of it: each request's worth consumed is topped up at once.
    cap, step = 64, 8
    p, position = pattern(max_blocks=cap), 0
    while p.window < cap:
        p.on_read(position, position + BS, NBLOCKS, cap=cap, step=step)
        position += BS
    for _ in range(500):
        plan = p.on_read(position, position + BS, NBLOCKS, cap=cap, step=step)
        position += BS
        ahead = p.readahead_end - position // BS
        assert cap - step <= ahead <= cap, ahead
        assert not plan.prefetch or len(plan.prefetch) <= step + 1


def test_a_stream_may_open_with_a_wider_window_but_not_past_the_cap() -> None:
    p = pattern()
    read(p, 0, BS)  # random: no window yet
    plan = p.on_read(BS, 2 * BS, NBLOCKS, cap=64, initial=10)
    assert p.window == 10 and plan.prefetch == range(2, 12)
    q = pattern()
    read(q, 0, BS)
    q.on_read(BS, 2 * BS, NBLOCKS, cap=4, initial=10)
    assert q.window == 4


def test_a_bulk_first_read_at_the_start_reads_its_opening_ahead() -> None:
    # Far away, a file read from its start in reads of a block or more (cp, cat, rsync,
    # Python's read()) gets one reply's worth more beside its demand: a file of a few
    # MiB comes in one round trip instead of two.
    p = pattern()
    plan = p.on_read(0, BS, NBLOCKS, opening=10)
    assert plan.demand == range(0, 1) and plan.prefetch == range(1, 11)
    assert not p.sequential and p.readahead_end == 11
    # the next read is inside what was asked for: sequential, nothing asked twice
    plan = p.on_read(BS, 2 * BS, NBLOCKS, cap=64, initial=10, opening=10)
    assert p.sequential and plan.prefetch.start >= 11
    # never past the file's end
    assert pattern().on_read(0, BS, 4, opening=10).prefetch == range(1, 4)


def test_an_opening_needs_half_a_block_at_least() -> None:
    # 128 KiB is what a bulk reader's first read is without a tuned mount (256 KiB blocks)
    assert pattern().on_read(0, BS // 2, NBLOCKS, opening=10).prefetch == range(1, 11)


@pytest.mark.parametrize(("start", "length", "first"), [
    (0, BS // 4, True),  # head, zcat | head: a small first read
    (3 * BS, BS, True),  # not at the start: a region lookup
    (0, BS, False),  # back at the start after other reads: a seek, not an opening
])
def test_no_opening_for_small_first_reads_seeks_or_later_reads(start: int, length: int,
                                                              first: bool) -> None:
    p = pattern()
    if not first:
        read(p, 500 * BS, BS)
    plan = p.on_read(start, start + length, NBLOCKS, opening=10)
    assert not plan.prefetch and p.readahead_end == plan.demand.stop


def test_a_far_random_read_takes_the_kernels_next_read_along_and_opens_no_window() -> None:
    # samtools reads 36 KiB at a region, then the kernel reads 128 KiB after it: where
    # that crossed into the next block it cost a second round trip, and it opened a
    # read-ahead window (megabytes over a far link) for a lookup that was over.
    p = pattern()
    at = 10 * BS - BS // 4  # a quarter of a block before a block's end
    plan = p.on_read(at, at + BS // 8, NBLOCKS, margin=BS // 2)
    assert plan.demand == range(9, 11)  # its block and the next, in one request
    plan = p.on_read(at + BS // 8, at + BS // 8 + BS // 2, NBLOCKS, initial=10, margin=BS // 2)
    assert plan.need == range(9, 11) and not plan.prefetch and not p.sequential
    # a reader that goes on past the demand is streaming: the window opens
    plan = p.on_read(11 * BS, 12 * BS, NBLOCKS, initial=10, margin=BS // 2)
    assert p.sequential and plan.prefetch
    # near (no margin), a window is cheap: the second read opens one, as it always did
    q = pattern()
    assert q.on_read(at, at + 10, NBLOCKS).demand == range(9, 10)
    assert q.on_read(at + 10, at + 20, NBLOCKS, initial=10).prefetch and q.sequential


def test_a_run_from_the_start_is_trusted_sooner_than_one_from_a_lookup() -> None:
    # `cat` from offset 0 gets the whole window after one request's worth; a run that
    # began at a region (a CRAM container, a large BAM region) must read four times as
    # much first, so a lookup of a few MiB does not pull the whole window behind it.
    def blocks_until_cap(first: int) -> int:
        p = pattern(max_blocks=256)
        read(p, first * BS, BS)
        position = (first + 1) * BS
        while p.window < 256:
            p.on_read(position, position + BS, NBLOCKS, cap=256, growth=4, initial=2,
                      confident=64, confident_start=16)
            position += BS
        return position // BS - first

    assert blocks_until_cap(0) == 16
    assert 16 < blocks_until_cap(5000) <= 64


def test_a_run_past_the_confidence_mark_opens_the_whole_window() -> None:
    # A far stream that has read 16 blocks in one run is streaming, not looking up an
    # index: its window goes to the cap at once instead of ramping step by step.
    p = pattern(max_blocks=256)
    read(p, 0, BS)  # random: the run starts at block 0
    position = BS
    while position < 15 * BS:
        p.on_read(position, position + BS, NBLOCKS, cap=256, growth=4, initial=2,
                  confident=16)
        position += BS
        assert p.window < 256  # a region query of under 16 blocks never gets the cap
    p.on_read(position, position + BS, NBLOCKS, cap=256, growth=4, initial=2, confident=16)
    assert p.window == 256
    # a seek starts a new run: the next one must earn it again
    read(p, 5000 * BS, BS)
    p.on_read(5001 * BS, 5002 * BS, NBLOCKS, cap=256, growth=4, initial=2, confident=16)
    assert p.window == 2
