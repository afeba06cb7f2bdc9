"""Names any POSIX tool accepts: the mount's naming rules, for archive entries and headers.

A bulk ZIP unpacks to names a user has already seen in the mount, and
``unzip`` must be able to create every one of them, so entry names follow the
rules the mount applies to Flow's names (docs/usage.md, "Names"):

- in one path component, ``/``, NUL, C0 and C1 controls, DEL, the bidi controls
  (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), the line and
  paragraph separators (U+2028, U+2029) and lone surrogates become ``_``;
  so does ``\\``, which the mount keeps but many ZIP tools and Windows read as a
  separator;
- ``.``, ``..`` and the empty name get a leading ``_``;
- a component over 255 bytes (UTF-8) is cut on a character boundary, keeping
  its extension;
- a suffix such as ``~<id>`` goes before the extension (``reads~105.fastq.gz``).

The server imports nothing from the daemon side of flowfs (docs/architecture.md):
it stands in for Flow, and a bug shared with the mount would hide from the tests
that use one to check the other. So it keeps this small copy of the rules instead of
importing ``flowfs.names``, and a test (tests/server/test_server_hostile_names.py)
holds the two copies to one rule, ``\\`` aside.
"""

from __future__ import annotations

import re

MAX_NAME_BYTES = 255
_UNSAFE_CHARS = (
    "\x00-\x1f\x7f-\x9f"        # C0 controls, DEL, C1 controls
    "\u061c\u200e\u200f"        # Arabic letter mark, LRM, RLM
    "\u202a-\u202e\u2066-\u2069"  # bidi embeddings, overrides and isolates
    "\u2028\u2029"              # line and paragraph separators
    "\ud800-\udfff"             # surrogates: alone in a str they are not text
)
_UNSAFE = re.compile(f"[/\\\\{_UNSAFE_CHARS}]")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".bgz")
_MAX_EXTENSION_BYTES = 32  # longer, an "extension" is just part of the name


def safe_component(text: str) -> str:
    """One path component made safe (see the module docstring)."""
    safe = _UNSAFE.sub("_", text)
    if safe in ("", ".", ".."):
        safe = "_" + safe
    if len(safe.encode()) > MAX_NAME_BYTES:
        safe = with_suffix(safe, "")
    return safe


def split_ext(name: str) -> tuple[str, str]:
    """Split off the extension, a compression suffix with it: x.fastq.gz -> x, .fastq.gz."""
    stem, ext = _split_one(name)
    if ext.lower() in _COMPRESSION and stem:
        stem2, ext2 = _split_one(stem)
        if ext2:
            return stem2, ext2 + ext
    return stem, ext


def _split_one(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:
        return name, ""
    return name[:dot], name[dot:]


def with_suffix(name: str, suffix: str) -> str:
    """``suffix`` inserted before the extension; the stem is cut to keep 255 bytes."""
    stem, ext = split_ext(name)
    if len(ext.encode()) > _MAX_EXTENSION_BYTES:
        stem, ext = name, ""
    budget = max(MAX_NAME_BYTES - len((suffix + ext).encode()), 0)
    return stem.encode()[:budget].decode(errors="ignore") + suffix + ext
