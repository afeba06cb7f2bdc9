"""Configuration as data: one frozen dataclass built once from defaults, env and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from flowfs.errors import ConfigError
from flowfs.sizes import format_size

# The mount's own hidden directory and its stats file (written by stats, read by status).
STATS_DIR = ".flowfs"
STATS_FILE = "stats"
METRICS_FILE = "metrics"
REFRESH_FILE = "refresh"

DEFAULT_API_URL = "https://app.flow.bio/api"
MiB = 2**20
DISK_CACHE_MODES = ("private", "group")

# Every mount option's built-in default, held here only: MountConfig's fields and the
# rows of settings.OPTIONS (their values and the help text that names them) read these.
DEFAULT_CACHE_SIZE = 512 * MiB
MIN_CACHE_SIZE = 16 * MiB
DEFAULT_IO_TIMEOUT = 60.0
DEFAULT_DIR_TTL = 60.0
DEFAULT_LOG_LEVEL = "warning"  # a spec of flowfs.logs.parse_levels
DEFAULT_LOG_MAX_SIZE = 10 * MiB
MIN_LOG_SIZE = 64 * 1024

def derive_files_url(api_url: str) -> str:
    """The files server of an API URL: host app./api. -> files., path dropped."""
    parts = urlsplit(api_url)
    host = parts.netloc
    for prefix in ("app.", "api."):
        if host.startswith(prefix):
            host = "files." + host[len(prefix):]
            break
    return urlunsplit((parts.scheme, host, "", "", ""))


def normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"not an http(s) URL: {url!r}")
    return url.strip().rstrip("/")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "flowfs"


def cache_dir() -> Path:
    """The default disk cache directory: ``$XDG_CACHE_HOME/flowfs`` (``~/.cache/flowfs``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "flowfs"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "flowfs"


def process_umask() -> int:
    """This process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class MountConfig:
    """Everything a mount needs to know, fixed for the mount's life."""

    mountpoint: Path
    api_url: str = DEFAULT_API_URL
    files_url: str = ""
    cache_size: int = DEFAULT_CACHE_SIZE
    io_timeout: float = DEFAULT_IO_TIMEOUT
    dir_ttl: float = DEFAULT_DIR_TTL
    allow_other: bool = False
    log_level: str = DEFAULT_LOG_LEVEL
    log_file: Path | None = None  # None: stderr
    log_max_size: int = DEFAULT_LOG_MAX_SIZE
    metrics_addr: str = ""  # HOST:PORT to serve /metrics on; "" = not served
    foreground: bool = False
    disk_cache: bool = True
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/flowfs
    disk_cache_size: int = 10 * 2**30
    disk_cache_mode: str = "private"  # or "group": see docs/configuration.md
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = field(default_factory=process_umask)
    token_file: Path | None = None  # else the credentials of auth.discover's other sources

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", normalise_url(self.api_url))
        files = self.files_url or derive_files_url(self.api_url)
        object.__setattr__(self, "files_url", normalise_url(files))
        if self.cache_size < MIN_CACHE_SIZE:
            raise ConfigError(f"--cache-size must be at least {format_size(MIN_CACHE_SIZE)}")
        if self.disk_cache_mode not in DISK_CACHE_MODES:
            raise ConfigError(f"disk_cache_mode must be one of {', '.join(DISK_CACHE_MODES)}")
        if self.io_timeout <= 0 or self.dir_ttl < 0:
            raise ConfigError("--io-timeout must be positive and --dir-ttl not negative")


METRICS_HOST = "127.0.0.1"  # --metrics-addr PORT: loopback only


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT``/``PORT`` (loopback) → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    host = host.strip("[]") or METRICS_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return host, int(port)
