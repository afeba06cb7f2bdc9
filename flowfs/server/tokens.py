"""Signed JWTs (HS256) for access and refresh, with a secret kept in the state dir.

The secret is created once per state dir (mode 0600) so that a restarted
server still accepts the tokens it issued before.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path

import jwt

ACCESS = "access"
REFRESH = "refresh"
_ALGORITHM = "HS256"
_SECRET_NAME = "jwt-secret"
_VERIFIED_MAX = 4096


class TokenError(Exception):
    """A token that is malformed, forged, of the wrong kind or expired."""


def load_or_create_secret(state_dir: Path) -> bytes:
    """The signing secret of ``state_dir``, created (mode 0600) on first use."""
    path = state_dir / _SECRET_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="ascii").strip()
        if len(text) < 64:
            raise OSError(f"{path} does not hold a valid secret") from None
        return bytes.fromhex(text)
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")
    return secret


class TokenIssuer:
    """Issues and verifies access and refresh tokens."""

    def __init__(self, secret: bytes, access_ttl: float, refresh_ttl: float) -> None:
        self._secret = secret
        self._ttl = {ACCESS: access_ttl, REFRESH: refresh_ttl}
        # Checking a signature costs far more than serving a small Range request, and
        # a client sends the same token many times: remember (token, kind) -> (user,
        # exp) for tokens that verified.  The key is the whole token, signature
        # included, so only a byte-identical token can hit.
        self._verified: dict[tuple[str, str], tuple[str, float]] = {}

    def issue(self, username: str, kind: str) -> str:
        """A token of ``kind`` (ACCESS or REFRESH) for ``username``."""
        now = time.time()
        # exp is whole seconds: round up so a token never lives less than its TTL.
        claims = {"sub": username, "typ": kind, "iat": int(now),
                  "exp": math.ceil(now + self._ttl[kind])}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str, kind: str) -> str:
        """The username a valid token of ``kind`` was issued to; TokenError otherwise."""
        known = self._verified.get((token, kind))
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            raise TokenError("Token expired")
        username, expires = self._decode(token, kind)
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[(token, kind)] = (username, expires)
        return username

    def _decode(self, token: str, kind: str) -> tuple[str, float]:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM],
                                options={"require": ["exp", "sub", "typ"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("Token expired") from None
        except jwt.InvalidTokenError:
            raise TokenError("Invalid token") from None
        if claims.get("typ") != kind or not isinstance(claims.get("sub"), str):
            raise TokenError("Invalid token")
        if not isinstance(claims["exp"], int | float):
            raise TokenError("Invalid token")
        return str(claims["sub"]), float(claims["exp"])
