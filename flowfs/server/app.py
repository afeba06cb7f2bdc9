"""Assembling the server: load the catalog, build the parts, route them.

:func:`open_server` is a context manager that yields the ASGI app with every
background part running, and tears them down (in reverse order) on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from flowfs.server.access import Access
from flowfs.server.accesslog import AccessLog, AccessLogMiddleware
from flowfs.server.api import CatalogApi
from flowfs.server.auth import Authenticator
from flowfs.server.catalog import load_catalog
from flowfs.server.config import ServerConfig
from flowfs.server.digests import DigestCache
from flowfs.server.downloads_api import DownloadsApi
from flowfs.server.errors import ApiError, api_error_handler, http_error_handler
from flowfs.server.export import Exporter
from flowfs.server.files import FileServer
from flowfs.server.jobs import JobStore
from flowfs.server.streaming import DiskReader
from flowfs.server.tokens import TokenIssuer, load_or_create_secret
from flowfs.server.views import Views
from flowfs.server.workers import JobRunner, JobSettings

API_PREFIX = "/api"


def build_app(api_routes: list[BaseRoute], file_routes: list[BaseRoute],
              access_log: AccessLog | None) -> Starlette:
    """The ASGI app: the API under ``/api``, the files server at the root."""
    middleware = [Middleware(AccessLogMiddleware, log=access_log)] if access_log else []
    return Starlette(
        routes=[Mount(API_PREFIX, routes=api_routes), *file_routes],
        middleware=middleware,
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler},
    )


@contextlib.contextmanager
def open_server(config: ServerConfig) -> Iterator[Starlette]:
    """Load the catalog (CatalogError if bad), start the parts, yield the app."""
    state = config.state_dir
    catalog = load_catalog(config.catalog, DigestCache(state))
    tokens = TokenIssuer(load_or_create_secret(state), config.token_ttl, config.refresh_ttl)
    auth = Authenticator(catalog, tokens, config.refresh_ttl)
    access = Access(catalog)
    exporter = Exporter(config.export_dir) if config.export_dir else None
    if exporter is not None:
        exporter.export_catalog(catalog)
    with contextlib.ExitStack() as stack:
        store = JobStore(state / "jobs.sqlite3")
        stack.callback(store.close)
        reader = DiskReader()
        stack.callback(reader.close)
        settings = JobSettings(config.workers, config.job_ttl, config.job_delay)
        runner = JobRunner(store, catalog, state / "archives", settings, exporter)
        runner.start()
        stack.callback(runner.stop)
        access_log = AccessLog(config.access_log) if config.access_log else None
        if access_log is not None:
            stack.callback(access_log.close)
        files = FileServer(catalog, access, auth, store, runner, reader)
        downloads = DownloadsApi(catalog, access, auth, store, runner, config.files_url)
        api_routes: list[BaseRoute] = [
            Route("/login", auth.login, methods=["POST"]),
            Route("/token", auth.refresh, methods=["GET"]),
            *CatalogApi(catalog, Views(catalog), access, auth).routes(),
            *downloads.routes(),
            *files.api_routes(),
        ]
        yield build_app(api_routes, list(files.routes()), access_log)
