"""The sessions ``flowfs login`` stores: one per server, and which one is the default.

Like rclone's remotes: logging in to a second server keeps the first. The last login
becomes the default server, which ``mount``, ``whoami`` and ``logout`` use when no
``--api-url`` (flag, ``FLOW_API_URL`` or ``api_url`` in config.toml) says otherwise;
``--api-url`` picks another stored session. Only refresh and access tokens are
stored, never a password, in ``sessions.json`` (0600, see :mod:`flowfs.private`).

Earlier versions stored one session in ``session.json``. It is read as the only (and
default) session until the next login or logout, which writes ``sessions.json`` with
it included and only then removes the old file.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowfs.config import config_dir, normalise_url
from flowfs.errors import ConfigError
from flowfs.private import read_private, write_private


@dataclass(frozen=True)
class Session:
    """One server's stored login. ``refresh_token`` is the login cookie's value."""

    api_url: str
    username: str
    token: str
    refresh_token: str

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Session(api_url={self.api_url!r}, username={self.username!r})"


@dataclass
class Store:
    """Every stored session by API URL, and the default one's URL."""

    sessions: dict[str, Session] = field(default_factory=dict)  # oldest login first
    default: str | None = None
    path: Path | None = None  # the file it was read from


def store_path() -> Path:
    return config_dir() / "sessions.json"


def legacy_path() -> Path:
    return config_dir() / "session.json"


def load() -> Store:
    """The stored sessions (none if never logged in); ConfigError if unreadable or open."""
    path = store_path()
    try:
        store = _parse_store(json.loads(read_private(path)))
        store.path = path
        return store
    except FileNotFoundError:
        pass
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _unreadable(path, exc) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return _load_legacy(legacy_path())


def _load_legacy(path: Path) -> Store:
    try:
        data = json.loads(read_private(path))
        session = _parse_session(data.get("api_url", ""), data)
    except FileNotFoundError:
        return Store()
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _unreadable(path, exc) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return Store({session.api_url: session}, session.api_url, path)


def _unreadable(path: Path, exc: Exception) -> ConfigError:
    return ConfigError(f"cannot read {path}: {type(exc).__name__}; run 'flowfs login' again")


def _parse_session(api_url: str, data: dict[str, Any]) -> Session:
    return Session(api_url=normalise_url(api_url), username=str(data.get("username", "")),
                   token=str(data.get("token") or ""),
                   refresh_token=str(data["refresh_token"]))


def _parse_store(data: dict[str, Any]) -> Store:
    sessions = {}
    for url, item in data.get("sessions", {}).items():
        session = _parse_session(url, item)
        sessions[session.api_url] = session
    default = data.get("default")
    return Store(sessions, default if default in sessions else None)


def save(store: Store) -> None:
    """Write the store (0600, atomically); then the legacy file, now included, goes."""
    data = {"default": store.default,
            "sessions": {url: {k: v for k, v in asdict(s).items() if k != "api_url"}
                         for url, s in store.sessions.items()}}
    write_private(store_path(), json.dumps(data, indent=2) + "\n")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(legacy_path())


def remember(session: Session) -> Store:
    """Store ``session`` (replacing only the same server's) and make it the default."""
    store = load()
    store.sessions.pop(session.api_url, None)  # to the end: the order is that of logins
    store.sessions[session.api_url] = session
    store.default = session.api_url
    save(store)
    return store


def forget(api_url: str) -> Store | None:
    """Forget one server's session; None if there was none. A new default is the most
    recently stored of the others."""
    store = load()
    if store.sessions.pop(api_url, None) is None:
        return None
    if store.default == api_url:
        store.default = next(reversed(store.sessions), None)
    save(store)
    return store


def find(api_url: str) -> tuple[Session, Path] | None:
    """The stored session for ``api_url``, and the file it is stored in."""
    store = load()
    session = store.sessions.get(api_url)
    return None if session is None or store.path is None else (session, store.path)


def default_url() -> str | None:
    """The server of the last login, if any session is stored."""
    return load().default
