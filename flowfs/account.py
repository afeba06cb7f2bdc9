"""`flowfs login`, `logout` and `whoami`: the user's credentials from the shell.

The secrets themselves never reach stdout, stderr or a log: only where they
came from (``FLOW_API_TOKEN``, the session file...).
"""

from __future__ import annotations

import getpass
import sys
from typing import Any

import trio

from flowfs import sessions
from flowfs.api import FlowAPI, new_client
from flowfs.auth import Credentials, discover
from flowfs.errors import AuthExpired, ConfigError, FlowError, Forbidden, NotFound, Transient


def read_password(from_stdin: bool) -> str:
    """The password: one line of stdin when asked (or when stdin is no terminal), else a prompt."""
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise ConfigError("no password on stdin (pipe it in: ... | flowfs login "
                              "--username NAME --password-stdin)")
        return line.rstrip("\r\n")
    return getpass.getpass("Flow password: ")


def read_username(given: str | None) -> str:
    if given:
        return given
    if sys.stdin.isatty():
        return input("Flow username: ").strip()
    line = sys.stdin.readline().strip()
    if not line:
        raise ConfigError("no username: give --username NAME")
    return line


def login(api_url: str, username: str, password: str) -> sessions.Store:
    """Log in and store the refreshable session (never the password); it becomes the
    default. Sessions of other servers are kept."""

    async def exchange() -> tuple[str, str]:
        async with new_client() as client:
            return await FlowAPI(api_url, api_url, None, client).login(username, password)

    try:
        token, refresh = trio.run(exchange)
    except AuthExpired as exc:
        raise FlowError(f"{exc} (check the username and password, then run "
                        "'flowfs login' again)") from None
    except Transient as exc:
        raise FlowError(f"cannot reach Flow at {api_url}: {exc} (check --api-url or "
                        "'flowfs config', and any proxy settings)") from None
    if not refresh:
        raise FlowError("the server gave no refresh cookie; use FLOW_API_TOKEN instead")
    return sessions.remember(sessions.Session(api_url, username, token, refresh))


def logged_in(store: sessions.Store, api_url: str) -> str:
    """What ``flowfs login`` says: where the session is, which server is the default,
    and how to use another."""
    lines = [f"session saved in {sessions.store_path()} (mode 0600)"]
    others = [url for url in store.sessions if url != api_url]
    if others:
        lines.append(f"{api_url} is now the default server; sessions are also kept for: "
                     f"{', '.join(others)} (use one with --api-url URL)")
    return "\n".join(lines)


def logout(api_url: str) -> str:
    """Forget the session of ``api_url``; what happened, in one line."""
    store = sessions.forget(api_url)
    if store is None:
        return f"not logged in to {api_url}"
    if store.default is None:
        return f"logged out of {api_url}"
    return f"logged out of {api_url}; the default server is now {store.default}"


def whoami(api_url: str) -> tuple[dict[str, Any], Credentials]:
    """``GET /me`` with the credentials a mount would use: (the user, their source)."""
    creds = discover(api_url)
    if creds is None:
        raise FlowError(f"not logged in to {api_url}: run 'flowfs login', or set "
                        "FLOW_API_TOKEN or FLOW_TOKEN_FILE")

    async def me() -> dict[str, Any]:
        async with new_client() as client:
            return await FlowAPI(api_url, api_url, creds, client).get_json("/me")

    try:
        return trio.run(me), creds
    except (AuthExpired, Forbidden):
        raise FlowError(f"{api_url} refused the credentials from {creds.source}: "
                        "run 'flowfs login' again") from None
    except NotFound:
        raise FlowError(f"{api_url}/me does not exist: is {api_url} the Flow API URL? "
                        "(it usually ends in /api; see 'flowfs config')") from None
    except Transient as exc:
        raise FlowError(f"cannot reach Flow at {api_url}: {exc} (check the URL with "
                        "'flowfs config', and any proxy settings)") from None


def describe(user: dict[str, Any], creds: Credentials, api_url: str) -> str:
    """One line for ``flowfs whoami``."""
    name = user.get("username") or user.get("id") or "?"
    full = user.get("name")
    who = f"{name} ({full})" if full and full != name else str(name)
    lines = [f"{who} at {api_url}", f"credentials: {creds.source}"]
    store = sessions.load()
    if len(store.sessions) > 1 or (store.sessions and api_url not in store.sessions):
        marked = [url + (" (default)" if url == store.default else "")
                  for url in store.sessions]
        lines.append(f"stored sessions: {', '.join(marked)}")
    return "\n".join(lines)
