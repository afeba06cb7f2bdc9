"""The daemon's log: who may log what, where it goes, and that no secret gets out.

Three rules, each kept by one piece of this module:

1. **Levels** (:func:`parse_levels`, :class:`ForeignGate`). Our own loggers (``flowfs.*``)
   log at the level asked for; every other library's logger (httpx, httpcore, h11, trio,
   pyfuse3...) logs warnings only, unless the level spec names it (``debug,httpcore=debug``).
   ``--debug`` alone must not turn them on: httpcore's DEBUG records print response
   headers, and the login reply's ``set-cookie`` is a refresh token good for a week.
   libfuse's own dump (the FUSE ``debug`` option) is asked for the same way: ``fuse=debug``.
2. **Redaction** (:class:`Redactor`). Every record is rewritten before a handler writes it:
   bearer tokens, cookie and authorization headers, ``password``/``token`` fields, JWTs,
   passwords in URLs, and the literal secrets this process holds. A second line of
   defence: the first is that nothing logs them.
3. **Files** (:class:`PrivateRotatingFile`). A log file is created 0600 and rotated by size,
   so it never holds more than ``(BACKUPS + 1) x max_bytes`` on disk.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

OWN = "flowfs"
FUSE = "fuse"  # no logger: libfuse's own debug dump to stderr (the FUSE "debug" option)
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
BACKUPS = 3  # rotated files kept beside the current one
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<redacted>"
MIN_SECRET = 4  # shorter literal secrets would blank out ordinary words


@dataclass(frozen=True)
class LogLevels:
    """A parsed level spec: our level, and the level of each named foreign logger."""

    own: int = logging.WARNING
    named: tuple[tuple[str, int], ...] = ()

    @property
    def fuse_debug(self) -> bool:
        return (FUSE, logging.DEBUG) in self.named


_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


def parse_levels(spec: str) -> LogLevels:
    """``"info"``, ``"debug,httpx=info"``, ``"warning,fuse=debug"``: a bare level is ours.

    Raises ValueError naming the part it cannot read.
    """
    own = logging.WARNING
    named: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, level = part.rpartition("=")
        name, level = name.strip(), level.strip().lower()
        if level not in LEVELS:
            raise ValueError(f"{part!r}: the level must be one of {', '.join(LEVELS)}")
        if not name or name == OWN:
            own = LEVELS[level]
        elif _NAME.match(name):
            named[name] = LEVELS[level]
        else:
            raise ValueError(f"{part!r}: {name!r} is not a logger name")
    return LogLevels(own, tuple(sorted(named.items())))


def format_levels(levels: LogLevels) -> str:
    """The canonical spec of ``levels`` (what ``flowfs config`` shows)."""
    names = {number: name for name, number in LEVELS.items()}
    parts = [names[levels.own]] + [f"{name}={names[level]}" for name, level in levels.named]
    return ",".join(parts)


# -- redaction ---------------------------------------------------------------------------

_SECRET_KEY = r"[\w-]*(?:token|passw(?:or)?d|secret|session|cookie|api[_-]?key|authorization)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # httpcore's header tuples: (b'set-cookie', b'flow_refresh_token=...; HttpOnly')
    (re.compile(r"(?i)(b?['\"](?:set-cookie|cookie|authorization|proxy-authorization)['\"]"
                r"\s*,\s*b?(['\"]))(.*?)(\2)"), rf"\1{REDACTED}\4"),
    # Header lines: "Cookie: a=b; c=d", "Authorization: Bearer x"
    (re.compile(r"(?im)\b((?:set-cookie|cookie|authorization|proxy-authorization)\s*:\s*)"
                r"[^\r\n]*"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+"), rf"\1{REDACTED}"),
    # key=value and "key": "value", quoted (any content) or bare
    (re.compile(rf"(?i)({_SECRET_KEY}[\w-]*['\"]?\s*[:=]\s*)(['\"])(.*?)(\2)"),
     rf"\1\2{REDACTED}\4"),
    (re.compile(rf"(?i)({_SECRET_KEY}[\w-]*\s*[:=]\s*)(?!['\"<])[^\s,;&)'\"]+"),
     rf"\1{REDACTED}"),
    # JWTs (Flow's access and refresh tokens are JWTs): header.payload.signature
    (re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), REDACTED),
    # user:password@ in URLs (proxy settings)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^\s@]+@"), rf"\1{REDACTED}@"),
)


class Redactor(logging.Filter):
    """Rewrites each record with its secrets replaced by ``<redacted>``.

    Attached to every handler, so a record from any logger is redacted before it is
    written. The message is formatted here (``record.args`` then cleared), and so are the
    traceback and stack text, which would otherwise be rendered after the filters ran.
    """

    def __init__(self) -> None:
        super().__init__()
        self._literals: set[str] = set()

    def add_secrets(self, secrets: Iterable[str | None]) -> None:
        """Literal values to blank wherever they appear (a password has no pattern)."""
        self._literals.update(s for s in secrets if s and len(s) >= MIN_SECRET)

    def redact(self, text: str) -> str:
        for secret in sorted(self._literals, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the record, nor raise here
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


class ForeignGate(logging.Filter):
    """Drops other libraries' records below WARNING unless the spec named their logger.

    Logger levels already keep them out; this holds even if a library sets its own
    logger's level, or a record reaches our handlers some other way.
    """

    def __init__(self, levels: LogLevels) -> None:
        super().__init__()
        self._named = tuple(name for name, _ in levels.named)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        return any(name == own or name.startswith(own + ".") for own in (OWN, *self._named))


# -- files -------------------------------------------------------------------------------

class PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A size-rotated log file, created 0600.

    With ``follow_stderr`` the process's stderr (and stdout) are pointed at the current
    file after each rotation: a daemon's stray output (a crash traceback, libfuse's own
    messages) then lands in the file a user reads, not in a renamed or deleted one.
    """

    def __init__(self, path: Path, max_bytes: int, *, follow_stderr: bool = False) -> None:
        self._follow = follow_stderr
        super().__init__(path, maxBytes=max_bytes, backupCount=BACKUPS, encoding="utf-8")
        self._point_stderr()

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors="backslashreplace")  # noqa: SIM115

    def doRollover(self) -> None:
        super().doRollover()
        self._point_stderr()

    def _point_stderr(self) -> None:
        if not self._follow or self.stream is None:
            return
        sys.stderr.flush()
        sys.stdout.flush()
        for fd in (1, 2):
            os.dup2(self.stream.fileno(), fd)


def setup(levels: LogLevels, *, path: Path | None = None, max_bytes: int = 10 * 2**20,
          follow_stderr: bool = False, stream: IO[str] | None = None) -> Redactor:
    """Configure this process's logging once; returns the redactor to add secrets to.

    ``path``: a rotating file; else ``stream`` (default stderr). Replaces any handler
    set up before.
    """
    handler: logging.Handler
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = PrivateRotatingFile(path, max_bytes, follow_stderr=follow_stderr)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    redactor = Redactor()
    handler.addFilter(ForeignGate(levels))
    handler.addFilter(redactor)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # everyone else's records: warnings only
    logging.getLogger(OWN).setLevel(levels.own)
    for name, level in levels.named:
        if name != FUSE:
            logging.getLogger(name).setLevel(level)
    return redactor
