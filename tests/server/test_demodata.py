"""The demo data generator writes real, indexed files and a catalog that hangs together."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pysam
import pytest

from flowfs.server import demodata

pytestmark = pytest.mark.timeout(60)

SECTIONS = ("users", "projects", "samples", "executions", "data")
SMALL = 0.05  # a scale that still yields every file, in a fraction of a second


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default demo data set, generated once for the module; returns the catalog path."""
    return demodata.generate(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def catalog(demo: Path) -> dict[str, Any]:
    return json.loads(demo.read_text())


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def tree_md5s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): md5_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def data_named(catalog: dict[str, Any], filename: str) -> list[dict[str, Any]]:
    return [d for d in catalog["data"] if d["filename"] == filename]


def file_of(demo: Path, record: dict[str, Any]) -> Path:
    return demo.parent / record["path"]


def bams(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in catalog["data"] if d["filename"].endswith(".bam")]


# --- the catalog ------------------------------------------------------------------------------


def test_every_path_exists_with_the_size_and_md5_the_catalog_gives(
        demo: Path, catalog: dict[str, Any]) -> None:
    for record in catalog["data"]:
        path = file_of(demo, record)
        assert path.is_file(), record
        assert path.stat().st_size == record["size"]
        assert md5_of(path) == record["md5"]
        assert "/" not in record["filename"]


def test_catalog_shape_ids_and_references(catalog: dict[str, Any]) -> None:
    assert set(catalog) == set(SECTIONS)
    users = {u["username"] for u in catalog["users"]}
    assert users == {"alice", "bob", "carol"}
    assert {u["password"] for u in catalog["users"]} == {"alice-pw", "bob-pw", "carol-pw"}
    ids = {section: [o["id"] for o in catalog[section]] for section in SECTIONS[1:]}
    for section, values in ids.items():
        assert len(values) == len(set(values)), section
        assert all(isinstance(v, str) and v.isdigit() for v in values), section
    for obj in [o for s in SECTIONS[1:] for o in catalog[s]]:
        assert obj["owner"] in users
    for project in catalog["projects"]:
        assert set(project["shared_with"]) <= users
    assert {s["project"] for s in catalog["samples"]} <= set(ids["projects"])
    for execution in catalog["executions"]:
        assert execution["project"] in ids["projects"]
        assert execution["sample"] in (None, *ids["samples"])
    for data in catalog["data"]:
        assert data.get("sample") in (None, *ids["samples"])
        assert data.get("execution") in (None, *ids["executions"])
        assert ("output_path" in data) == ("execution" in data)


def test_ids_beyond_float_precision_survive_json(catalog: dict[str, Any]) -> None:
    big = [d for d in catalog["data"] if int(d["id"]) > 2**53]
    assert big, "some data id must exceed 2**53"
    assert all(float(d["id"]) != int(d["id"]) for d in big)


def test_timestamps_are_distinct_and_plausible(catalog: dict[str, Any]) -> None:
    stamps = [o["created"] for s in SECTIONS[1:] for o in catalog[s]]
    assert len(stamps) == len(set(stamps))
    assert all(1_704_067_200 <= t < 1_798_761_600 for t in stamps)  # 2024 .. 2026
    for execution in catalog["executions"]:
        assert execution["started"] >= execution["created"]
        if execution["status"] == "OK":
            assert execution["finished"] > execution["started"]


def test_catalog_has_the_cases_a_filesystem_must_handle(catalog: dict[str, Any]) -> None:
    projects = {p["name"]: p for p in catalog["projects"]}
    assert projects["Liver RNA-seq"]["shared_with"] == ["bob"]
    assert projects["Public ChIP-seq atlas"]["private"] is False
    assert projects["Alice private pilot"]["shared_with"] == []
    assert any(p["owner"] == "bob" and p["private"] for p in catalog["projects"])
    names = Counter((s["project"], s["name"]) for s in catalog["samples"])
    assert names[(projects["Liver RNA-seq"]["id"], "rep")] == 2
    assert any("/" in s["name"] for s in catalog["samples"])
    assert any(" " in s["name"] for s in catalog["samples"])
    identifiers = {e["identifier"] for e in catalog["executions"]}
    assert "brave_turing" in identifiers and None in identifiers
    public = projects["Public ChIP-seq atlas"]["id"]
    assert any(e["project"] == public for e in catalog["executions"])
    per_sample = Counter((d["sample"], d["filename"]) for d in catalog["data"] if "sample" in d)
    assert max(per_sample.values()) == 2


def test_execution_outputs_have_nested_paths(catalog: dict[str, Any]) -> None:
    turing = next(e for e in catalog["executions"] if e["identifier"] == "brave_turing")
    outputs = {d["output_path"] for d in catalog["data"] if d.get("execution") == turing["id"]}
    assert {"results/counts/all.gene_counts.tsv", "multiqc/multiqc_report.html",
            "pipeline_info/params.json"} <= outputs
    star = [o for o in outputs if o.startswith("results/star/") and o.endswith(".out.bam")]
    assert len(star) == 4
    assert all(f"{o}.bai" in outputs for o in star)


def test_loose_files_have_the_sizes_the_read_tests_rely_on(catalog: dict[str, Any]) -> None:
    loose = {d["filename"]: d for d in catalog["data"]
             if "sample" not in d and "execution" not in d and d["owner"] == "alice"}
    assert loose["empty.txt"]["size"] == 0
    assert loose["one_byte.txt"]["size"] == 1
    assert loose["random.bin"]["size"] == 3 * 1024 * 1024 + 12345
    assert {"notes.txt", "reference.fa", "reference.fa.fai"} <= set(loose)


# --- the file formats -------------------------------------------------------------------------


def test_bam_region_count_by_index_equals_a_full_scan(demo: Path, catalog: dict[str, Any]) -> None:
    for record in bams(catalog):
        path = file_of(demo, record)
        assert Path(f"{path}.bai").is_file()
        with pysam.AlignmentFile(str(path), "rb") as bam:
            header = bam.header.to_dict()
            assert header["HD"]["SO"] == "coordinate"
            assert header["RG"] and header["PG"]
            indexed = bam.count("chr1", 1000, 5000)
        with pysam.AlignmentFile(str(path), "rb", index_filename=None) as bam:
            scanned = sum(1 for r in bam.fetch(until_eof=True)
                          if r.reference_name == "chr1" and r.reference_start < 5000
                          and (r.reference_end or 0) > 1000)
        assert indexed == scanned > 0, record["path"]


def test_bams_hold_varied_alignments(demo: Path, catalog: dict[str, Any]) -> None:
    record = next(d for d in bams(catalog) if "Aligned" in d["filename"])
    with pysam.AlignmentFile(str(file_of(demo, record)), "rb") as bam:
        reads = list(bam.fetch("chr1"))
    cigar_ops = {op for r in reads for op, _ in r.cigartuples or ()}
    assert {0, 1, 2, 3, 4} <= cigar_ops  # M I D N S
    assert all(r.is_paired and r.is_proper_pair for r in reads)
    assert len({r.mapping_quality for r in reads}) > 1
    assert all(r.query_length == len(r.query_qualities or ()) for r in reads)


@pytest.mark.skipif(shutil.which("samtools") is None, reason="samtools not installed")
def test_samtools_reads_the_bams(demo: Path, catalog: dict[str, Any]) -> None:
    for record in bams(catalog)[:3]:
        path = str(file_of(demo, record))
        subprocess.run(["samtools", "quickcheck", path], check=True, timeout=30)
        out = subprocess.run(["samtools", "view", "-c", path, "chr1:1001-5000"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        with pysam.AlignmentFile(path, "rb") as bam:
            assert int(out) == bam.count("chr1", 1000, 5000)


@pytest.mark.skipif(shutil.which("tabix") is None, reason="tabix not installed")
def test_tabix_queries_the_vcfs(demo: Path, catalog: dict[str, Any]) -> None:
    vcfs = [d for d in catalog["data"] if d["filename"].endswith(".vcf.gz")]
    assert len(vcfs) >= 3
    for record in vcfs:
        path = str(file_of(demo, record))
        out = subprocess.run(["tabix", path, "chr1:1-100000"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        rows = [line.split("\t") for line in out.splitlines()]
        assert rows and all(r[0] == "chr1" and 1 <= int(r[1]) <= 100000 for r in rows)
        positions = [int(r[1]) for r in rows]
        assert positions == sorted(positions)


def test_vcf_header_and_records_parse(demo: Path, catalog: dict[str, Any]) -> None:
    record = data_named(catalog, "liver_1.vcf.gz")[0]
    with pysam.TabixFile(str(file_of(demo, record))) as vcf:
        assert set(vcf.contigs) == {"chr1", "chr2", "chrM"}
        assert vcf.header[0] == "##fileformat=VCFv4.2"
        rows = [line.split("\t") for line in vcf.fetch("chr2")]
    assert rows and all(len(r) == 10 and r[8] == "GT:AD:DP:GQ" for r in rows)


def test_fastq_gz_holds_valid_paired_records(demo: Path, catalog: dict[str, Any]) -> None:
    r1, r2 = (data_named(catalog, f"liver_1_{read}.fastq.gz")[0] for read in ("R1", "R2"))
    names = []
    for record in (r1, r2):
        lines = gzip.decompress(file_of(demo, record).read_bytes()).decode().splitlines()
        assert len(lines) % 4 == 0 and lines
        for header, seq, plus, qual in zip(*[iter(lines)] * 4, strict=True):
            assert header.startswith("@") and plus == "+"
            assert len(seq) == len(qual) and set(seq) <= set("ACGTN")
        names.append([h.split()[0] for h in lines[::4]])
    assert names[0] == names[1]


def test_reference_fasta_is_indexed(demo: Path, catalog: dict[str, Any]) -> None:
    fasta = file_of(demo, data_named(catalog, "reference.fa")[0])
    with pysam.FastaFile(str(fasta)) as ref:
        assert dict(zip(ref.references, ref.lengths, strict=True))["chr1"] == 200_000
        assert set(ref.fetch("chr2", 0, 1000)) <= set("ACGT")


def test_counts_table_and_report(demo: Path, catalog: dict[str, Any]) -> None:
    counts = file_of(demo, data_named(catalog, "all.gene_counts.tsv")[0]).read_text()
    header, *rows = [line.split("\t") for line in counts.splitlines()]
    assert header[:2] == ["gene_id", "gene_name"] and len(header) == 6
    assert rows and all(len(r) == 6 and all(c.isdigit() for c in r[2:]) for r in rows)
    report = next(d for d in data_named(catalog, "multiqc_report.html")
                  if d["output_path"] == "multiqc/multiqc_report.html"
                  and d["execution"] == "20")
    text = file_of(demo, report).read_text()
    assert text.startswith("<!DOCTYPE html>") and "<table" in text
    assert all(f"<td>{sample}</td>" in text for sample in header[2:])


# --- determinism, scale and the other entry points ---------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = demodata.generate(tmp_path / "a", scale=SMALL, seed=7).parent
    again = demodata.generate(tmp_path / "b", scale=SMALL, seed=7).parent
    other = demodata.generate(tmp_path / "c", scale=SMALL, seed=8).parent
    assert tree_md5s(first) == tree_md5s(again)
    expected, changed = tree_md5s(first), tree_md5s(other)
    assert changed.keys() == expected.keys()
    blob = "files/users/alice/random.bin"
    assert changed[blob] != expected[blob]


def test_scale_sizes_files(tmp_path: Path, catalog: dict[str, Any]) -> None:
    small = json.loads(demodata.generate(tmp_path, scale=SMALL).read_text())
    size = {d["filename"]: d["size"] for d in small["data"]}
    assert size["random.bin"] == int(3 * 1024 * 1024 * SMALL) + 12345
    full = {d["filename"]: d["size"] for d in catalog["data"]}
    assert size["liver_1.bam"] * 5 < full["liver_1.bam"]
    assert len(small["data"]) == len(catalog["data"])


def test_worker_processes_write_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    serial = demodata.generate(tmp_path / "serial", scale=SMALL, seed=3).parent
    monkeypatch.setattr(demodata, "PARALLEL_FROM_SCALE", 0)
    monkeypatch.setattr(demodata.os, "cpu_count", lambda: 2)
    caplog.set_level(logging.INFO, logger=demodata.__name__)
    parallel = demodata.generate(tmp_path / "parallel", scale=SMALL, seed=3).parent
    assert "with 2 processes" in caplog.text
    assert tree_md5s(serial) == tree_md5s(parallel)


def test_rejects_a_non_positive_scale(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        demodata.generate(tmp_path, scale=0)


def test_command_line_prints_the_catalog_path(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flowfs.server.demodata", str(tmp_path / "cli"),
         "--scale", str(SMALL), "--seed", "5"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    path = Path(out.strip())
    assert path == (tmp_path / "cli" / "catalog.json").resolve()
    assert json.loads(path.read_text())["users"]


def test_many_files_catalog(tmp_path: Path) -> None:
    path = demodata.many_files_catalog(tmp_path, n_files=250, per_sample=100)
    catalog = json.loads(path.read_text())
    assert [p["owner"] for p in catalog["projects"]] == ["alice"]
    assert len(catalog["data"]) == 250
    per_sample = Counter(d["sample"] for d in catalog["data"])
    assert sorted(per_sample.values()) == [50, 100, 100]
    assert set(per_sample) == {s["id"] for s in catalog["samples"]}
    assert len({d["id"] for d in catalog["data"]}) == 250
    assert len({(d["sample"], d["filename"]) for d in catalog["data"]}) == 250
    paths = {d["path"] for d in catalog["data"]}
    assert len(paths) == 1 and (tmp_path / paths.pop()).is_file()


# --- the reference server accepts it ------------------------------------------------------------


def test_reference_server_loads_the_catalog(demo: Path, catalog: dict[str, Any],
                                            tmp_path: Path) -> None:
    server_catalog = pytest.importorskip("flowfs.server.catalog")
    digests = pytest.importorskip("flowfs.server.digests")
    loaded = server_catalog.load_catalog(demo, digests.DigestCache(tmp_path))
    assert set(loaded.data) == {d["id"] for d in catalog["data"]}
    assert {d.md5 for d in loaded.data.values()} == {d["md5"] for d in catalog["data"]}
    assert set(loaded.executions) == {e["id"] for e in catalog["executions"]}


def test_reference_server_loads_the_many_files_catalog(tmp_path: Path) -> None:
    server_catalog = pytest.importorskip("flowfs.server.catalog")
    digests = pytest.importorskip("flowfs.server.digests")
    path = demodata.many_files_catalog(tmp_path / "many", n_files=300, per_sample=100)
    loaded = server_catalog.load_catalog(path, digests.DigestCache(tmp_path))
    assert len(loaded.data) == 300 and len(loaded.samples) == 3
