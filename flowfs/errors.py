"""Domain errors and the one table that maps them to errno.

Every layer below ``ops`` raises these; ``ops`` translates them with
:func:`errno_for` in a single decorator.  Nothing else decides an errno.
"""

from __future__ import annotations

import errno


class FlowError(Exception):
    """Base class of every error flowfs means to report to a user."""


class NotFound(FlowError):
    """The object does not exist (or is no longer visible): 404, 410, unknown name."""


class Forbidden(FlowError):
    """Valid credentials, no permission: 403."""


class AuthExpired(FlowError):
    """Credentials were refused and could not be refreshed: the user must log in again."""


class Transient(FlowError):
    """A network or server failure that outlived retries, or a read past its deadline."""


class Untrusted(Transient):
    """The server's TLS certificate failed verification: retrying cannot help."""


class BadReply(Transient):
    """The server answered something we cannot trust (wrong Content-Range, short body...)."""


class Rejected(FlowError):
    """The server understood the request and refused it (400, 409, 413, 422)."""


class ReadOnly(FlowError):
    """A write outside ``.downloads/``."""


class BadManifest(FlowError):
    """A ``.downloads/`` manifest with bad entries; the message lists them."""


class InvalidName(FlowError):
    """A name that ``.downloads/`` does not accept."""


class TooBig(FlowError):
    """A manifest over the size limit."""


class NoSpace(FlowError):
    """The memory set aside for manifests being written is full."""


class Busy(FlowError):
    """A manifest that another open file is writing."""


class Exists(FlowError):
    """A bulk job of that name already exists."""


class NotPermitted(FlowError):
    """An operation that is never allowed here (e.g. mkdir in ``.downloads/``)."""


class ConfigError(FlowError):
    """Bad configuration or credentials source; reported before mounting."""


# One table: domain error -> errno.  Order matters only for subclasses, which
# must come before their base class.
ERRNO_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (Forbidden, errno.EACCES),
    (AuthExpired, errno.EACCES),
    (Transient, errno.EIO),
    (Rejected, errno.EINVAL),
    (ReadOnly, errno.EROFS),
    (BadManifest, errno.EINVAL),
    (InvalidName, errno.EINVAL),
    (TooBig, errno.EFBIG),
    (NoSpace, errno.ENOSPC),
    (Busy, errno.EBUSY),
    (Exists, errno.EEXIST),
    (NotPermitted, errno.EPERM),
)


def errno_for(exc: BaseException) -> int | None:
    """The errno for a domain error, or None for an unexpected exception."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    for cls, code in ERRNO_TABLE:
        if isinstance(exc, cls):
            return code
    return None
