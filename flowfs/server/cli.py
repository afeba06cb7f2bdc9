"""``flowfs serve``: command-line entry point of the reference server.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM included), 2 for a bad
catalog or bad settings (one line on stderr, never a traceback), 1 if the
server cannot listen.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from flowfs.server.app import API_PREFIX, open_server
from flowfs.server.catalog import CatalogError
from flowfs.server.config import ServerConfig
from flowfs.server.options import PROG as _PROG
from flowfs.server.options import build_parser
from flowfs.server.runner import announce, base_url, bind, handling_signals, serve


class _Stopped(Exception):
    """A signal arrived before the server was up."""


@contextlib.contextmanager
def _state_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(mode=0o700, parents=True, exist_ok=True)
        yield given.resolve()
        return
    temp = Path(tempfile.mkdtemp(prefix="flowfs-serve-"))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _raise_stopped(sig: int, frame: FrameType | None) -> None:
    raise _Stopped


def _config(args: argparse.Namespace, state_dir: Path) -> ServerConfig:
    return ServerConfig(
        catalog=args.catalog, state_dir=state_dir, host=args.host, port=args.port,
        files_url=args.files_url, token_ttl=args.token_ttl, refresh_ttl=args.refresh_ttl,
        job_ttl=args.job_ttl, job_delay=args.job_delay, workers=max(1, args.workers),
        ready_file=args.ready_file, access_log=args.access_log, export_dir=args.export_dir,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
    )


def _run(config: ServerConfig) -> int:
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        print(f"{_PROG}: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    tls = (config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    with sock, open_server(config) as app:
        files = base_url(sock, "https" if tls else "http")
        serve(app, sock, lambda: announce(files + API_PREFIX, files, config.ready_file), tls)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m flowfs.server``: parse ``argv``, then :func:`run`."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the reference server until SIGINT/SIGTERM; the process exit code.

    ``args`` are the flags of :mod:`flowfs.server.options`, parsed by either entry point.
    """
    if (args.tls_cert is None) != (args.tls_key is None):
        print(f"{_PROG}: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Until the server runs (it has its own handlers), SIGINT/SIGTERM end startup quietly.
    with handling_signals(_raise_stopped):
        try:
            with _state_dir(args.state_dir) as state_dir:
                return _run(_config(args, state_dir))
        except CatalogError as exc:
            print(f"{_PROG}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"{_PROG}: {exc}", file=sys.stderr)
            return 2
        except _Stopped:
            return 0
