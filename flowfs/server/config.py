"""The reference server's settings: one frozen dataclass, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8000
DEFAULT_TOKEN_TTL = 300.0
DEFAULT_REFRESH_TTL = 7 * 24 * 3600.0
DEFAULT_JOB_TTL = 24 * 3600.0
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``flowfs serve`` can be told; see docs/server.md for each field."""

    catalog: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    files_url: str | None = None
    token_ttl: float = DEFAULT_TOKEN_TTL
    refresh_ttl: float = DEFAULT_REFRESH_TTL
    job_ttl: float = DEFAULT_JOB_TTL
    job_delay: float = 0.0
    workers: int = DEFAULT_WORKERS
    ready_file: Path | None = None
    access_log: Path | None = None
    export_dir: Path | None = None
    tls_cert: Path | None = None  # PEM certificate chain: serve HTTPS (with tls_key)
    tls_key: Path | None = None
