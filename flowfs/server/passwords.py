"""Salted password hashes: the catalog's plain passwords never outlive loading."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

# scrypt parameters: about 16 MiB and a few tens of milliseconds per hash, which
# makes a stolen state cheap to keep but guessing expensive, and keeps a login
# fast enough for tests that log in often.
_N = 2**14
_R = 8
_P = 1
_DKLEN = 32
_SALT_BYTES = 16


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """An scrypt digest and its salt."""

    salt: bytes
    digest: bytes

    def __repr__(self) -> str:
        return "PasswordHash(<hidden>)"


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=64 * 2**20
    )


def hash_password(password: str) -> PasswordHash:
    """Hash ``password`` with a fresh random salt."""
    salt = os.urandom(_SALT_BYTES)
    return PasswordHash(salt=salt, digest=_scrypt(password, salt))


def verify_password(password: str, stored: PasswordHash | None) -> bool:
    """True if ``password`` matches ``stored``, in time independent of where they differ.

    ``stored`` may be None (unknown user): a hash is still computed so that an
    unknown name and a wrong password take the same time.
    """
    salt = stored.salt if stored is not None else b"\0" * _SALT_BYTES
    candidate = _scrypt(password, salt)
    expected = stored.digest if stored is not None else b"\1" * _DKLEN
    return hmac.compare_digest(candidate, expected) and stored is not None
