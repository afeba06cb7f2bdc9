"""The `.downloads/` manifest parser: what each kind of line means, and every refusal."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowfs.manifest import (
    MAX_LINE_BYTES,
    UNTERMINATED,
    Entry,
    Manifest,
    draft_name,
    format_errors,
    open_line,
    parse,
    relative_path,
    valid_name,
)

MOUNT = "/home/ana/flow"


def one(line: str | bytes, mountpoint: str = MOUNT) -> Manifest:
    raw = line.encode() if isinstance(line, str) else line
    return parse(raw, mountpoint)


def only_error(line: str | bytes) -> str:
    """The message of the single error a one-line manifest must produce."""
    m = one(line)
    assert m.entries == []
    assert len(m.errors) == 1, m.errors
    number, message = m.errors[0]
    assert number == 1
    return message


# -- paths -----------------------------------------------------------------------------------


def test_a_relative_path_is_relative_to_the_mount_root() -> None:
    m = one("projects/Liver RNA-seq/samples\n")
    assert m.entries == [Entry(1, "path", "projects/Liver RNA-seq/samples")]
    assert m.errors == [] and m.by_execution is False


def test_redundant_slashes_and_dots_are_tidied() -> None:
    m = one("./samples/./liver_1//liver_1.bam/")
    assert m.entries == [Entry(1, "path", "samples/liver_1/liver_1.bam")]


def test_surrounding_whitespace_and_crlf_are_ignored() -> None:
    m = one("  samples/liver_1 \r\n\tdata/notes.txt\t\r\n")
    assert [e.value for e in m.entries] == ["samples/liver_1", "data/notes.txt"]
    assert m.errors == []


def test_an_absolute_path_inside_the_mount_becomes_relative() -> None:
    m = one(f"{MOUNT}/samples/liver_1/liver_1.bam")
    assert m.entries == [Entry(1, "path", "samples/liver_1/liver_1.bam")]


def test_a_mountpoint_given_with_a_trailing_slash_still_matches() -> None:
    m = one(f"{MOUNT}/data/notes.txt", mountpoint=MOUNT + "/")
    assert m.entries == [Entry(1, "path", "data/notes.txt")]


@pytest.mark.parametrize("line", ["/etc/passwd", "/home/ana/flowers/x", "/home/ana", "/"])
def test_an_absolute_path_outside_the_mount_is_refused(line: str) -> None:
    message = only_error(line)
    assert "outside the mount" in message and MOUNT in message and line in message


@pytest.mark.parametrize("line", [MOUNT, MOUNT + "/", MOUNT + "/./", ".", "./"])
def test_the_whole_mount_is_refused(line: str) -> None:
    assert "whole mount" in only_error(line)


@pytest.mark.parametrize(
    "line", ["..", "../etc/passwd", "samples/../data", "samples/liver_1/..", f"{MOUNT}/../x"]
)
def test_dot_dot_is_refused_wherever_it_is(line: str) -> None:
    message = only_error(line)
    assert "'..' is not allowed" in message and line in message


@pytest.mark.parametrize("line", [".downloads", ".downloads/x.zip", f"{MOUNT}/.downloads/"])
def test_downloads_itself_cannot_be_archived(line: str) -> None:
    assert "cannot archive .downloads" in only_error(line)


def test_relative_path_reports_problems_without_raising() -> None:
    assert relative_path("samples/a", MOUNT) == ("samples/a", None)
    path, problem = relative_path("/srv/x", MOUNT)
    assert path == "" and problem is not None and "outside" in problem


# -- ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("line,ident", [("id:102", "102"), ("id: 102", "102"),
                                        ("id:9007199254740993", "9007199254740993"),
                                        ("  id:7  ", "7")])
def test_id_lines_name_a_data_id(line: str, ident: str) -> None:
    m = one(line)
    assert m.entries == [Entry(1, "id", ident)] and m.errors == []


def test_a_huge_id_stays_a_string_of_digits() -> None:
    m = one("id:" + "9" * 40)
    assert m.entries[0].value == "9" * 40  # never turned into a float


@pytest.mark.parametrize(
    "line", ["id:", "id:abc", "id:12ab", "id:-1", "id:1.5", "id:1e5",
             "id:\u0663", "id:" + "1" * 41]
)
def test_a_bad_id_is_refused(line: str) -> None:
    message = only_error(line)
    assert "data id is a number" in message and line.strip() in message


# -- comments, blank lines, options ----------------------------------------------------------


def test_comments_and_blank_lines_are_ignored_but_counted() -> None:
    raw = "# my archive\n\n   \n\t# indented comment\nsamples/liver_1\n#\n../x\n"
    m = one(raw)
    assert m.entries == [Entry(5, "path", "samples/liver_1")]
    assert [n for n, _ in m.errors] == [7]


def test_an_empty_manifest_has_nothing_and_no_errors() -> None:
    for raw in (b"", b"\n", b"# only a comment\n", b"\n\n  \n"):
        m = parse(raw, MOUNT)
        assert m.entries == [] and m.errors == [] and m.by_execution is False


@pytest.mark.parametrize(
    "line,value",
    [("by_execution: true", True), ("by_execution:true", True), ("By_Execution: TRUE", True),
     ("by_execution: false", False), ("by_execution :  False ", False)],
)
def test_by_execution_option(line: str, value: bool) -> None:
    m = one(f"{line}\nsamples/liver_1\n")
    assert m.by_execution is value
    assert m.errors == [] and m.entries == [Entry(2, "path", "samples/liver_1")]


@pytest.mark.parametrize("line", ["by_execution: maybe", "by_execution:", "by_execution: 2"])
def test_by_execution_garbage_is_refused(line: str) -> None:
    message = only_error(line)
    assert "by_execution must be true or false" in message


def test_the_last_by_execution_line_wins() -> None:
    assert one("by_execution: true\nby_execution: false\n").by_execution is False


# -- bytes that are not a path ---------------------------------------------------------------


def test_a_nul_character_is_refused() -> None:
    assert "NUL" in only_error(b"samples/liver\x001")


def test_non_utf8_is_refused_on_its_own_line_only() -> None:
    m = parse(b"samples/liver_1\n\xff\xfebad\ndata/notes.txt\n", MOUNT)
    assert m.errors == [(2, "not UTF-8 text")]
    assert [e.line for e in m.entries] == [1, 3]


def test_a_line_of_exactly_the_limit_is_fine_one_more_is_refused() -> None:
    fits = "samples/" + "x" * (MAX_LINE_BYTES - len("samples/"))
    assert len(fits) == MAX_LINE_BYTES == 4096
    assert one(fits).errors == []
    message = only_error(fits + "x")
    assert "longer than 4096" in message
    assert len(message) < 200  # the error does not repeat the whole line


def test_the_line_limit_counts_bytes_as_written() -> None:
    fits = "samples/" + "é" * ((MAX_LINE_BYTES - len("samples/")) // 2)
    assert len(fits.encode()) == MAX_LINE_BYTES
    assert one(fits).errors == []
    assert "longer than 4096 bytes" in only_error(fits + "x")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400).map(lambda b: b.replace(b"\x01", b"\n")),
       cuts=st.lists(st.integers(0, 400), max_size=12))
def test_open_line_follows_the_unfinished_line_however_the_bytes_are_cut(
    raw: bytes, cuts: list[int]
) -> None:
    tail = 0
    points = sorted({0, len(raw), *(c for c in cuts if c <= len(raw))})
    for a, b in zip(points, points[1:], strict=False):
        tail = open_line(tail, raw[a:b])
    assert tail == len(raw) - (raw.rfind(b"\n") + 1)


def test_a_whole_manifest_must_end_with_a_newline() -> None:
    m = parse(b"samples/liver_1\nsamples/liver_", MOUNT, whole=True)
    assert m.errors == [(2, UNTERMINATED)]
    assert [e.line for e in m.entries] == [1]  # the cut line is not taken as a path
    assert parse(b"samples/liver_1\n", MOUNT, whole=True).errors == []
    assert parse(b"samples/liver_1\n  \t", MOUNT, whole=True).errors == []
    assert parse(b"samples/liver_1\n# the end", MOUNT, whole=True).errors == []
    assert parse(b"samples/liver_", MOUNT).errors == []  # a piece being written: not whole


@pytest.mark.parametrize("name", ["x.manifest.part", ".x.manifest.part", "a.tmp", "a-1.b.tmp"])
def test_draft_names(name: str) -> None:
    assert draft_name(name)


@pytest.mark.parametrize("name", ["x.manifest", ".part", "x.part~", "x.swp", "..x.part",
                                  "a b.part", "x.partial", "x/y.tmp"])
def test_not_draft_names(name: str) -> None:
    assert not draft_name(name)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "liver", "liver-2024_v1.final", "9", "a" * 100, "A.b-c_d"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name", ["", ".hidden", "a b", "a/b", "a" * 101, "liver\u00e9", "tab\there", "x*", "é"]
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_a_name_ending_in_a_newline_is_invalid() -> None:
    assert not valid_name("a\n")
    assert not valid_name("\na")


# -- error report ----------------------------------------------------------------------------


def test_errors_are_reported_in_line_order_with_their_numbers() -> None:
    text = format_errors([(7, "id:x: a data id is a number"), (2, "../a: '..' is not allowed")],
                         "liver")
    lines = text.splitlines()
    assert "liver.manifest" in lines[0] and "not submitted" in lines[0]
    assert lines[-2:] == ["line 2: ../a: '..' is not allowed",
                          "line 7: id:x: a data id is a number"]
    assert text.endswith("\n")


def test_a_manifest_with_several_bad_lines_reports_each() -> None:
    raw = "\n".join([
        "samples/liver_1",        # 1 ok
        "/etc/passwd",            # 2 outside
        "# comment",              # 3
        "id:abc",                 # 4 bad id
        "projects/../x",          # 5 ..
        "by_execution: perhaps",  # 6 bad option
        "id:102",                 # 7 ok
        ".downloads/a.zip",       # 8 .downloads
    ]).encode()
    m = parse(raw, MOUNT)
    assert [n for n, _ in m.errors] == [2, 4, 5, 6, 8]
    assert [(e.line, e.kind) for e in m.entries] == [(1, "path"), (7, "id")]
    report = format_errors(m.errors, "mixed")
    for number in (2, 4, 5, 6, 8):
        assert f"line {number}: " in report


# -- fuzzing and scale -----------------------------------------------------------------------

MOUNTPOINTS = st.sampled_from([MOUNT, "/", "/mnt/a b/flow/", "/x"])


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=3000), mountpoint=MOUNTPOINTS)
def test_random_bytes_never_raise_and_errors_carry_real_line_numbers(raw: bytes,
                                                                     mountpoint: str) -> None:
    m = parse(raw, mountpoint)
    assert isinstance(m, Manifest)
    lines = raw.count(b"\n") + 1
    for number, message in m.errors:
        assert 1 <= number <= lines and message
    for entry in m.entries:
        assert 1 <= entry.line <= lines
        parts = entry.value.split("/")
        assert entry.value and "" not in parts and ".." not in parts and "." not in parts
        assert entry.kind == "id" or parts[0] != ".downloads"
    format_errors(m.errors, "fuzz")


_GOOD = ["samples/liver_1", "id:102", f"{MOUNT}/data/notes.txt", "# note", "",
         "by_execution: true", "projects/P q/samples/s~13/r.fastq.gz"]
_BAD = ["../x", "id:nope", "/etc/hosts", ".downloads", "by_execution: sure", "a\x00b", "\udcff"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), max_size=60))
def test_every_bad_line_and_only_bad_lines_are_reported_by_number(
    picks: list[tuple[bool, int]],
) -> None:
    lines = [(_BAD if bad else _GOOD)[i] for bad, i in picks]
    raw = b"\n".join(line.encode("utf-8", "surrogateescape") for line in lines)
    m = parse(raw, MOUNT)
    expected = [n for n, (bad, _) in enumerate(picks, start=1) if bad]
    assert [n for n, _ in m.errors] == expected


def test_a_hundred_thousand_entries_parse_quickly() -> None:
    raw = b"".join(b"projects/P/samples/s%d/r_%d.fastq.gz\nid:%d\n" % (i, i, i)
                   for i in range(50_000))
    start = time.perf_counter()
    m = parse(raw, MOUNT)
    elapsed = time.perf_counter() - start
    assert len(m.entries) == 100_000 and not m.errors
    assert elapsed < 3.0, f"{elapsed:.2f} s"


# -- misspelt keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["by_executon: true", "by-execution: true", "byexecution:false",
                                  "By_Executions: yes", "by_execution_: 1"])
def test_a_misspelt_key_is_named_with_the_right_one(line: str) -> None:
    key = line.split(":")[0]
    assert only_error(line) == f"unknown key {key!r}: did you mean by_execution?"


def test_an_unknown_key_with_a_yes_or_no_names_the_keys() -> None:
    assert only_error("zip_it: yes") == "unknown key 'zip_it' (the only key is by_execution)"


@pytest.mark.parametrize("line", ["samples/a:b", "projects/P/samples/x:y/z.bam"])
def test_a_path_with_a_colon_is_still_a_path(line: str) -> None:
    assert [e.value for e in one(line).entries] == [line]
