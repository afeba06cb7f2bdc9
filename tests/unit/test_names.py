"""Name mapping: what a user sees in `ls` for the names Flow gives."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowfs.names import (
    MAX_NAME_BYTES,
    assign,
    assign_names,
    sanitize,
    split_ext,
    with_suffix,
)

# What a name may never contain: separators, NUL, C0, DEL, C1, bidirectional controls,
# line/paragraph separators, unpaired surrogates.
FORBIDDEN = re.compile(
    "[/\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
# hypothesis' st.text() leaves surrogates out by default: these alphabets put them in,
# with the C1, bidi and separator characters and a few that matter to names (`.`, `~`).
NASTY = ("\ud800\udbff\udc00\udc80\udfff\x80\x85\x9b\x9f\u202a\u202b\u202c\u202d\u202e"
         "\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029\x00\x1b\n\x7f/.~é\U0001d518")
CHARS = st.one_of(st.sampled_from(NASTY), st.characters(codec=None, categories=None))
NAMES = st.text(CHARS, max_size=300)


def assert_safe(name: str) -> None:
    name.encode("utf-8", "strict")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert not FORBIDDEN.search(name), ascii(name)
    assert name not in ("", ".", "..")


def test_slash_and_control_characters_become_underscores() -> None:
    assert sanitize("liver/2") == "liver_2"
    assert sanitize("a\x00b\nc\x7f") == "a_b_c_"


def test_c1_bidi_and_separator_characters_become_underscores() -> None:
    assert sanitize("a\x85b\x9bc\x80") == "a_b_c_"
    assert sanitize("invoice\u202etxt.exe") == "invoice_txt.exe"
    assert sanitize("\u2066x\u2069\u200e\u200f\u061c") == "_x____"
    assert sanitize("line\u2028para\u2029") == "line_para_"


def test_lone_surrogates_become_underscores_instead_of_failing() -> None:
    assert sanitize("rep\ud800.txt") == "rep_.txt"
    assert sanitize("\udc80\udfff") == "__"


def test_names_that_merely_look_foreign_are_kept() -> None:
    assert sanitize("échantillon_肝臓_\U0001d518.bam") == "échantillon_肝臓_\U0001d518.bam"


@given(NAMES)
@settings(max_examples=500, deadline=None)
def test_any_name_becomes_a_strict_utf8_harmless_component(name: str) -> None:
    assert_safe(sanitize(name))


@given(NAMES, st.integers(0, 10**40 - 1).map(str))
@settings(max_examples=300, deadline=None)
def test_a_suffixed_name_is_as_safe_and_keeps_its_suffix(name: str, item_id: str) -> None:
    out = with_suffix(sanitize(name), f"~{item_id}")
    assert_safe(out)
    assert f"~{item_id}" in out


def test_a_long_extension_never_pushes_a_suffixed_name_past_255_bytes() -> None:
    name = sanitize("a." + "b" * 252)
    out = with_suffix(name, "~12")
    assert len(out.encode()) <= MAX_NAME_BYTES and "~12" in out


def test_dot_names_and_empty_names_are_made_safe() -> None:
    assert sanitize(".") == "_."
    assert sanitize("..") == "_.."
    assert sanitize("") == "_"


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = sanitize("x" * 400 + ".bam")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name.endswith(".bam")


def test_multibyte_names_are_cut_on_character_boundaries() -> None:
    name = sanitize("é" * 300)
    assert len(name.encode()) <= MAX_NAME_BYTES
    name.encode().decode()  # valid UTF-8


def test_compression_suffix_stays_with_its_format() -> None:
    assert split_ext("a.fastq.gz") == ("a", ".fastq.gz")
    assert split_ext("sample.v2.bam") == ("sample.v2", ".bam")
    assert split_ext(".bashrc") == (".bashrc", "")
    assert with_suffix("reads.fastq.gz", "~105") == "reads~105.fastq.gz"


def test_collision_lowest_id_keeps_the_bare_name() -> None:
    names = assign_names([("11", "rep"), ("10", "rep")])
    assert names == {"10": "rep", "11": "rep~11"}


def test_ids_compare_as_numbers_not_strings() -> None:
    names = assign_names([("9", "x"), ("10", "x")])
    assert names["9"] == "x"


def test_a_new_item_never_renames_an_old_one() -> None:
    before = assign_names([("10", "rep"), ("11", "rep"), ("12", "other")])
    after = assign_names([("10", "rep"), ("11", "rep"), ("12", "other"), ("13", "rep")])
    assert all(after[i] == before[i] for i in before)


def test_names_that_sanitise_alike_collide_too() -> None:
    names = assign_names([("1", "a/b"), ("2", "a_b")])
    assert sorted(names.values()) == ["a_b", "a_b~2"]


def test_taken_names_win_over_files() -> None:
    names = assign_names([("5", "results")], taken=["results"])
    assert names["5"] == "results~5"


@given(st.lists(st.tuples(st.integers(0, 10**20).map(str), NAMES), max_size=30))
@settings(deadline=None)
def test_assigned_names_are_unique_and_safe(items: list[tuple[str, str]]) -> None:
    names = assign_names(items)
    ids = {i for i, _ in items}
    assert set(names) == ids
    assert len(set(names.values())) == len(ids)
    for name in names.values():
        assert_safe(name)


@pytest.mark.timeout(10)
def test_a_name_that_looks_like_its_own_suffixed_form_does_not_hang_the_naming() -> None:
    # 255 bytes ending in "~3.txt": adding "~3" and cutting back to 255 bytes gave the
    # same name again, and the loop looking for a free name never ended.
    name = "a" * 249 + "~3.txt"
    names = assign_names([("2", name), ("3", name)])
    assert names["2"] == name and names["3"] != name
    assert len(names["3"].encode()) <= MAX_NAME_BYTES


def near_limit(item_id: int, more: str, short: int) -> str:
    """A name of about 255 bytes that ends the way a suffixed name does."""
    tail = f"~{item_id}{more}.txt"
    return "a" * (MAX_NAME_BYTES - short - len(tail)) + tail


NEAR_LIMIT = [near_limit(i, more, short) for i in (1, 2, 3) for more in ("", "~2")
              for short in (0, 1)]


@pytest.mark.timeout(20)
@given(st.lists(st.tuples(st.integers(1, 3).map(str), st.sampled_from(NEAR_LIMIT)),
                max_size=8))
@settings(deadline=None)
def test_names_at_the_length_limit_that_end_like_suffixes_still_get_unique_names(
        items: list[tuple[str, str]]) -> None:
    names = assign_names(items)
    assert len(set(names.values())) == len({i for i, _ in items})
    for name in names.values():
        assert_safe(name)


@given(st.lists(st.tuples(st.integers(0, 1000).map(str), st.sampled_from(["a", "b", "a.gz"])),
                max_size=12))
def test_assignment_does_not_depend_on_listing_order(items: list[tuple[str, str]]) -> None:
    assert assign_names(items) == assign_names(list(reversed(items)))


# -- names that stay: assignments remembered from earlier listings --------------------------

def test_a_newcomer_with_a_lower_id_does_not_take_a_held_name() -> None:
    first = assign([("50", "Liver")])
    later = assign([("50", "Liver"), ("5", "Liver")], held=first.held)
    assert later.names == {"50": "Liver", "5": "Liver~5"}


def test_without_history_the_lowest_id_keeps_the_bare_name() -> None:
    assert assign([("50", "Liver"), ("5", "Liver")]).names == {"5": "Liver", "50": "Liver~50"}


def test_a_name_is_freed_when_its_holder_leaves_the_listing() -> None:
    held = assign([("50", "Liver"), ("5", "Liver")], held={"Liver": "50"}).held
    gone = assign([("5", "Liver")], held=held)
    assert gone.names == {"5": "Liver~5"}, "a holder keeps its own name"
    assert "Liver" not in gone.held
    again = assign([("5", "Liver"), ("7", "Liver")], held=gone.held)
    assert again.names == {"5": "Liver~5", "7": "Liver"}


def test_a_renamed_item_shows_its_new_name_and_its_old_one_stays_unused() -> None:
    held = assign([("50", "Liver")]).held
    renamed = assign([("50", "Kidney"), ("5", "Liver")], held=held)
    assert renamed.names == {"50": "Kidney", "5": "Liver~5"}
    assert renamed.held["Liver"] == "50"
    back = assign([("50", "Liver"), ("5", "Liver")], held=renamed.held)
    assert back.names == {"50": "Liver", "5": "Liver~5"}


def test_a_held_name_that_a_directory_now_takes_goes_to_the_directory() -> None:
    held = assign([("9", "results")]).held
    assert assign([("9", "results")], taken=["results"], held=held).names == {"9": "results~9"}


LISTING = st.lists(st.tuples(st.integers(1, 30).map(str),
                             st.sampled_from(["rep", "rep~5", "rep~5~2", "a/b", "a_b", "x.gz",
                                              "x~7.gz", "\ud800", "_", ""])),
                   max_size=12)


@given(st.lists(LISTING, min_size=1, max_size=8))
@settings(max_examples=400, deadline=None)
def test_in_any_sequence_of_listings_a_shown_name_stays_with_its_item(
        listings: list[list[tuple[str, str]]]) -> None:
    held: dict[str, str] = {}
    before: dict[str, str] = {}  # id -> name shown by the previous listing
    bases: dict[str, str] = {}
    for step, items in enumerate(listings):
        out = assign(items, held=held)
        now = {i: min(sanitize(r) for j, r in items if j == i) for i, _ in items}
        if step == 0:
            assert out.names == assign_names(items), "a first listing follows the old rule"
        assert set(out.names) == set(now)
        assert len(set(out.names.values())) == len(out.names)
        for item_id, name in out.names.items():
            assert_safe(name)
            if item_id in before and bases[item_id] == now[item_id]:
                assert name == before[item_id], "an item kept in the listing kept its name"
            holder = held.get(name)
            assert holder in (None, item_id) or holder not in now, \
                "a name held by a listed item went to another"
        assert assign(list(reversed(items)), held=held) == out
        held, before, bases = out.held, out.names, now
