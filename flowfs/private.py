"""Files only their owner may use: the one rule for every secret file flowfs reads or writes.

Reading (:func:`read_private`): a secret file that other users may read or change is
refused, with the exact ``chmod 600 PATH`` that fixes it. The mode is taken from the
open descriptor, so the file checked is the file read. This holds for the stored
sessions and for ``FLOW_TOKEN_FILE`` alike: a token in a world-readable file is as
good as published, whoever wrote it.

Writing (:func:`write_private`): the content goes to a fresh temporary file created
0600 with ``O_EXCL`` beside the target (never an older file that may have other modes),
is flushed to disk, and replaces the target in one rename; the directory is 0700.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from flowfs.errors import ConfigError

OTHERS = stat.S_IRWXG | stat.S_IRWXO


def check_mode(path: Path, mode: int) -> None:
    """Refuse a file that group or other users may read, write or run."""
    if mode & OTHERS:
        raise ConfigError(f"{path} is open to other users (mode {stat.S_IMODE(mode):04o}), "
                          f"so its secret may be known; run 'chmod 600 {path}'")


def read_private(path: Path) -> str:
    """The text of a secret file, after checking that only its owner may use it.

    Raises FileNotFoundError if it does not exist, ConfigError if others may read it,
    OSError for anything else.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        check_mode(path, os.fstat(fd).st_mode)
        return fh.read().decode("utf-8", errors="replace")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically as a 0600 file in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)  # mkstemp's mode already; said here, not assumed
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
