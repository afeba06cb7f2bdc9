"""``flowfs rsync-filter``: what a copy of a whole mount should leave out.

A backup of a mount (``rsync -aH ~/flow/ backup/``) wants the data, once. The mount's
own files would be copied on every run (``.flowfs/stats`` changes with each read) or
are copies of data in the tree already (``.downloads/``'s archives). Files shown in
several places (``samples/`` and ``projects/…/samples/``) are one inode with a link
count of 2, so ``rsync -H`` (and ``cp -a``, ``tar``, ``du``) take each once.
The rules carry rsync's ``- `` prefix, so the text works as an ``--exclude-from`` file
and as a ``--filter='merge FILE'`` file alike.
"""

from __future__ import annotations

FILTER = """\
# flowfs: what a copy of a flowfs mount leaves out. Use with rsync -aH, e.g.
#   flowfs rsync-filter | rsync -aH --exclude-from=- ~/flow/ backup/
# -H: a file shown in samples/ and projects/ is one file (link count 2), copied once.
# The mount's counters, rewritten on every read:
- /.flowfs/
# Bulk ZIP archives: data that is in the tree already, and jobs still running:
- /.downloads/
# Files by id: never listed; left out should a path through it be named:
- /by-id/
"""
