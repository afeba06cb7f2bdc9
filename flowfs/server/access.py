"""Who may read what: the one place the visibility rules of docs/flow-api.md live.

A reader sees an object if it owns it, if it is shared with them (its own
``shared_with``, or the ``shared_with`` or ownership of a container: a project
covers its samples, executions and data; a sample or an execution covers its
data), or if it is not private.  Anonymous readers (``None``) see only what is
not private.
"""

from __future__ import annotations

from flowfs.server.catalog import Catalog, Content


class Access:
    """Visibility checks over one (immutable) catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def can_read(self, user: str | None, obj: Content) -> bool:
        """True if ``user`` (None: anonymous) may see ``obj``."""
        if not obj.private:
            return True
        if user is None:
            return False
        return user == obj.owner or self.is_shared_with(user, obj)

    def is_shared_with(self, user: str, obj: Content) -> bool:
        """True if ``obj`` reaches ``user`` through sharing (whoever owns it)."""
        if user in obj.shared_with:
            return True
        return any(user == c.owner or user in c.shared_with
                   for c in self._catalog.containers(obj))

    def shared_not_owned(self, user: str | None, obj: Content) -> bool:
        """For the ``/shared`` lists: shared with ``user``, who does not own it."""
        return user is not None and user != obj.owner and self.is_shared_with(user, obj)
