"""Sizes as text: read from the user (512M), written back exactly (config.toml), shown
approximately to a person (1.5M in ``flowfs status``, 1.5 MiB in ``flowfs downloads``).

Binary units throughout: K is 1024.
"""

from __future__ import annotations

import re

from flowfs.errors import ConfigError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """Parse '512M', '2GiB', '1048576' into bytes (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"not a size: {text!r} (try 512M or 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(size: int) -> str:
    """The shortest exact form :func:`parse_size` reads back: 512M, 64K, 1000."""
    for unit, factor in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


#: ``flowfs status``'s units (1.5M); ``flowfs downloads``' (1.5 MiB) are LONG.
SHORT = ("B", "K", "M", "G", "T")
LONG = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(n: float, units: tuple[str, ...] = SHORT, sep: str = "") -> str:
    """``n`` bytes for a person: whole bytes below 1K, else one decimal (1.5M)."""
    for unit in units:
        if abs(n) < 1024 or unit == units[-1]:
            return f"{n:.0f}{sep}{unit}" if unit == units[0] else f"{n:.1f}{sep}{unit}"
        n /= 1024
    raise AssertionError("unreachable")
