"""Who is calling: logins, token refresh, and bearer authentication of requests.

``POST /api/login`` checks a catalog password and answers an access token plus
an HttpOnly ``flow_refresh_token`` cookie; ``GET /api/token`` trades that
cookie for a new access token.  Every other endpoint identifies its caller from
``Authorization: Bearer`` (an access JWT or a user's static API key).  Nothing
here logs a password or a token.
"""

from __future__ import annotations

import hashlib

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowfs.server.bodies import read_json_object
from flowfs.server.catalog import Catalog
from flowfs.server.errors import ApiError, unauthenticated
from flowfs.server.passwords import verify_password
from flowfs.server.tokens import ACCESS, REFRESH, TokenError, TokenIssuer
from flowfs.server.views import user_view

REFRESH_COOKIE = "flow_refresh_token"


def _key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Authenticator:
    """Authenticates requests and serves ``/login`` and ``/token``."""

    def __init__(self, catalog: Catalog, tokens: TokenIssuer, refresh_ttl: float) -> None:
        self._catalog = catalog
        self._tokens = tokens
        self._refresh_ttl = refresh_ttl
        # Looked up by digest: a dict probe on a hash leaks nothing about the keys.
        self._api_keys = {_key_digest(u.api_key): u.username
                          for u in catalog.users.values() if u.api_key}

    def identify(self, request: Request) -> str | None:
        """The caller's username, None if anonymous; 401 for a bad or expired token."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("Authorization must be 'Bearer <token>'")
        username = self._api_keys.get(_key_digest(token))
        if username is None:
            try:
                username = self._tokens.verify(token, ACCESS)
            except TokenError as exc:
                raise unauthenticated(str(exc)) from None
        if username not in self._catalog.users:
            raise unauthenticated("Invalid token")
        request.state.user = username
        return username

    def require(self, request: Request) -> str:
        """The caller's username; 401 if anonymous or the token is bad."""
        username = self.identify(request)
        if username is None:
            raise unauthenticated()
        return username

    async def login(self, request: Request) -> Response:
        """``POST /api/login``: password check, access token, refresh cookie."""
        body = await read_json_object(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ApiError(400, "Invalid credentials")
        user = self._catalog.users.get(username)
        # scrypt takes tens of milliseconds: keep it off the event loop.
        valid = await run_in_threadpool(verify_password, password,
                                        user.password if user else None)
        if not valid or user is None:
            raise ApiError(400, "Invalid credentials")
        request.state.user = user.username
        response = JSONResponse({"token": self._tokens.issue(user.username, ACCESS),
                                 "user": user_view(user)})
        response.set_cookie(REFRESH_COOKIE, self._tokens.issue(user.username, REFRESH),
                            max_age=int(self._refresh_ttl), path="/", httponly=True,
                            samesite="lax")
        return response

    async def refresh(self, request: Request) -> Response:
        """``GET /api/token``: a new access token for a valid refresh cookie."""
        cookie = request.cookies.get(REFRESH_COOKIE)
        if not cookie:
            raise ApiError(400, "No refresh token supplied")
        try:
            username = self._tokens.verify(cookie, REFRESH)
        except TokenError:
            raise ApiError(400, "Refresh token not valid") from None
        user = self._catalog.users.get(username)
        if user is None:
            raise ApiError(400, "Refresh token not valid")
        request.state.user = username
        return JSONResponse({"token": self._tokens.issue(username, ACCESS),
                             "user": user_view(user)})

    async def me(self, request: Request) -> Response:
        """``GET /api/me``: the authenticated user."""
        username = self.require(request)
        return JSONResponse(user_view(self._catalog.users[username]))

