"""Parsing API JSON: ids stay exact, timestamps in either form, bad input is refused."""

import pytest

from flowfs.errors import BadReply
from flowfs.model import DataFile, Execution, parse_id, parse_time


def test_big_ids_are_never_rounded() -> None:
    assert parse_id("9007199254740993") == "9007199254740993"
    assert parse_id(9007199254740993) == "9007199254740993"


@pytest.mark.parametrize("bad", [1.5, True, None, "12a", "", "-3", {"id": 1}])
def test_bad_ids_are_refused(bad: object) -> None:
    with pytest.raises(BadReply):
        parse_id(bad)


def test_timestamps_as_numbers_or_iso_strings() -> None:
    assert parse_time(1700000000) == 1700000000.0
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_time("garbage") == 0.0
    assert parse_time(None) == 0.0


def test_data_file_from_a_list_item() -> None:
    d = DataFile.from_json({"id": "100", "filename": "a.bam", "size": 12, "created": 5,
                            "md5": "x" * 32, "sample": {"id": "10", "name": "s"},
                            "execution": None})
    got = (d.id, d.filename, d.size, d.sample_id, d.execution_id)
    assert got == ("100", "a.bam", 12, "10", None)
    assert d.placement_known


@pytest.mark.parametrize("size", [-1, 2**63, "1e3", 1.5, True])
def test_impossible_sizes_are_refused(size: object) -> None:
    with pytest.raises(BadReply):
        DataFile.from_json({"id": "1", "filename": "f", "size": size})


def test_execution_directory_name() -> None:
    named = Execution.from_json({"id": "20", "identifier": "brave_turing", "pipeline_name": "RNA"})
    anon = Execution.from_json({"id": "21", "identifier": None, "pipeline_name": "RNA-Seq"})
    assert named.dirname == "brave_turing"
    assert anon.dirname == "RNA-Seq-21"
