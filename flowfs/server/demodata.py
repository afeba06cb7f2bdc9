"""Generate realistic demo data and a reference-server catalog.

The files are real formats that real tools accept: gzipped FASTQ, coordinate-sorted BAM with a
BAI index, bgzipped VCF with a tabix index, an indexed FASTA, a counts table and a MultiQC-like
HTML report. The catalog deliberately contains the awkward cases a filesystem over Flow must
handle: name collisions, a `/` and a space in names, an execution without identifier, ids
beyond 2**53, empty and one-byte files and a multi-MiB file whose size is not block aligned.

Everything is derived from one `random.Random(seed)`, so a seed always yields the same bytes.
Large scales stream to disk; memory stays bounded whatever the scale.

    python -m flowfs.server.demodata OUTDIR [--scale X] [--seed N]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import heapq
import html
import json
import logging
import math
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pysam

from flowfs.server.digests import md5_of_file

log = logging.getLogger(__name__)

BIG_ID = "9007199254740993"  # 2**53 + 1: not representable as a float
RANDOM_BIN_BASE = 3 * 1024 * 1024
RANDOM_BIN_EXTRA = 12345  # keeps the size off any block boundary

READ_LEN = 100
FASTQ_PAIRS = 1000  # per sample, times the scale
BAM_PAIRS = 2000  # per BAM, times the scale
VCF_RECORDS = 150  # per VCF, times the scale
GENES = 500  # rows of the counts table, times the scale
PARALLEL_FROM_SCALE = 4  # below this, starting worker processes costs more than it saves

GENOME = (("chr1", 200_000), ("chr2", 150_000), ("chrM", 16_569))
EPOCH = 1_706_745_600  # 2024-02-01T00:00:00Z: the first demo object is created after this
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _SampleSpec:
    id: str
    name: str
    bam: bool = False
    vcf: bool = False


@dataclass(frozen=True)
class _ProjectSpec:
    id: str
    name: str
    owner: str
    private: bool
    shared_with: tuple[str, ...]
    description: str
    spliced: bool  # RNA-seq reads carry introns (N in the CIGAR)
    samples: tuple[_SampleSpec, ...]


@dataclass(frozen=True)
class _ExecutionSpec:
    id: str
    identifier: str | None
    pipeline_name: str
    pipeline_version: str
    project: str
    sample: str | None
    status: str
    outputs: str  # key of _OUTPUT_WRITERS


USERS = (
    ("alice", "alice-pw", "Alice Andersen"),
    ("bob", "bob-pw", "Bob Brown"),
    ("carol", "carol-pw", "Carol Chen"),
)

PROJECTS = (
    _ProjectSpec(
        "1", "Liver RNA-seq", "alice", True, ("bob",),
        "Bulk RNA-seq of mouse liver, two conditions.", True,
        (
            _SampleSpec("10", "liver_1", bam=True, vcf=True),
            _SampleSpec("11", "liver/2", bam=True),
            _SampleSpec("12", "rep"),
            _SampleSpec("13", "rep"),  # same name as 12: the filesystem must disambiguate
        ),
    ),
    _ProjectSpec(
        "2", "Public ChIP-seq atlas", "carol", False, (),
        "H3K27ac ChIP-seq with input controls, free to browse.", False,
        (
            _SampleSpec("14", "H3K27ac rep1", bam=True),
            _SampleSpec("15", "input_ctrl"),
        ),
    ),
    _ProjectSpec(
        "3", "Alice private pilot", "alice", True, (),
        "Pilot sequencing run, not shared.", False,
        (
            _SampleSpec("16", "pilot_a", bam=True, vcf=True),
            _SampleSpec("17", "pilot_b"),
        ),
    ),
    _ProjectSpec(
        "4", "Bob mouse WGS", "bob", True, (),
        "Whole-genome sequencing of two mice.", False,
        (
            _SampleSpec("18", "mouse_1", bam=True, vcf=True),
            _SampleSpec("19", "mouse_2"),
        ),
    ),
)

EXECUTIONS = (
    _ExecutionSpec("20", "brave_turing", "RNA-Seq", "3.8.1", "1", None, "OK", "rnaseq"),
    _ExecutionSpec("21", None, "Variant-Calling", "1.2.0", "3", "16", "OK", "variants"),
    _ExecutionSpec("22", "eager_curie", "ChIP-Seq", "2.0.0", "2", None, "OK", "chipseq"),
    _ExecutionSpec("23", "sleepy_lovelace", "WGS", "1.0.4", "4", None, "RUNNING", "none"),
)

GENE_SYMBOLS = (
    "ALB", "APOA1", "APOB", "APOC3", "APOH", "TTR", "SERPINA1", "CYP3A4", "CYP2E1", "FGA",
    "FGB", "FGG", "HP", "TF", "AHSG", "RBP4", "GAPDH", "ACTB", "MALAT1", "XIST", "HNF4A",
    "FOXA2", "CEBPA", "PCK1", "G6PC1", "ASGR1", "TAT", "ARG1", "CPS1", "MT1A",
)


@dataclass
class _Clock:
    """Hands out strictly increasing, plausible Unix timestamps."""

    rng: random.Random
    now: int = EPOCH

    def tick(self, lo: int = 3600, hi: int = 3 * 86400) -> int:
        self.now += self.rng.randint(lo, hi)
        return self.now


@dataclass(frozen=True)
class _Gen:
    """What writing one file draws on: its own random stream and the shared sequences."""

    rng: random.Random
    genome: dict[str, str]
    quals: str


@dataclass(frozen=True)
class _Job:
    """One file to write later, possibly in another process.

    Each job gets its own seed, drawn from the run's generator when the job is planned, so
    the bytes do not depend on which process writes them or in which order.
    """

    writer: Callable[..., None]
    seed: int
    args: tuple[Any, ...]
    cost: int

    def run(self, genome: dict[str, str], quals: str) -> None:
        self.writer(_Gen(random.Random(self.seed), genome, quals), *self.args)


@dataclass
class _Demo:
    """The state of one generation run: where files go and the catalog being built."""

    root: Path
    rng: random.Random
    scale: float
    clock: _Clock
    genome: dict[str, str]
    quals: str
    catalog: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    next_data_id: int = 100
    used_paths: set[str] = field(default_factory=set)
    jobs: list[_Job] = field(default_factory=list)

    def defer(self, writer: Callable[..., None], *args: Any, cost: int = 0) -> None:
        """Plan a call `writer(gen, *args)`; `cost` orders the big jobs first."""
        self.jobs.append(_Job(writer, self.rng.getrandbits(64), args, cost))

    def scaled(self, base: int, minimum: int = 1) -> int:
        return max(minimum, int(base * self.scale))

    def add_file(self, rel: str, filename: str, owner: str, private: bool,
                 data_id: str | None = None, **links: str) -> tuple[str, Path]:
        """Register a data object; return its catalog path and where to write its bytes."""
        if data_id is None:
            data_id = str(self.next_data_id)
            self.next_data_id += 1
        if rel in self.used_paths:
            # Same file name twice in one place: park the newer one under its id.
            parent, _, name = rel.rpartition("/")
            rel = f"{parent}/{data_id}/{name}"
        self.used_paths.add(rel)
        record: dict[str, Any] = {
            "id": data_id, "path": rel, "filename": filename, "owner": owner,
            "private": private, **links, "created": self.clock.tick(60, 1200),
        }
        self.catalog["data"].append(record)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return rel, path


# --- sequences -------------------------------------------------------------------------------


def _random_genome(rng: random.Random) -> dict[str, str]:
    return {name: "".join(rng.choices("ACGT", k=length)) for name, length in GENOME}


def _quality_pool(rng: random.Random) -> str:
    # Binned NovaSeq-style qualities: mostly F, some :, a few , and #.
    return "".join(rng.choices("F:,#", weights=(85, 10, 4, 1), k=1 << 16))


def _revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def _qual(gen: _Gen, length: int) -> str:
    start = int(gen.rng.random() * (len(gen.quals) - length))
    return gen.quals[start:start + length]


# --- FASTQ -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _gzip_writer(path: Path) -> Iterator[gzip.GzipFile]:
    # mtime=0 and no embedded name: the same content always gives the same bytes.
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               compresslevel=4, mtime=0) as out:
        yield out


def _fastq_records(gen: _Gen, n_pairs: int, flowcell: str) -> Iterator[tuple[str, str]]:
    chroms = list(gen.genome.items())
    weights = [len(seq) for _, seq in chroms]
    for i in range(n_pairs):
        _, seq = gen.rng.choices(chroms, weights=weights)[0]
        frag = gen.rng.randrange(200, 500)
        start = gen.rng.randrange(len(seq) - frag)
        name = f"@{flowcell}:1:{1101 + i // 4000}:{i % 4000 * 7 + 1000}"
        r1 = seq[start:start + READ_LEN]
        r2 = _revcomp(seq[start + frag - READ_LEN:start + frag])
        yield (f"{name} 1:N:0:ACGTACGT\n{r1}\n+\n{_qual(gen, READ_LEN)}\n",
               f"{name} 2:N:0:ACGTACGT\n{r2}\n+\n{_qual(gen, READ_LEN)}\n")


def _write_fastq_pair(gen: _Gen, r1_path: Path, r2_path: Path, n_pairs: int) -> None:
    rng = gen.rng
    flowcell = f"A00{rng.randrange(100, 999)}:{rng.randrange(1, 99)}:H{rng.randrange(10**6):06d}"
    buf1: list[str] = []
    buf2: list[str] = []
    with _gzip_writer(r1_path) as out1, _gzip_writer(r2_path) as out2:
        for rec1, rec2 in _fastq_records(gen, n_pairs, flowcell):
            buf1.append(rec1)
            buf2.append(rec2)
            if len(buf1) >= 4096:
                out1.write("".join(buf1).encode())
                out2.write("".join(buf2).encode())
                buf1.clear()
                buf2.clear()
        out1.write("".join(buf1).encode())
        out2.write("".join(buf2).encode())


# --- BAM -------------------------------------------------------------------------------------


def _aligned(rng: random.Random, ref: str, pos: int, spliced: bool) -> tuple[str, str, int, int]:
    """One read at `pos`: (CIGAR, sequence, reference span, edit distance)."""
    r = rng.random()
    n = READ_LEN
    if spliced and r < 0.15:
        a, gap = rng.randrange(20, n - 20), rng.randrange(80, 2000)
        seq = ref[pos:pos + a] + ref[pos + a + gap:pos + gap + n]
        return f"{a}M{gap}N{n - a}M", seq, n + gap, 0
    if r < 0.20:
        k = rng.randrange(1, 4)
        a = rng.randrange(10, n - 10 - k)
        ins = "".join(rng.choices("ACGT", k=k))
        return f"{a}M{k}I{n - a - k}M", ref[pos:pos + a] + ins + ref[pos + a:pos + n - k], n - k, k
    if r < 0.25:
        k, a = rng.randrange(1, 6), rng.randrange(10, n - 10)
        return f"{a}M{k}D{n - a}M", ref[pos:pos + a] + ref[pos + a + k:pos + n + k], n + k, k
    if r < 0.30:
        k = rng.randrange(3, 20)
        clip = "".join(rng.choices("ACGT", k=k))
        return f"{k}S{n - k}M", clip + ref[pos:pos + n - k], n - k, 0
    seq = ref[pos:pos + n]
    if rng.random() < 0.3:  # one mismatch
        i = rng.randrange(n)
        base = rng.choice([b for b in "ACGT" if b != seq[i]])
        return f"{n}M", seq[:i] + base + seq[i + 1:], n, 1
    return f"{n}M", seq, n, 0


def _sam_pair(gen: _Gen, chrom: str, pos: int, name: str, rg: str,
              spliced: bool) -> tuple[tuple[int, str], tuple[int, str]]:
    """A properly paired fragment starting at `pos`, as two (position, SAM line) items."""
    rng, ref = gen.rng, gen.genome[chrom]
    mate = pos + rng.randrange(200, 500) - READ_LEN
    cig1, seq1, span1, nm1 = _aligned(rng, ref, pos, spliced)
    cig2, seq2, span2, nm2 = _aligned(rng, ref, mate, spliced)
    tlen = max(pos + span1, mate + span2) - pos
    left_flag, right_flag = (99, 147) if rng.random() < 0.5 else (163, 83)
    mapq = rng.choice((60, 60, 60, 60, 60, 60, 60, 60, 40, 23, 3, 1, 0))
    left = (f"{name}\t{left_flag}\t{chrom}\t{pos + 1}\t{mapq}\t{cig1}\t=\t{mate + 1}\t{tlen}\t"
            f"{seq1}\t{_qual(gen, len(seq1))}\tNM:i:{nm1}\tRG:Z:{rg}")
    right = (f"{name}\t{right_flag}\t{chrom}\t{mate + 1}\t{mapq}\t{cig2}\t=\t{pos + 1}\t{-tlen}\t"
             f"{seq2}\t{_qual(gen, len(seq2))}\tNM:i:{nm2}\tRG:Z:{rg}")
    return (pos, left), (mate, right)


def _sorted_sam_lines(gen: _Gen, n_pairs: int, rg: str, spliced: bool) -> Iterator[str]:
    """Coordinate-sorted SAM lines, streamed: only mates not yet due wait in a small heap."""
    total = sum(len(seq) for seq in gen.genome.values())
    serial = 0
    for chrom, seq in gen.genome.items():
        usable = len(seq) - 3000  # room for the fragment, a splice gap and a deletion
        pairs = max(1, round(n_pairs * len(seq) / total))
        mean_gap = usable / pairs
        pending: list[tuple[int, int, str]] = []
        pos = 0
        while True:
            pos += int(gen.rng.expovariate(1 / mean_gap))
            if pos >= usable:
                break
            while pending and pending[0][0] <= pos:
                yield heapq.heappop(pending)[2]
            serial += 1
            (_, left), (mate, right) = _sam_pair(gen, chrom, pos, f"{rg}.{serial}", rg, spliced)
            yield left
            heapq.heappush(pending, (mate, serial, right))
        while pending:
            yield heapq.heappop(pending)[2]


def _bam_header(gen: _Gen, rg: str, sample_name: str, program: str) -> dict[str, Any]:
    return {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": name, "LN": len(seq)} for name, seq in gen.genome.items()],
        "RG": [{"ID": rg, "SM": sample_name, "LB": f"lib_{rg}", "PL": "ILLUMINA"}],
        "PG": [{"ID": program, "PN": program, "VN": "2.7.10a" if program == "STAR" else "0.7.17",
                "CL": f"{program} --demo {rg}"}],
    }


def _write_bam(gen: _Gen, path: Path, sample_name: str, spliced: bool, n_pairs: int) -> None:
    """Write a coordinate-sorted BAM at `path` and its index at `path`.bai."""
    rg = "".join(c if c.isalnum() or c in "._-" else "_" for c in sample_name)
    header = _bam_header(gen, rg, sample_name, "STAR" if spliced else "bwa")
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        hdr = bam.header
        for line in _sorted_sam_lines(gen, n_pairs, rg, spliced):
            bam.write(pysam.AlignedSegment.fromstring(line, hdr))
    pysam.index(str(path))


# --- VCF -------------------------------------------------------------------------------------


def _vcf_header(gen: _Gen, sample_name: str) -> list[str]:
    lines = [
        "##fileformat=VCFv4.2",
        "##source=DemoCaller 1.0",
        "##reference=reference.fa",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=LowQual,Description="QUAL below 50">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Total depth">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
        '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">',
    ]
    lines += [f"##contig=<ID={name},length={len(seq)}>" for name, seq in gen.genome.items()]
    lines.append("\t".join(("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                            "FORMAT", sample_name)))
    return lines


def _vcf_record(gen: _Gen, chrom: str, pos: int) -> str:
    rng, ref = gen.rng, gen.genome[chrom]
    kind = rng.random()
    if kind < 0.05:  # deletion
        k = rng.randrange(1, 5)
        ref_allele, alt = ref[pos - 1:pos + k], ref[pos - 1]
    elif kind < 0.10:  # insertion
        ref_allele = ref[pos - 1]
        alt = ref_allele + "".join(rng.choices("ACGT", k=rng.randrange(1, 5)))
    else:
        ref_allele = ref[pos - 1]
        alt = rng.choice([b for b in "ACGT" if b != ref_allele])
    qual = round(rng.uniform(20, 3000), 1)
    depth = rng.randrange(8, 120)
    hom = rng.random() < 0.3
    alt_depth = depth if hom else depth // 2
    info = f"DP={depth};AF={1.0 if hom else 0.5}"
    genotype = "1/1" if hom else "0/1"
    sample = f"{genotype}:{depth - alt_depth},{alt_depth}:{depth}:{min(99, int(qual))}"
    return "\t".join((chrom, str(pos), ".", ref_allele, alt, str(qual),
                      "PASS" if qual >= 50 else "LowQual", info, "GT:AD:DP:GQ", sample))


def _write_vcf(gen: _Gen, path: Path, sample_name: str, n_records: int) -> None:
    """Write a bgzipped VCF at `path` and its tabix index at `path`.tbi."""
    plain = path.with_name(path.name + ".tmp")
    total = sum(len(seq) for seq in gen.genome.values())
    with plain.open("w") as out:
        out.write("\n".join(_vcf_header(gen, sample_name)) + "\n")
        for chrom, seq in gen.genome.items():
            k = min(len(seq) // 4, max(1, round(n_records * len(seq) / total)))
            for pos in sorted(gen.rng.sample(range(1, len(seq) - 10), k)):
                out.write(_vcf_record(gen, chrom, pos) + "\n")
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    pysam.tabix_index(str(path), preset="vcf", force=True)


# --- small text formats ----------------------------------------------------------------------


def _write_fasta(gen: _Gen, path: Path) -> None:
    with path.open("w") as out:
        for name, seq in gen.genome.items():
            out.write(f">{name}\n")
            out.writelines(seq[i:i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(path))


def _write_counts(gen: _Gen, path: Path, columns: list[str], n_genes: int) -> None:
    rng = gen.rng
    ids = sorted(rng.sample(range(1, 300_000), n_genes))
    with path.open("w") as out:
        out.write("\t".join(["gene_id", "gene_name", *columns]) + "\n")
        for i, gene in enumerate(ids):
            name = GENE_SYMBOLS[i] if i < len(GENE_SYMBOLS) else f"Gm{gene}"
            level = rng.lognormvariate(3, 2)
            counts = [str(int(level * rng.uniform(0.5, 1.5))) for _ in columns]
            out.write("\t".join([f"ENSMUSG{gene:011d}", name, *counts]) + "\n")


def _write_multiqc(gen: _Gen, path: Path, title: str, reads: dict[str, int]) -> None:
    rng = gen.rng
    rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td>{n / 1e6:.3f}</td>"
        f"<td>{rng.uniform(85, 98):.1f}</td><td>{rng.uniform(5, 40):.1f}</td>"
        f"<td>{rng.uniform(40, 52):.0f}</td><td>{rng.randrange(180, 320)}</td></tr>"
        for name, n in reads.items()
    )
    path.write_text(f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MultiQC Report: {html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #eef; }} td:first-child {{ text-align: left; }}
</style>
</head>
<body>
<h1>MultiQC report</h1>
<p>Run: {html.escape(title)}. Generated by the flowfs demo data generator.</p>
<h2>General statistics</h2>
<table id="general_stats_table">
<thead><tr><th>Sample</th><th>M Reads</th><th>% Aligned</th><th>% Dups</th><th>% GC</th>
<th>Median insert size</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
""")


def _write_params(path: Path, spec: _ExecutionSpec, extra: dict[str, Any]) -> None:
    params = {"pipeline": spec.pipeline_name, "version": spec.pipeline_version,
              "genome": "demo", "outdir": "results", "max_cpus": 16, **extra}
    path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def _write_peaks(gen: _Gen, path: Path, stem: str, per_200kb: int) -> None:
    rng = gen.rng
    with path.open("w") as out:
        for chrom, seq in gen.genome.items():
            k = max(1, per_200kb * len(seq) // 200_000)
            for n, start in enumerate(sorted(rng.sample(range(len(seq) - 2000), k))):
                width = rng.randrange(150, 1500)
                out.write(f"{chrom}\t{start}\t{start + width}\t{stem}_peak_{chrom}_{n}\t"
                          f"{rng.randrange(10, 1000)}\t.\t{rng.uniform(2, 40):.4f}\t"
                          f"{rng.uniform(3, 80):.4f}\t{rng.uniform(1, 75):.4f}\t"
                          f"{rng.randrange(width)}\n")


# --- catalog content -------------------------------------------------------------------------


def _stem(name: str) -> str:
    return name.replace("/", "_")


def _unique_stems(samples: list[dict[str, Any]]) -> list[str]:
    """Per-sample file stems that are unique within one execution's outputs."""
    seen: set[str] = set()
    stems = []
    for sample in samples:
        stem, n = _stem(sample["name"]), 2
        base = stem
        while stem in seen:
            stem, n = f"{base}_{n}", n + 1
        seen.add(stem)
        stems.append(stem)
    return stems


def _add_sample_files(demo: _Demo, project: _ProjectSpec, spec: _SampleSpec) -> None:
    stem, where = _stem(spec.name), f"files/samples/{spec.id}"
    meta: dict[str, Any] = {"owner": project.owner, "private": project.private,
                            "sample": spec.id}
    _, r1 = demo.add_file(f"{where}/{stem}_R1.fastq.gz", f"{stem}_R1.fastq.gz", **meta)
    _, r2 = demo.add_file(f"{where}/{stem}_R2.fastq.gz", f"{stem}_R2.fastq.gz", **meta)
    n_reads = demo.scaled(FASTQ_PAIRS, minimum=10)
    demo.defer(_write_fastq_pair, r1, r2, n_reads, cost=n_reads)
    if spec.bam:
        rel, bam = demo.add_file(f"{where}/{stem}.bam", f"{stem}.bam", **meta)
        n_pairs = demo.scaled(BAM_PAIRS, minimum=50)
        demo.defer(_write_bam, bam, spec.name, project.spliced, n_pairs, cost=4 * n_pairs)
        demo.add_file(f"{rel}.bai", f"{stem}.bam.bai", **meta)
    if spec.vcf:
        rel, vcf = demo.add_file(f"{where}/{stem}.vcf.gz", f"{stem}.vcf.gz", **meta)
        demo.defer(_write_vcf, vcf, spec.name, demo.scaled(VCF_RECORDS, minimum=10))
        demo.add_file(f"{rel}.tbi", f"{stem}.vcf.gz.tbi", **meta)


def _add_duplicate_metadata(demo: _Demo, project: _ProjectSpec, spec: _SampleSpec) -> None:
    """Two different files called metadata.csv in one sample (an upload, then a fix)."""
    meta: dict[str, Any] = {"owner": project.owner, "private": project.private,
                            "sample": spec.id}
    for version, rin in ((1, 7.9), (2, 8.4)):
        _, path = demo.add_file(f"files/samples/{spec.id}/metadata.csv", "metadata.csv", **meta)
        path.write_text(f"key,value\nsample,{spec.name}\ntissue,liver\nrin,{rin}\n"
                        f"upload,{version}\n")


def _add_project(demo: _Demo, spec: _ProjectSpec) -> None:
    demo.catalog["projects"].append({
        "id": spec.id, "name": spec.name, "owner": spec.owner, "private": spec.private,
        "shared_with": list(spec.shared_with), "description": spec.description,
        "created": demo.clock.tick(5 * 86400, 60 * 86400),
    })
    for sample in spec.samples:
        demo.catalog["samples"].append({
            "id": sample.id, "name": sample.name, "project": spec.id, "owner": spec.owner,
            "private": spec.private, "created": demo.clock.tick(),
        })
        _add_sample_files(demo, spec, sample)
    if spec.id == "1":
        _add_duplicate_metadata(demo, spec, spec.samples[0])


# --- executions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """What an output writer needs to know about the execution it writes for."""

    spec: _ExecutionSpec
    owner: str
    private: bool
    samples: list[dict[str, Any]]

    def output(self, demo: _Demo, output_path: str) -> tuple[str, Path]:
        return demo.add_file(
            f"files/executions/{self.spec.id}/{output_path}", output_path.rpartition("/")[2],
            owner=self.owner, private=self.private, execution=self.spec.id,
            output_path=output_path,
        )


def _rnaseq_outputs(demo: _Demo, run: _Run) -> None:
    stems = _unique_stems(run.samples)
    _write_params(run.output(demo, "pipeline_info/params.json")[1], run.spec,
                  {"aligner": "star_salmon", "input": "samplesheet.csv"})
    versions = "STAR: 2.7.10a\nsamtools: 1.16.1\nsalmon: 1.10.1\nmultiqc: 1.14\n"
    run.output(demo, "pipeline_info/software_versions.yml")[1].write_text(versions)
    reads = {}
    for stem, sample in zip(stems, run.samples, strict=True):
        out = f"results/star/{stem}.Aligned.sortedByCoord.out.bam"
        rel, bam = run.output(demo, out)
        n_pairs = demo.scaled(BAM_PAIRS, minimum=50)
        demo.defer(_write_bam, bam, sample["name"], True, n_pairs, cost=4 * n_pairs)
        run.output(demo, f"{out}.bai")
        reads[stem] = 2 * n_pairs
    counts = run.output(demo, "results/counts/all.gene_counts.tsv")[1]
    demo.defer(_write_counts, counts, stems, demo.scaled(GENES, minimum=len(GENE_SYMBOLS)))
    demo.defer(_write_multiqc, run.output(demo, "multiqc/multiqc_report.html")[1],
               run.spec.identifier or run.spec.id, reads)


def _variant_outputs(demo: _Demo, run: _Run) -> None:
    _write_params(run.output(demo, "pipeline_info/params.json")[1], run.spec,
                  {"caller": "haplotypecaller"})
    for stem, sample in zip(_unique_stems(run.samples), run.samples, strict=True):
        out = f"results/variants/{stem}.vcf.gz"
        _, vcf = run.output(demo, out)
        demo.defer(_write_vcf, vcf, sample["name"], demo.scaled(VCF_RECORDS, minimum=10))
        run.output(demo, f"{out}.tbi")


def _chipseq_outputs(demo: _Demo, run: _Run) -> None:
    stems = _unique_stems(run.samples)
    _write_params(run.output(demo, "pipeline_info/params.json")[1], run.spec,
                  {"macs_gsize": 366569, "narrow_peak": True})
    for stem in stems:
        peaks = run.output(demo, f"results/macs2/{stem}_peaks.narrowPeak")[1]
        demo.defer(_write_peaks, peaks, stem, demo.scaled(60))
    reads = {stem: demo.scaled(2 * FASTQ_PAIRS) for stem in stems}
    demo.defer(_write_multiqc, run.output(demo, "multiqc/multiqc_report.html")[1],
               run.spec.identifier or run.spec.id, reads)


def _no_outputs(demo: _Demo, run: _Run) -> None:
    """A running execution has produced nothing yet."""


_OUTPUT_WRITERS: dict[str, Callable[[_Demo, _Run], None]] = {
    "rnaseq": _rnaseq_outputs,
    "variants": _variant_outputs,
    "chipseq": _chipseq_outputs,
    "none": _no_outputs,
}


def _add_execution(demo: _Demo, spec: _ExecutionSpec) -> None:
    project = next(p for p in PROJECTS if p.id == spec.project)
    samples = [s for s in demo.catalog["samples"]
               if s["project"] == spec.project and spec.sample in (None, s["id"])]
    created = demo.clock.tick(86400, 20 * 86400)
    record: dict[str, Any] = {
        "id": spec.id, "identifier": spec.identifier, "pipeline_name": spec.pipeline_name,
        "pipeline_version": spec.pipeline_version, "project": spec.project,
        "sample": spec.sample, "owner": project.owner, "status": spec.status,
        "created": created, "started": created + 90, "finished": None,
    }
    demo.catalog["executions"].append(record)
    demo.clock.now = created + 90
    _OUTPUT_WRITERS[spec.outputs](demo, _Run(spec, project.owner, project.private, samples))
    if spec.status != "RUNNING":
        record["finished"] = demo.clock.tick(60, 600)


# --- loose data ------------------------------------------------------------------------------


def _write_random(gen: _Gen, path: Path, size: int) -> None:
    with path.open("wb") as out:
        for offset in range(0, size, _CHUNK):
            out.write(gen.rng.randbytes(min(_CHUNK, size - offset)))


def _add_loose_files(demo: _Demo) -> None:
    meta: dict[str, Any] = {"owner": "alice", "private": True}
    _, notes = demo.add_file("files/users/alice/notes.txt", "notes.txt", data_id=BIG_ID, **meta)
    notes.write_text("Lab notes\n=========\n\n- liver_1 RIN re-measured, see metadata.csv v2\n"
                     "- pilot_b failed library QC\n- ask Bob about the WGS coverage\n")
    _, fasta = demo.add_file("files/users/alice/reference.fa", "reference.fa", **meta)
    demo.defer(_write_fasta, fasta)
    demo.add_file("files/users/alice/reference.fa.fai", "reference.fa.fai", **meta)
    demo.add_file("files/users/alice/empty.txt", "empty.txt", **meta)[1].write_bytes(b"")
    demo.add_file("files/users/alice/one_byte.txt", "one_byte.txt", **meta)[1].write_bytes(b"x")
    _, blob = demo.add_file("files/users/alice/random.bin", "random.bin", **meta)
    size = demo.scaled(RANDOM_BIN_BASE) + RANDOM_BIN_EXTRA
    demo.defer(_write_random, blob, size, cost=size // 200)
    _, todo = demo.add_file("files/users/bob/todo.txt", "todo.txt", owner="bob", private=True)
    todo.write_text("- re-run mouse_2 alignment\n- share results with Alice\n")


# --- finishing -------------------------------------------------------------------------------


def _run_jobs(demo: _Demo) -> None:
    """Write every planned file: in this process for small data, else on every core."""
    jobs = sorted(demo.jobs, key=lambda job: -job.cost)
    workers = min(os.cpu_count() or 1, 8, len(jobs))
    if demo.scale < PARALLEL_FROM_SCALE or workers < 2:
        for job in jobs:
            job.run(demo.genome, demo.quals)
        return
    log.info("writing %d files with %d processes", len(jobs), workers)
    # spawn, not fork: forking a process that may hold threads (htslib, a test runner) is unsafe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(job.run, demo.genome, demo.quals) for job in jobs]
        for future in futures:
            future.result()


def _file_facts(path: Path) -> tuple[int, str]:
    return path.stat().st_size, md5_of_file(path)


def _finish(root: Path, catalog: dict[str, list[dict[str, Any]]],
            indent: int | None = 1) -> Path:
    """Fill in size and md5 (one read per distinct file), date the files, write the catalog."""
    facts: dict[str, tuple[int, str]] = {}
    for data in catalog["data"]:
        if data["path"] not in facts:
            facts[data["path"]] = _file_facts(root / data["path"])
            os.utime(root / data["path"], (data["created"], data["created"]))
        data["size"], data["md5"] = facts[data["path"]]
    target = root / "catalog.json"
    partial = root / "catalog.json.tmp"
    partial.write_text(json.dumps(catalog, indent=indent) + "\n")
    partial.replace(target)  # readers never see a half-written catalog
    return target


def _empty_catalog(users: tuple[tuple[str, str, str], ...]) -> dict[str, list[dict[str, Any]]]:
    return {
        "users": [{"username": u, "password": p, "name": n} for u, p, n in users],
        "projects": [], "samples": [], "executions": [], "data": [],
    }


def generate(outdir: Path, *, scale: float = 1.0, seed: int = 0) -> Path:
    """Write <outdir>/catalog.json and <outdir>/files/...; return the catalog path."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, not {scale!r}")
    root = Path(outdir).resolve()
    (root / "files").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    demo = _Demo(root=root, rng=rng, scale=scale, clock=_Clock(rng), genome=_random_genome(rng),
                 quals=_quality_pool(rng), catalog=_empty_catalog(USERS))
    for project in PROJECTS:
        _add_project(demo, project)
    for execution in EXECUTIONS:
        _add_execution(demo, execution)
    _add_loose_files(demo)
    _run_jobs(demo)
    target = _finish(root, demo.catalog)
    log.info("demo data: %d files in %s", len(demo.catalog["data"]), root)
    return target


def many_files_catalog(outdir: Path, *, n_files: int, per_sample: int = 100,
                       seed: int = 0) -> Path:
    """A catalog of one project of alice's with `n_files` data files, `per_sample` a sample.

    Every data object points at the same small file on disk: listing speed is what this
    catalog measures, not bytes.
    """
    if n_files < 0 or per_sample < 1:
        raise ValueError("n_files must be >= 0 and per_sample >= 1")
    root = Path(outdir).resolve()
    rng = random.Random(seed)
    blob = root / "files" / "small.txt"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(rng.randbytes(48).hex().encode() + b"\n")
    catalog = _empty_catalog(USERS)
    catalog["projects"].append({
        "id": "1", "name": "Many files", "owner": "alice", "private": True, "shared_with": [],
        "description": f"{n_files} small files for listing benchmarks.", "created": EPOCH,
    })
    n_samples = math.ceil(n_files / per_sample)
    for s in range(n_samples):
        catalog["samples"].append({
            "id": str(10_000 + s), "name": f"sample_{s:05d}", "project": "1", "owner": "alice",
            "private": True, "created": EPOCH + 1 + s,
        })
    for i in range(n_files):
        sample = i // per_sample
        catalog["data"].append({
            "id": str(1_000_000 + i), "path": "files/small.txt",
            "filename": f"sample_{sample:05d}_{i % per_sample:04d}.txt", "owner": "alice",
            "private": True, "sample": str(10_000 + sample), "created": EPOCH + 86400 + i,
        })
    return _finish(root, catalog, indent=None)  # 50,000 entries: keep the file lean


def main(argv: list[str] | None = None) -> int:
    """Command line: generate the demo data and print the catalog path."""
    parser = argparse.ArgumentParser(prog="python -m flowfs.server.demodata",
                                     description="Generate flowfs demo data and its catalog.")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply read counts and file sizes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(generate(args.outdir, scale=args.scale, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
