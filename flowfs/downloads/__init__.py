"""`.downloads/`: bulk ZIP jobs through the filesystem (docs/design.md).

A manifest written here becomes, on its close, a server-side bulk job;
``<name>.status`` shows the job (fresh on every read) and ``<name>.zip`` the
finished archive, read through the normal read path. Bad manifests are never
half-submitted: ``close()`` fails with EINVAL, ``<name>.error`` explains each
bad line, and nothing is sent. A draft (``x.manifest.part``) is never submitted
itself: renaming it to ``x.manifest`` submits it, so a writer killed half-way
leaves a draft, not a job.

Hostile input costs bounded time and memory: manifests and drafts being written
share one budget (``MANIFEST_SPACE``), a line is refused as soon as it passes its
limit, checking stops once the files named pass what one job may hold, and the
check yields to other requests as it goes. Creating a job survives a lost reply
(``jobs``).

The modules, from the bottom up: ``composing`` (a manifest being written: its
bytes, its one writer, the budget), ``jobs`` (what the mount knows of each job;
listing, polling, creating, deleting), ``directory`` (the names shown),
``checking`` (manifests against the tree), ``submitting`` (a manifest becomes a
job) and ``wing`` (``Downloads``: one call per FUSE operation, for ``ops``).
"""

from flowfs.downloads.composing import MANIFEST_SPACE, MAX_JOB_FILES, ManifestFile
from flowfs.downloads.directory import DownloadsDir
from flowfs.downloads.jobs import ACTIVE, EXPIRED_KEPT, Job
from flowfs.downloads.wing import Downloads

__all__ = ["ACTIVE", "EXPIRED_KEPT", "MANIFEST_SPACE", "MAX_JOB_FILES", "Downloads",
           "DownloadsDir", "Job", "ManifestFile"]
