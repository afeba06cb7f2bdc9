"""Typed access to the fields of one raw catalog record, with one-line errors.

Every accessor checks a field's type and raises :class:`CatalogError` naming the
record and the field, so the loader reads like a list of fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

_ID_RE = re.compile(r"^[0-9]{1,40}$")


class CatalogError(Exception):
    """A catalog that cannot be served; ``str()`` is one line naming the problem."""


class Record:
    """One raw catalog object with typed accessors that raise CatalogError on bad input."""

    def __init__(self, raw: Any, label: str, allowed: Iterable[str]) -> None:
        if not isinstance(raw, dict):
            raise CatalogError(f"{label}: must be a JSON object")
        self.raw: dict[str, Any] = raw
        self.label = label
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise CatalogError(f"{label}: unknown field {unknown[0]!r}")

    def fail(self, message: str) -> CatalogError:
        return CatalogError(f"{self.label}: {message}")

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if required:
                raise self.fail(f"missing field {key!r}")
            return None
        return self.raw[key]

    def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(f"field {key!r} must be a string")
        return value

    def name(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.text(key, default, required)
        if value is not None and (not value.strip() or "\0" in value):
            raise self.fail(f"field {key!r} must be a non-empty string")
        return value

    def ident(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, str) and _ID_RE.match(value):
            return value
        raise self.fail(f"field {key!r} must be an id (a string of digits)")

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(f"field {key!r} must be true or false")
        return value

    def count(self, key: str) -> int | None:
        value = self._get(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"field {key!r} must be a non-negative integer")
        return value

    def time(self, key: str, default: int | None) -> int | None:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return int(value)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
            else:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                return int(parsed.timestamp())
        raise self.fail(f"field {key!r} must be Unix seconds or an ISO 8601 time")

    def usernames(self, key: str, users: Mapping[str, Any]) -> frozenset[str]:
        value = self._get(key, False)
        if value is None:
            return frozenset()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"field {key!r} must be a list of usernames")
        for username in value:
            if username not in users:
                raise self.fail(f"{key} names unknown user {username!r}")
        return frozenset(value)

    def owner(self, users: Mapping[str, Any], default: str | None) -> str:
        username = self.text("owner", default, required=default is None)
        assert username is not None
        if username not in users:
            raise self.fail(f"unknown owner {username!r}")
        return username

    def ref(self, key: str, table: Mapping[str, Any]) -> str | None:
        ident = self.ident(key)
        if ident is not None and ident not in table:
            raise self.fail(f"unknown {key} {ident!r}")
        return ident
