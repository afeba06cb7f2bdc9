"""Settings: every mount option's effective value, and where it came from.

Sources, highest first: command-line flags, environment variables, the config
file (``$XDG_CONFIG_HOME/flowfs/config.toml``, else ``~/.config/flowfs/``),
built-in defaults. Each option is one row of :data:`OPTIONS` (config as data);
a bad value fails with one line naming the option and the source it came from.
The command line's flags are made from the same rows (:func:`add_flags`) and read
back from a parsed command line (:func:`from_args`).
The result feeds :class:`~flowfs.config.MountConfig`, built once.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowfs import sessions
from flowfs.config import (
    DEFAULT_API_URL,
    DEFAULT_CACHE_SIZE,
    DEFAULT_DIR_TTL,
    DEFAULT_IO_TIMEOUT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_LOG_MAX_SIZE,
    DISK_CACHE_MODES,
    MIN_CACHE_SIZE,
    MIN_LOG_SIZE,
    MountConfig,
    cache_dir,
    config_dir,
    derive_files_url,
    normalise_url,
    parse_addr,
    process_umask,
)
from flowfs.errors import ConfigError
from flowfs.logs import BACKUPS, format_levels, parse_levels
from flowfs.sizes import format_size, parse_size


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string URL")
    return normalise_url(value)


def _optional_url(value: Any) -> str:
    return "" if value == "" else _url(value)


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a size such as 512M")
    size = value if isinstance(value, int) else parse_size(str(value))
    if size < MIN_CACHE_SIZE:
        raise ValueError(f"{value!r} is too small: at least {format_size(MIN_CACHE_SIZE)}")
    return size


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of seconds") from None


def _positive(value: Any) -> float:
    seconds = _number(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than 0 seconds")
    return seconds


def _not_negative(value: Any) -> float:
    seconds = _number(value)
    if seconds < 0:
        raise ValueError(f"{value!r} must not be negative")
    return seconds


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"{value!r} is not true or false")


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("must be a directory path")
    return Path(os.path.expanduser(str(value))).absolute()


def _optional_path(value: Any) -> Path | None:
    return None if value in ("", None) else _path(value)


def _mode(value: Any) -> str:
    if value not in DISK_CACHE_MODES:
        raise ValueError(f"{value!r} is not one of {', '.join(DISK_CACHE_MODES)}")
    return str(value)


def _levels(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a level such as info, or debug,httpx=info")
    return format_levels(parse_levels(value))


def _log_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a size such as 10M")
    size = value if isinstance(value, int) else parse_size(str(value))
    if size < MIN_LOG_SIZE:
        raise ValueError(f"{value!r} is too small: at least {format_size(MIN_LOG_SIZE)}")
    return size


def _id(value: Any) -> int:
    """A user or group id: a number (a name would depend on this machine's passwd)."""
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise ValueError(f"{value!r} is not a numeric id")
    return int(str(value).strip())


def _umask(value: Any) -> int:
    """Octal permission bits as rclone's --umask: 022, 0022, 077 (a TOML integer counts
    as given: write 0o022, or the string "022")."""
    if isinstance(value, bool):
        raise ValueError("must be octal bits such as 022")
    if isinstance(value, int):
        mask = value
    else:
        try:
            mask = int(str(value).strip().removeprefix("0o"), 8)
        except ValueError:
            raise ValueError(f"{value!r} is not octal bits such as 022") from None
    if not 0 <= mask <= 0o777:
        raise ValueError(f"{value!r} is not within 000-777")
    return mask


def _addr(value: Any) -> str:
    if value in ("", None):
        return ""
    host, port = parse_addr(str(value))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _last_login() -> Value | str:
    """The default server: that of the last ``flowfs login``, else Flow's own."""
    url = sessions.default_url()
    return Value(url, "the last 'flowfs login'") if url else DEFAULT_API_URL


@dataclass(frozen=True)
class Option:
    """One setting: its config.toml key, its environment variable and flag, how to parse it."""

    key: str
    env: str
    parse: Callable[[Any], Any]
    default: Callable[[], Any]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def boolean(self) -> bool:
        """A switch: ``--x``/``--no-x`` on the command line, ``x`` alone as a mount option."""
        return self.parse is _bool


OPTIONS: tuple[Option, ...] = (
    Option("api_url", "FLOW_API_URL", _url, lambda: _last_login(),
           "the Flow API URL (default: that of the last 'flowfs login')"),
    Option("files_url", "FLOW_FILES_URL", _optional_url, lambda: "",
           "the files server (default: derived from api_url)"),
    Option("cache_size", "FLOWFS_CACHE_SIZE", _size, lambda: DEFAULT_CACHE_SIZE,
           f"memory for cached blocks, read-ahead and disk writes "
           f"({format_size(DEFAULT_CACHE_SIZE)})"),
    # On by default: a file read again after a remount costs no network at all. Filling
    # it costs a first read that keeps every core busy 4-23% of its throughput (its
    # writes use idle CPU only; docs/performance.md); over a slower link, nothing.
    Option("disk_cache", "FLOWFS_DISK_CACHE", _bool, lambda: True,
           "keep fetched blocks on disk across mounts (on; --no-disk-cache: memory only)"),
    Option("cache_dir", "FLOWFS_CACHE_DIR", _path, cache_dir,
           "the disk cache directory (~/.cache/flowfs; off by default on a network "
           "filesystem)"),
    Option("disk_cache_size", "FLOWFS_DISK_CACHE_SIZE", _size, lambda: 10 * 2**30,
           "the disk cache's bound (10G); 1G of the disk (a twentieth of a small one) "
           "always stays free"),
    Option("disk_cache_mode", "FLOWFS_DISK_CACHE_MODE", _mode, lambda: "private",
           "private (0700/0600) or group (a directory shared with a group, see the docs)"),
    Option("dir_ttl", "FLOWFS_DIR_TTL", _not_negative, lambda: DEFAULT_DIR_TTL,
           f"seconds a listing is reused ({DEFAULT_DIR_TTL:g})"),
    Option("io_timeout", "FLOWFS_IO_TIMEOUT", _positive, lambda: DEFAULT_IO_TIMEOUT,
           f"seconds one read may take before EIO ({DEFAULT_IO_TIMEOUT:g})"),
    Option("mountpoint", "FLOWFS_MOUNTPOINT", _path, lambda: Path.home() / "flow",
           "the default mount point (~/flow)"),
    Option("allow_other", "FLOWFS_ALLOW_OTHER", _bool, lambda: False,
           "let other local users in (needs user_allow_other in /etc/fuse.conf)"),
    Option("token_file", "FLOW_TOKEN_FILE", _optional_path, lambda: None,
           "a file holding an API token, readable by its owner only (for /etc/fstab)"),
    Option("uid", "FLOWFS_UID", _id, os.getuid,
           "the owner every file and directory shows (default: the mounting user)"),
    Option("gid", "FLOWFS_GID", _id, os.getgid,
           "the group every file and directory shows (default: the mounting user's)"),
    Option("umask", "FLOWFS_UMASK", _umask, process_umask,
           "bits taken from 0666 (files) and 0777 (directories), as rclone's --umask "
           "(default: the process umask, usually 022: 0644 and 0755)"),
    Option("log_level", "FLOWFS_LOG_LEVEL", _levels, lambda: DEFAULT_LOG_LEVEL,
           "what the mount logs: debug, info, warning or error, for flowfs itself; "
           "NAME=LEVEL for another library (httpx=debug), fuse=debug for libfuse's dump"),
    Option("log_file", "FLOWFS_LOG_FILE", _optional_path, lambda: None,
           "the mount's log file (default: ~/.local/state/flowfs/mount-<dir>.log for a "
           "daemon, stderr with --foreground)"),
    Option("log_max_size", "FLOWFS_LOG_MAX_SIZE", _log_size, lambda: DEFAULT_LOG_MAX_SIZE,
           f"rotate the log file at this size, keeping {BACKUPS} old ones "
           f"({format_size(DEFAULT_LOG_MAX_SIZE)})"),
    Option("metrics_addr", "FLOWFS_METRICS_ADDR", _addr, lambda: "",
           "serve Prometheus metrics at http://HOST:PORT/metrics (PORT alone: on "
           "127.0.0.1; default: not served)"),
)
BY_KEY = {option.key: option for option in OPTIONS}


@dataclass(frozen=True)
class Value:
    """An effective value and its source: "flag --x", "env X", "file PATH" or "default"."""

    value: Any
    source: str


def config_file() -> Path:
    return config_dir() / "config.toml"


def read_file(path: Path) -> dict[str, Any]:
    """The config file's keys (none if it does not exist); unknown keys are an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in BY_KEY:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(BY_KEY)})")
    return data


def resolve(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
            path: Path | None = None) -> dict[str, Value]:
    """Every option's effective value. ``flags`` maps keys to a value, or None if not given."""
    env = os.environ if env is None else env
    path = config_file() if path is None else path
    from_file = read_file(path)
    out: dict[str, Value] = {}
    for option in OPTIONS:
        if flags.get(option.key) is not None:
            raw, source = flags[option.key], f"flag {option.flag}"
        elif env.get(option.env, "") != "":
            raw, source = env[option.env], f"env {option.env}"
        elif option.key in from_file:
            raw, source = from_file[option.key], f"file {path}"
        else:
            default = option.default()
            out[option.key] = default if isinstance(default, Value) else Value(default,
                                                                               "default")
            continue
        try:
            out[option.key] = Value(option.parse(raw), source)
        except (ValueError, ConfigError) as exc:
            where = str(path) if source.startswith("file") else source.split(" ", 1)[1]
            raise ConfigError(f"{where}: {option.key}: {exc}") from None
    return out


def add_flags(parser: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
    """Flags for the settings in ``keys`` (default None: "not given", see :func:`resolve`)."""
    for option in OPTIONS:
        if option.key not in keys:
            continue
        help_text = f"{option.help}; env {option.env}"
        if option.boolean:
            parser.add_argument(option.flag, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(option.flag, default=None, metavar=option.key.upper(),
                                help=help_text)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (None: not given).

    ``--debug`` and ``-v``/``-vv`` are short for a ``--log-level`` of our own loggers;
    an explicit ``--log-level`` wins.
    """
    flags = {option.key: getattr(args, option.key, None) for option in OPTIONS}
    verbosity = 2 if getattr(args, "debug", False) else getattr(args, "verbose", 0) or 0
    if flags.get("log_level") is None and verbosity:
        flags["log_level"] = "debug" if verbosity >= 2 else "info"
    return flags


def from_args(args: argparse.Namespace) -> dict[str, Value]:
    """Every option's effective value, given a parsed command line (see :func:`resolve`)."""
    return resolve(given_flags(args))


def effective_files_url(values: Mapping[str, Value]) -> Value:
    """files_url as the mount will use it: given, or derived from api_url."""
    given = values["files_url"]
    if given.value:
        return given
    return Value(derive_files_url(values["api_url"].value), "derived from api_url")


def mount_config(values: Mapping[str, Value], *, foreground: bool = False) -> MountConfig:
    """The one MountConfig of a mount, from resolved settings."""
    return MountConfig(
        mountpoint=values["mountpoint"].value,
        api_url=values["api_url"].value,
        files_url=values["files_url"].value,
        cache_size=values["cache_size"].value,
        io_timeout=values["io_timeout"].value,
        dir_ttl=values["dir_ttl"].value,
        allow_other=values["allow_other"].value,
        token_file=values["token_file"].value,
        uid=values["uid"].value,
        gid=values["gid"].value,
        umask=values["umask"].value,
        log_level=values["log_level"].value,
        log_file=values["log_file"].value,
        log_max_size=values["log_max_size"].value,
        metrics_addr=values["metrics_addr"].value,
        foreground=foreground,
        disk_cache=values["disk_cache"].value,
        # None: the default place, where a network filesystem turns the cache off
        cache_dir=None if values["cache_dir"].source == "default" else values["cache_dir"].value,
        disk_cache_size=values["disk_cache_size"].value,
        disk_cache_mode=values["disk_cache_mode"].value,
    )


def as_toml(key: str, value: Any) -> str:
    """One ``key = value`` line that config.toml would accept."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = '""'
    elif key in ("cache_size", "log_max_size", "disk_cache_size"):
        text = f'"{format_size(value)}"'
    elif key == "umask":
        text = f'"{value:03o}"'
    elif isinstance(value, int):
        text = str(value)  # a uid of 100000 is not 1e+05
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{key} = {text}"


def render(values: Mapping[str, Value], path: Path) -> str:
    """``flowfs config``: the effective settings as TOML, each with its source."""
    exists = "" if path.exists() else " (not found: defaults apply)"
    lines = [f"# config file: {path}{exists}"]
    shown = {**values, "files_url": effective_files_url(values)}
    rows = [(as_toml(key, shown[key].value), shown[key].source) for key in BY_KEY]
    width = max(len(text) for text, _ in rows)
    lines += [f"{text:<{width}}  # {source}" for text, source in rows]
    return "\n".join(lines) + "\n"
