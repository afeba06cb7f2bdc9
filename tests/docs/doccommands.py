"""The `flowfs` commands the documentation shows, read from its Markdown code blocks.

A command is one simple command whose program is `flowfs` (or a path ending in
`/flowfs`), in a shell-like fenced block of README.md or docs/*.md: every line
of a `sh`/`bash`/unlabelled block, and the `$ ` lines of a `console` block
(the other lines there are output; a console block without a prompt is all
commands). Comments are dropped, continuation lines
joined, and a line is cut at `&&`, `||`, `;` and `|`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL_BLOCKS = ("", "sh", "bash", "shell", "console")
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_OPERATORS = {"&&", "||", ";", "|", "&"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    """One fenced shell block: its file, first line number and lines."""

    file: str
    line: int
    lang: str
    lines: tuple[str, ...]

    def commands(self) -> list[tuple[str, ...]]:
        """The block's command lines (console: only after the prompt), split into words."""
        out: list[tuple[str, ...]] = []
        pending = ""
        # A console block without a prompt is a list of commands, not a session.
        session = self.lang == "console" and any(x.startswith("$ ") for x in self.lines)
        for raw in self.lines:
            if session:
                if not raw.startswith("$ ") and not pending:
                    continue
                raw = raw[2:] if raw.startswith("$ ") else raw
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            text, pending = pending + raw, ""
            try:
                out.append(tuple(shlex.split(text, comments=True)))
            except ValueError:  # a heredoc line with a lone quote: no command in it
                continue
        return out

    def text(self) -> str:
        return "\n".join(self.lines)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks() -> list[Block]:
    found = []
    for path in documents():
        text = path.read_text()
        for match in _FENCE.finditer(text):
            lang = match.group(1).strip()
            if lang not in SHELL_BLOCKS:
                continue
            line = text.count("\n", 0, match.start()) + 2
            found.append(Block(str(path.relative_to(REPO)), line, lang,
                               tuple(match.group(2).splitlines())))
    return found


def flowfs_commands(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The simple commands of one command line whose program is flowfs."""
    segments: list[list[str]] = [[]]
    for word in words:
        if word in _OPERATORS:
            segments.append([])
        else:
            segments[-1].append(word)
    found = []
    for segment in segments:
        program = next((w for w in segment if not _ASSIGNMENT.match(w)), "")
        if program == "flowfs" or program.endswith("/flowfs"):
            found.append(tuple(segment))
    return found


def documented() -> dict[str, list[str]]:
    """Each documented flowfs command (words joined by one space) -> where it is shown."""
    out: dict[str, list[str]] = {}
    for block in blocks():
        for words in block.commands():
            for command in flowfs_commands(words):
                out.setdefault(" ".join(command), []).append(f"{block.file}:{block.line}")
    return out


def block_with(file: str, command: str) -> Block:
    """The one block of ``file`` in which ``command`` is documented."""
    found = [b for b in blocks() if b.file == file
             and any(" ".join(c) == command for w in b.commands() for c in flowfs_commands(w))]
    assert len(found) == 1, f"{file}: {len(found)} blocks show {command!r}"
    return found[0]
