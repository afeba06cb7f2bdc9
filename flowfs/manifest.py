"""Parsing a `.downloads/` manifest (pure: no I/O, no tree).

One entry a line: a path relative to the mount root, an absolute path inside
the mount, or ``id:<data id>``; blank lines and ``#`` comments are ignored; the
line ``by_execution: true`` (or ``false``) sets that option. Every problem is
reported with its line number, and nothing is dropped silently.

A line is limited in bytes (what a writer sends), so that a manifest written piece
by piece can be refused as soon as an unfinished line passes the limit, without
ever scanning it again (``open_line``): a 10 MiB line costs one pass, not one per write.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from flowfs.model import is_id

MAX_MANIFEST_BYTES = 10 * 2**20
MAX_LINE_BYTES = 4096  # Linux's PATH_MAX: any path a program can open fits
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
# A draft: written under a temporary name, submitted when renamed to <name>.manifest.
DRAFT_RE = re.compile(r"\.?[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.(part|tmp)")
LONG_LINE = f"line longer than {MAX_LINE_BYTES} bytes"
UNTERMINATED = ("no newline at its end: the writer may have stopped part-way (a killed "
                "program); end every line with a newline, or write a draft and rename it")
_OPTION_RE = re.compile(r"^by_execution\s*:\s*(\S*)\s*$", re.IGNORECASE)
_ID_RE = re.compile(r"^id:\s*(\S*)$")
# What looks like an option line rather than a path: a bare word, a colon, one value.
_KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:\s*(\S*)$")
KEYS = ("by_execution",)
_BOOLEANS = ("true", "false", "yes", "no", "1", "0")


@dataclass(frozen=True)
class Entry:
    """One line that names something to archive."""

    line: int
    kind: str  # "path" | "id"
    value: str  # path components joined by '/', relative to the mount root; or the id


@dataclass
class Manifest:
    entries: list[Entry] = field(default_factory=list)
    by_execution: bool = False
    errors: list[tuple[int, str]] = field(default_factory=list)


def valid_name(name: str) -> bool:
    """A job name as docs/design.md allows: [A-Za-z0-9._-], 1-100 characters, no leading dot."""
    return bool(NAME_RE.fullmatch(name))


def draft_name(name: str) -> bool:
    """A temporary name in `.downloads/` (``x.manifest.part``, ``.x.tmp``): never submitted
    itself, submitted when renamed to ``<name>.manifest``."""
    return bool(DRAFT_RE.fullmatch(name))


def open_line(tail: int, data: bytes) -> int:
    """The length of the unfinished last line once ``data`` is appended after an unfinished
    line of ``tail`` bytes. Reads only ``data``: linear however the line is written."""
    newline = data.rfind(b"\n")
    return tail + len(data) if newline < 0 else len(data) - newline - 1


def parse(raw: bytes, mountpoint: str | tuple[str, ...], *, whole: bool = False) -> Manifest:
    """Entries, the by_execution option and per-line errors of a manifest's bytes.

    ``whole``: ``raw`` is a complete manifest, whose last line must end with a newline; a
    last line without one is refused (a writer killed part-way leaves one).
    """
    out = Manifest()
    lines = raw.split(b"\n")
    last = lines[-1].strip()
    if whole and last and not last.startswith(b"#"):
        out.errors.append((len(lines), UNTERMINATED))
        lines[-1] = b""
    for number, line_bytes in enumerate(lines, start=1):
        if len(line_bytes) > MAX_LINE_BYTES:
            out.errors.append((number, LONG_LINE))
            continue
        try:
            line = line_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            out.errors.append((number, "not UTF-8 text"))
            continue
        if not line or line.startswith("#"):
            continue
        problem = _parse_line(line, number, mountpoint, out)
        if problem:
            out.errors.append((number, problem))
    return out


def _parse_line(line: str, number: int, mountpoint: str | tuple[str, ...],
                out: Manifest) -> str | None:
    if "\x00" in line:
        return "contains a NUL character"
    option = _OPTION_RE.match(line)
    if option:
        value = option.group(1).lower()
        if value not in ("true", "false", "yes", "no", "1", "0"):
            return f"by_execution must be true or false, not {option.group(1)!r}"
        out.by_execution = value in ("true", "yes", "1")
        return None
    ident = _ID_RE.match(line)
    if ident:
        value = ident.group(1)
        if not is_id(value):
            return f"{line}: a data id is a number"
        out.entries.append(Entry(number, "id", value))
        return None
    key = _KEY_RE.match(line)
    if key:
        close = difflib.get_close_matches(key.group(1).lower(), KEYS, n=1, cutoff=0.6)
        if close:
            return f"unknown key {key.group(1)!r}: did you mean {close[0]}?"
        if key.group(2).lower() in _BOOLEANS:
            return f"unknown key {key.group(1)!r} (the only key is {', '.join(KEYS)})"
    path, problem = relative_path(line, mountpoint)
    if problem:
        return f"{line}: {problem}"
    out.entries.append(Entry(number, "path", path))
    return None


def relative_path(text: str, mountpoint: str | tuple[str, ...]) -> tuple[str, str | None]:
    """A manifest path as components relative to the mount root, or why it is not one.

    ``mountpoint`` may list several spellings of the mount root (as given, resolved).
    """
    roots = (mountpoint,) if isinstance(mountpoint, str) else mountpoint
    if text.startswith("/"):
        root = next((r.rstrip("/") + "/" for r in roots
                     if (text + "/").startswith(r.rstrip("/") + "/")), None)
        if root is None:
            return "", f"outside the mount ({roots[0]})"
        text = text[len(root):]
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "", "'..' is not allowed"
    if not parts:
        return "", "names the whole mount; name a project, sample, directory or file"
    if parts[0] == ".downloads":
        return "", "cannot archive .downloads itself"
    return "/".join(parts), None


def format_errors(errors: list[tuple[int, str]], name: str) -> str:
    lines = [f"{name}.manifest was not submitted: fix these lines and write it again.", ""]
    lines += [f"line {number}: {message}" for number, message in sorted(errors)]
    return "\n".join(lines) + "\n"
