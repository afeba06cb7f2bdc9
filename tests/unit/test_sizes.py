"""Sizes as text: exact for config files, approximate for people."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowfs.sizes import LONG, format_size, human_size, parse_size


@given(st.integers(min_value=0, max_value=2**50))
def test_an_exact_size_reads_back_as_itself(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_a_person_reads_whole_bytes_then_one_decimal() -> None:
    assert human_size(512) == "512B"
    assert human_size(1536) == "1.5K"
    assert human_size(3 * 2**30) == "3.0G"
    assert human_size(2**50) == "1024.0T"
    assert human_size(1536, LONG, " ") == "1.5 KiB"
    assert human_size(0, LONG, " ") == "0 B"
