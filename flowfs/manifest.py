"""Parsing a `.downloads/` manifest (pure: no I/O, no tree).

One entry a line: a path relative to the mount root, an absolute path inside
the mount, or ``id:<data id>``; blank lines and ``#`` comments are ignored; the
line ``by_execution: true`` (or ``false``) sets that option. Every problem is
reported with its line number, and nothing is dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowfs.model import is_id

MAX_MANIFEST_BYTES = 10 * 2**20
MAX_LINE_CHARS = 4096
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_OPTION_RE = re.compile(r"^by_execution\s*:\s*(\S*)\s*$", re.IGNORECASE)
_ID_RE = re.compile(r"^id:\s*(\S*)$")


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
    """A job name as design.md allows: [A-Za-z0-9._-], 1-100 characters, no leading dot."""
    return bool(NAME_RE.fullmatch(name))


def parse(raw: bytes, mountpoint: str | tuple[str, ...]) -> Manifest:
    """Entries, the by_execution option and per-line errors of a manifest's bytes."""
    out = Manifest()
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
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
    if len(line) > MAX_LINE_CHARS:
        return f"line longer than {MAX_LINE_CHARS} characters"
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
