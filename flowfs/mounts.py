"""The flowfs mounts of this machine, from ``/proc/self/mountinfo`` (type ``fuse.flowfs``).

Used by ``flowfs status``, ``umount``, ``downloads`` and completion: reading mountinfo never
calls into a mount, so a hung daemon cannot hang the search.
"""

from __future__ import annotations

import re
from pathlib import Path

FSTYPE = "fuse.flowfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def parse_mountinfo(text: str) -> list[Path]:
    """The mount points of flowfs mounts in a mountinfo text."""
    found = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) > 4 and right.split(" ", 1)[0] == FSTYPE:
            found.append(Path(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])))
    return found


def flowfs_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    return parse_mountinfo(mountinfo.read_text(errors="replace"))
