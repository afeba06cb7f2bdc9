"""The read-only catalog API: ``/me``, the list endpoints and the detail objects.

Every list endpoint is one row of :data:`LISTINGS` (config as data).  A list
holds only what the caller may read, in id order; the filtered result is
cached per (list, parent, caller) because the catalog never changes, so paging
through 50,000 items costs one filter pass, not one per page.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowfs.server.access import Access
from flowfs.server.auth import Authenticator
from flowfs.server.catalog import Catalog, Content
from flowfs.server.errors import not_found, unauthenticated
from flowfs.server.pagination import page_params, page_response
from flowfs.server.views import Views

Source = Callable[[Catalog, str | None], Sequence[Content]]

_OWNED = "owned"
_SHARED = "shared"
_READABLE = "readable"
_CACHE_ENTRIES = 1024


@dataclass(frozen=True)
class Listing:
    """One list endpoint: its path under the API, items key, parent kind, items, filter."""

    path: str
    key: str
    view: str
    source: Source
    mode: str = _READABLE
    parent: str | None = None


def _all(kind: str) -> Source:
    return lambda catalog, _parent: tuple(getattr(catalog, kind).values())


def _children(index: str) -> Source:
    return lambda catalog, parent: getattr(catalog, index).get(parent or "", ())


LISTINGS: tuple[Listing, ...] = (
    Listing("/projects/owned", "projects", "projects", _all("projects"), _OWNED),
    Listing("/projects/shared", "projects", "projects", _all("projects"), _SHARED),
    Listing("/samples/owned", "samples", "samples", _all("samples"), _OWNED),
    Listing("/samples/shared", "samples", "samples", _all("samples"), _SHARED),
    Listing("/data/owned", "data", "data", _all("data"), _OWNED),
    Listing("/executions/owned", "executions", "executions", _all("executions"), _OWNED),
    Listing("/projects/{ident}/samples", "samples", "samples",
            _children("samples_by_project"), parent="projects"),
    Listing("/projects/{ident}/executions", "executions", "executions",
            _children("executions_by_project"), parent="projects"),
    Listing("/samples/{ident}/data", "data", "data", _children("data_by_sample"),
            parent="samples"),
    Listing("/samples/{ident}/executions", "executions", "executions",
            _children("executions_by_sample"), parent="samples"),
    Listing("/executions/{ident}/data", "data", "outputs", _children("data_by_execution"),
            parent="executions"),
)

# Detail endpoints: path, catalog (and views) table, name used in a 404.
DETAILS: tuple[tuple[str, str, str], ...] = (
    ("/projects/{ident}", "projects", "Project"),
    ("/samples/{ident}", "samples", "Sample"),
    ("/executions/{ident}", "executions", "Execution"),
    ("/data/{ident}", "data", "Data"),
)


class CatalogApi:
    """Endpoints over the catalog; see :data:`LISTINGS` and :data:`DETAILS`."""

    def __init__(self, catalog: Catalog, views: Views, access: Access,
                 auth: Authenticator) -> None:
        self._catalog = catalog
        self._views = views
        self._access = access
        self._auth = auth
        # Touched only from the event loop, with no await inside a lookup+insert.
        self._lists: OrderedDict[tuple[str, str | None, str | None], list[Any]] = OrderedDict()

    def routes(self) -> list[Route]:
        """Starlette routes, relative to the API prefix (fixed paths before ``{ident}``)."""
        routes = [Route("/me", self._auth.me, methods=["GET"])]
        routes += [Route(listing.path, self._list_endpoint(listing), methods=["GET"])
                   for listing in LISTINGS]
        routes += [Route(path, self._detail_endpoint(table, label), methods=["GET"])
                   for path, table, label in DETAILS]
        return routes

    def find(self, table: str, ident: str, user: str | None, label: str) -> Content:
        """The object, if ``user`` may read it; 404 otherwise (never revealing it exists)."""
        obj: Content | None = getattr(self._catalog, table).get(ident)
        if obj is None or not self._access.can_read(user, obj):
            raise not_found(f"{label} not found")
        return obj

    def _detail_endpoint(self, table: str, label: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            user = self._auth.identify(request)
            obj = self.find(table, request.path_params["ident"], user, label)
            return JSONResponse(getattr(self._views, table)[obj.id])

        return endpoint

    def _list_endpoint(self, listing: Listing) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            user = self._auth.identify(request)
            if listing.mode != _READABLE and user is None:
                raise unauthenticated()
            page, count = page_params(request)
            parent = request.path_params.get("ident")
            if listing.parent is not None:
                self.find(listing.parent, parent or "", user, listing.parent[:-1].title())
            items = self._visible(listing, parent, user)
            return page_response(listing.key, items, page, count)

        return endpoint

    def _visible(self, listing: Listing, parent: str | None, user: str | None) -> list[Any]:
        key = (listing.path, parent, user)
        cached = self._lists.get(key)
        if cached is not None:
            self._lists.move_to_end(key)
            return cached
        keep = self._filter(listing.mode, user)
        table = getattr(self._views, listing.view)
        items = [table[obj.id] for obj in listing.source(self._catalog, parent) if keep(obj)]
        self._lists[key] = items
        if len(self._lists) > _CACHE_ENTRIES:
            self._lists.popitem(last=False)
        return items

    def _filter(self, mode: str, user: str | None) -> Callable[[Content], bool]:
        if mode == _OWNED:
            return lambda obj: obj.owner == user
        if mode == _SHARED:
            return lambda obj: self._access.shared_not_owned(user, obj)
        return lambda obj: self._access.can_read(user, obj)
