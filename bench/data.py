"""The benchmark's data: random files, a coordinate-sorted BAM with its BAI, and catalogs.

Everything derives from one seed and is generated once into the work dir; a ``spec.json``
written last records what was made, so a rerun with the same spec generates nothing.

The bench catalog has one project of alice's, ``Bench``, whose samples group the files:
``big`` (the 1 GiB file), ``bam`` (BAM + BAI), ``par`` (the 8 files read concurrently) and
``open`` (200 data records over the big file, for the "200 files open" memory check).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
USER, PASSWORD = "alice", "alice-pw"
PROJECT = "Bench"
_WRITE_CHUNK = 16 * MiB

READ_LEN = 100
CHROMOSOMES = tuple((f"chr{i}", 50_000_000) for i in range(1, 6))
_SEQ_POOL = 4096  # distinct read bodies, more than deflate's 32 KiB window can match


@dataclass(frozen=True)
class DataSpec:
    """What to generate; any change regenerates the data."""

    big_bytes: int = GiB
    par_files: int = 8
    par_bytes: int = 256 * MiB
    bam_reads: int = 9_000_000
    open_files: int = 200
    many_files: int = 50_000
    seed: int = 0


@dataclass(frozen=True)
class Item:
    """One data file of the catalog, as each contender names it."""

    id: str
    sample: str
    filename: str
    source: Path
    size: int


@dataclass(frozen=True)
class Region:
    chrom: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}"


@dataclass(frozen=True)
class BenchData:
    """The generated files, by role."""

    catalog: Path
    big: Item
    bam: Item
    bai: Item
    par: tuple[Item, ...]
    opened: tuple[Item, ...]
    many_catalog: Path
    many_files: int

    @property
    def sources(self) -> list[Path]:
        return [self.big.source, self.bam.source, self.bai.source,
                *(item.source for item in self.par)]


def write_random(path: Path, size: int, seed: int) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their md5."""
    rng = random.Random(seed)
    digest = hashlib.md5(usedforsecurity=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        left = size
        while left:
            chunk = rng.randbytes(min(left, _WRITE_CHUNK))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    tmp.replace(path)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_WRITE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def catalog_json(root: Path, items: Sequence[Item], md5s: dict[Path, str]) -> Path:
    """Write ``root/catalog.json``: alice's project ``Bench``, a sample per item group."""
    samples = sorted({item.sample for item in items})
    sample_ids = {name: str(10 + i) for i, name in enumerate(samples)}
    catalog: dict[str, list[dict[str, Any]]] = {
        "users": [{"username": USER, "password": PASSWORD, "name": "Alice A."}],
        "projects": [{"id": "1", "name": PROJECT, "owner": USER, "private": True}],
        "samples": [{"id": sid, "name": name, "project": "1"} for name, sid in sample_ids.items()],
        "data": [{"id": item.id, "path": str(item.source), "filename": item.filename,
                  "sample": sample_ids[item.sample], "size": item.size,
                  "md5": md5s[item.source]} for item in items],
    }
    target = root / "catalog.json"
    target.write_text(json.dumps(catalog, indent=1) + "\n")
    return target


def catalog_md5(catalog: Path, data_id: str) -> str:
    """The md5 the catalog gives for a data id."""
    entries = json.loads(catalog.read_text())["data"]
    return str(next(entry["md5"] for entry in entries if entry["id"] == data_id))


# -- the BAM ---------------------------------------------------------------------------------

def _sam_header() -> bytes:
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    lines += [f"@SQ\tSN:{name}\tLN:{length}" for name, length in CHROMOSOMES]
    lines.append("@RG\tID:rg1\tSM:bench\tPL:ILLUMINA")
    return ("\n".join(lines) + "\n").encode()


def _sam_records(n_reads: int, rng: random.Random) -> Iterator[bytes]:
    """Sorted single-end records spread evenly over the genome, in batches of lines."""
    bodies = []
    for _ in range(_SEQ_POOL):
        seq = "".join(rng.choices("ACGT", k=READ_LEN))
        qual = "".join(chr(33 + q) for q in rng.choices(range(2, 41), k=READ_LEN))
        bodies.append(f"{seq}\t{qual}\tRG:Z:rg1\n")
    per_chrom = n_reads // len(CHROMOSOMES)
    serial = 0
    for chrom, length in CHROMOSOMES:
        mean_step = (length - 2 * READ_LEN) / per_chrom
        pos = 1.0
        batch = []
        for _ in range(per_chrom):
            pos = min(pos + mean_step * 2 * rng.random(), length - READ_LEN)
            flag = 16 if rng.getrandbits(1) else 0
            batch.append(f"r{serial}\t{flag}\t{chrom}\t{int(pos)}\t60\t{READ_LEN}M\t*\t0\t0\t"
                         f"{bodies[rng.getrandbits(12)]}")
            serial += 1
            if len(batch) == 20_000:
                yield "".join(batch).encode()
                batch = []
        yield "".join(batch).encode()


def write_bam(path: Path, n_reads: int, seed: int) -> None:
    """A coordinate-sorted BAM of ``n_reads`` reads and its BAI, made by samtools."""
    tmp = path.with_name(path.name + ".part")
    proc = subprocess.Popen(["samtools", "view", "-@", "2", "-b", "-o", str(tmp), "-"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(_sam_header())
        for batch in _sam_records(n_reads, random.Random(seed)):
            proc.stdin.write(batch)
    finally:
        proc.stdin.close()
        proc.wait(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"samtools view exited {proc.returncode}")
    tmp.replace(path)
    subprocess.run(["samtools", "index", str(path), str(path) + ".bai"], check=True, timeout=600)


def regions(count: int, seed: int) -> list[Region]:
    """``count`` random regions of 1-10 kb, the same for every contender."""
    rng = random.Random(seed + 1)
    out = []
    for _ in range(count):
        chrom, length = rng.choice(CHROMOSOMES)
        size = rng.randint(1_000, 10_000)
        start = rng.randint(1, length - size)
        out.append(Region(chrom, start, start + size))
    return out


# -- the whole set ---------------------------------------------------------------------------

def _items(root: Path, spec: DataSpec) -> tuple[Item, Item, Item, tuple[Item, ...],
                                                 tuple[Item, ...]]:
    files = root / "files"
    bam_path = files / "bench.bam"
    big = Item("100", "big", "big.bin", files / "big.bin", spec.big_bytes)
    bam = Item("101", "bam", "bench.bam", bam_path, _size(bam_path))
    bai = Item("102", "bam", "bench.bam.bai", files / "bench.bam.bai",
               _size(files / "bench.bam.bai"))
    par = tuple(Item(str(110 + i), "par", f"par_{i}.bin", files / f"par_{i}.bin",
                     spec.par_bytes) for i in range(spec.par_files))
    opened = tuple(Item(str(1000 + i), "open", f"open_{i:03d}.bin", big.source, big.size)
                   for i in range(spec.open_files))
    return big, bam, bai, par, opened


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _generate(root: Path, spec: DataSpec) -> None:
    files = root / "files"
    md5s: dict[Path, str] = {}
    log.info("generating %d MiB + %d x %d MiB random files", spec.big_bytes // MiB,
             spec.par_files, spec.par_bytes // MiB)
    md5s[files / "big.bin"] = write_random(files / "big.bin", spec.big_bytes, spec.seed)
    for i in range(spec.par_files):
        path = files / f"par_{i}.bin"
        md5s[path] = write_random(path, spec.par_bytes, spec.seed + 100 + i)
    log.info("generating a BAM of %d reads (about a minute per 10 million)", spec.bam_reads)
    write_bam(files / "bench.bam", spec.bam_reads, spec.seed)
    for name in ("bench.bam", "bench.bam.bai"):
        md5s[files / name] = file_md5(files / name)
    big, bam, bai, par, opened = _items(root, spec)
    catalog_json(root, [big, bam, bai, *par, *opened], md5s)
    log.info("generating a catalog of %d small files", spec.many_files)
    from flowfs.server.demodata import many_files_catalog

    many_files_catalog(root / "many", n_files=spec.many_files, per_sample=100, seed=spec.seed)


def ensure(root: Path, spec: DataSpec) -> BenchData:
    """Generate the data into ``root`` unless the same spec was generated there before."""
    stamp = root / "spec.json"
    wanted = asdict(spec)
    current = json.loads(stamp.read_text()) if stamp.exists() else None
    if current != wanted:
        stamp.unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        _generate(root, spec)
        stamp.write_text(json.dumps(wanted, indent=1) + "\n")
    big, bam, bai, par, opened = _items(root, spec)
    return BenchData(catalog=root / "catalog.json", big=big, bam=bam, bai=bai, par=par,
                     opened=opened, many_catalog=root / "many" / "catalog.json",
                     many_files=spec.many_files)
