"""The command line of ``flowfs serve``: its flags, shared by two entry points.

``flowfs serve`` (a subcommand of the daemon's command) and ``python -m
flowfs.server`` add the same arguments from here.  This module needs nothing
but the standard library, so ``flowfs serve --help`` works even where the
server's own dependencies are not installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowfs.server import config as defaults

PROG = "flowfs serve"
DESCRIPTION = ("Serve a catalog of users, projects, samples and data files as a Flow API "
               "(the reference server of the demo, the tests and the benchmarks).")
EPILOG = "Every flag is described in docs/server.md of the flowfs sources."


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0-65535")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server's flags to ``parser``."""
    add = parser.add_argument
    add("--catalog", type=Path, required=True, metavar="FILE", help="catalog JSON file")
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=_port, default=defaults.DEFAULT_PORT,
        help=f"port (default {defaults.DEFAULT_PORT}; 0: any free port)")
    add("--state-dir", type=Path, metavar="DIR",
        help="secrets, md5 cache, jobs (default: a temporary dir, removed at exit)")
    add("--files-url", metavar="URL", help="files server URL handed out in download URLs")
    add("--token-ttl", type=_positive_seconds, default=defaults.DEFAULT_TOKEN_TTL,
        metavar="S", help=f"access token lifetime (default {defaults.DEFAULT_TOKEN_TTL:g} s)")
    add("--refresh-ttl", type=_positive_seconds, default=defaults.DEFAULT_REFRESH_TTL,
        metavar="S",
        help=f"refresh cookie lifetime (default {defaults.DEFAULT_REFRESH_TTL:g} s)")
    add("--job-ttl", type=_positive_seconds, default=defaults.DEFAULT_JOB_TTL, metavar="S",
        help="seconds a finished bulk archive stays downloadable")
    # A test knob, not a setting: kept out of --help (docs/server.md, "Test knobs").
    add("--job-delay", type=_seconds, default=0.0, help=argparse.SUPPRESS)
    add("--workers", type=int, default=defaults.DEFAULT_WORKERS, metavar="N",
        help=f"archive threads (default {defaults.DEFAULT_WORKERS})")
    add("--ready-file", type=Path, metavar="PATH",
        help="write {api, files, pid} JSON here once ready (for scripts)")
    add("--access-log", type=Path, metavar="FILE", help="append one JSON line per request here")
    add("--export-dir", type=Path, metavar="DIR",
        help="maintain downloads/<id>/<filename> symlinks here")
    add("--tls-cert", type=Path, metavar="FILE",
        help="PEM certificate (chain): serve HTTPS; needs --tls-key")
    add("--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert")
    add("--debug", action="store_true", help="log more (never secrets)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m flowfs.server``."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    add_arguments(parser)
    return parser
