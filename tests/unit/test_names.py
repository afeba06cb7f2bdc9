"""Name mapping: what a user sees in `ls` for the names Flow gives."""

from hypothesis import given
from hypothesis import strategies as st

from flowfs.names import MAX_NAME_BYTES, assign_names, sanitize, split_ext, with_suffix


def test_slash_and_control_characters_become_underscores() -> None:
    assert sanitize("liver/2") == "liver_2"
    assert sanitize("a\x00b\nc\x7f") == "a_b_c_"


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


@given(st.lists(st.tuples(st.integers(0, 10**20).map(str), st.text(max_size=300)), max_size=30))
def test_assigned_names_are_unique_and_safe(items: list[tuple[str, str]]) -> None:
    names = assign_names(items)
    ids = {i for i, _ in items}
    assert set(names) == ids
    assert len(set(names.values())) == len(ids)
    for name in names.values():
        assert "/" not in name and "\x00" not in name
        assert name not in ("", ".", "..")
        assert len(name.encode()) <= MAX_NAME_BYTES


@given(st.lists(st.tuples(st.integers(0, 1000).map(str), st.sampled_from(["a", "b", "a.gz"])),
                max_size=12))
def test_assignment_does_not_depend_on_listing_order(items: list[tuple[str, str]]) -> None:
    assert assign_names(items) == assign_names(list(reversed(items)))
