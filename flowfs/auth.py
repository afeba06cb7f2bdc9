"""Where credentials come from, how they are stored, and the shared refresh.

Sources, first found wins: ``FLOW_API_TOKEN``, ``FLOW_TOKEN_FILE``, the session
``flowfs login`` stored for this server (:mod:`flowfs.sessions`), ``FLOW_USERNAME`` +
``FLOW_PASSWORD``. Secret files are read under :mod:`flowfs.private`'s rule.
This module holds no HTTP: the exchanges (login, refresh) are callables the
api layer passes in, so there is one place that talks to the network.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from flowfs import sessions
from flowfs.errors import AuthExpired, ConfigError
from flowfs.private import read_private

log = logging.getLogger(__name__)

SECRET_ENV = ("FLOW_API_TOKEN", "FLOW_PASSWORD")


@dataclass(frozen=True)
class Credentials:
    """One credentials source. ``refresh_token`` is the login cookie's value."""

    kind: str  # "token" | "session" | "password"
    source: str  # human description, e.g. "FLOW_API_TOKEN" (never the secret)
    token: str | None = None
    refresh_token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Credentials(kind={self.kind!r}, source={self.source!r})"

    def secrets(self) -> tuple[str, ...]:
        """The secret values held, for the log's redactor to blank wherever they appear."""
        return tuple(s for s in (self.token, self.refresh_token, self.password) if s)


def discover(api_url: str, env: dict[str, str] | None = None) -> Credentials | None:
    """The first credentials source found, in docs/design.md's order; None = anonymous."""
    env = dict(os.environ) if env is None else env
    if env.get("FLOW_API_TOKEN"):
        return Credentials("token", "FLOW_API_TOKEN", token=env["FLOW_API_TOKEN"].strip())
    if env.get("FLOW_TOKEN_FILE"):
        path = Path(env["FLOW_TOKEN_FILE"]).expanduser()
        try:
            token = read_private(path).strip()
        except ConfigError as exc:
            raise ConfigError(f"FLOW_TOKEN_FILE: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"FLOW_TOKEN_FILE {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"FLOW_TOKEN_FILE {path} is empty")
        return Credentials("token", f"FLOW_TOKEN_FILE ({path})", token=token)
    stored = sessions.find(api_url)
    if stored is not None:
        session, where = stored
        return Credentials("session", str(where), token=session.token or None,
                           refresh_token=session.refresh_token, username=session.username)
    if env.get("FLOW_USERNAME") and env.get("FLOW_PASSWORD"):
        return Credentials(
            "password", "FLOW_USERNAME/FLOW_PASSWORD",
            username=env["FLOW_USERNAME"], password=env["FLOW_PASSWORD"],
        )
    return None


def scrub_environment() -> None:
    """Drop secrets from our environment once read.

    ``os.environ.pop`` alone is not enough: /proc/<pid>/environ shows the
    environment block the process started with, so the strings there are
    overwritten in place too.
    """
    _wipe_initial_environment(SECRET_ENV)
    for name in SECRET_ENV:
        os.environ.pop(name, None)


def _wipe_initial_environment(names: tuple[str, ...]) -> None:
    try:
        libc = ctypes.CDLL(None)
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    except (OSError, ValueError):  # not glibc-like: nothing more we can do
        return
    prefixes = tuple(f"{name}=".encode() for name in names)
    i = 0
    while environ[i]:
        address = environ[i]
        entry = ctypes.string_at(address)
        if entry.startswith(prefixes):
            ctypes.memset(address, 0, len(entry))
        i += 1


Login = Callable[[str, str], Awaitable[tuple[str, str]]]  # (user, password) -> (token, refresh)
Refresh = Callable[[str], Awaitable[str]]  # refresh token -> access token


class TokenState:
    """The current access token, refreshed once for all requests that saw it fail.

    ``refresh(stale)`` is single-flight: callers that saw the same stale token
    wait for one exchange; a caller whose token was already replaced gets the
    new one at once.
    """

    def __init__(self, creds: Credentials | None, login: Login, refresh: Refresh) -> None:
        self._creds = creds
        self._login = login
        self._refresh = refresh
        self._token = creds.token if creds else None
        self._refresh_token = creds.refresh_token if creds else None
        self._lock = trio.Lock()
        self._warned = False

    def refreshable(self, status: int, body: bytes) -> bool:
        """Whether a reply with ``status`` and ``body`` is worth one refresh and retry.

        A 401 always is (for a static token the attempt says "log in again"); an
        empty 403/404, which real Flow sends for an expired token too, only when a
        new token can actually be had. Anything else is an answer.
        """
        if self._creds is None:
            return False
        if status == 401:
            return True
        return status in (403, 404) and not body.strip() and self._creds.kind != "token"

    async def current(self) -> str | None:
        if self._token is None and self._creds is not None:
            await self.refresh(None)
        return self._token

    async def refresh(self, stale: str | None) -> str:
        """A fresh token after ``stale`` was refused; AuthExpired when none can be had."""
        async with self._lock:
            if self._token is not None and self._token != stale:
                return self._token
            self._token = await self._obtain()
            return self._token

    async def _obtain(self) -> str:
        creds = self._creds
        if creds is None:
            raise AuthExpired("this needs credentials: run 'flowfs login'")
        if self._refresh_token:
            try:
                return await self._refresh(self._refresh_token)
            except AuthExpired:
                if creds.kind != "password":
                    if not self._warned:
                        self._warned = True
                        log.warning("the stored session has expired: run 'flowfs login' again")
                    raise
        if creds.kind == "password" and creds.username and creds.password:
            token, self._refresh_token = await self._login(creds.username, creds.password)
            return token
        if not self._warned:  # one clear line, not one per request
            self._warned = True
            log.warning("the token from %s was refused: log in again", creds.source)
        raise AuthExpired(f"the token from {creds.source} was refused: log in again")
