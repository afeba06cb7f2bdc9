"""The Flow objects flowfs shows, parsed defensively from API JSON.

IDs stay strings (they may exceed 2**53); timestamps become float Unix seconds
whether the server sends numbers or ISO strings (real Flow does both).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowfs.errors import BadReply


def is_id(text: str) -> bool:
    """A data/object id as text: ASCII digits, at most 40 of them."""
    return text.isascii() and text.isdigit() and len(text) <= 40


def parse_id(value: Any) -> str:
    """An object id as a canonical digit string; never via float."""
    if isinstance(value, bool):
        raise BadReply(f"bad id {value!r}")
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, str) and is_id(value):
        return value
    raise BadReply(f"bad id {str(value)[:40]!r}")


def parse_time(value: Any) -> float:
    """Unix seconds from a number or an ISO 8601 string; 0 when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        try:
            return float(value) if 0 <= value < 1e12 else 0.0
        except OverflowError:
            return 0.0
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise BadReply("bad size")
    if isinstance(value, int) and 0 <= value < 2**63:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    raise BadReply(f"bad size {str(value)[:40]!r}")


def _ref_id(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("id") is not None:
        return parse_id(value["id"])
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value):
        return parse_id(value)
    return None


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created: float

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Project:
        return cls(parse_id(obj.get("id")), _text(obj.get("name")), parse_time(obj.get("created")))


@dataclass(frozen=True)
class Sample:
    id: str
    name: str
    created: float

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Sample:
        return cls(parse_id(obj.get("id")), _text(obj.get("name")), parse_time(obj.get("created")))


@dataclass(frozen=True)
class Execution:
    id: str
    identifier: str
    pipeline_name: str
    created: float

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Execution:
        return cls(
            parse_id(obj.get("id")),
            _text(obj.get("identifier")),
            _text(obj.get("pipeline_name")) or _text(obj.get("pipeline")),
            parse_time(obj.get("created")),
        )

    @property
    def dirname(self) -> str:
        """`<identifier>`, or `<pipeline>-<id>` when there is none."""
        if self.identifier:
            return self.identifier
        return f"{self.pipeline_name or 'execution'}-{self.id}"


@dataclass(frozen=True)
class DataFile:
    """A data file. `path` is its output path inside an execution, when it is one."""

    id: str
    filename: str
    size: int
    created: float
    md5: str | None = None
    path: str | None = None
    sample_id: str | None = None
    execution_id: str | None = None
    is_directory: bool = False
    # Whether the listing told us where it belongs (lists may omit it).
    placement_known: bool = False

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DataFile:
        md5 = obj.get("md5")
        path = obj.get("path")
        return cls(
            id=parse_id(obj.get("id")),
            filename=_text(obj.get("filename")),
            size=_size(obj.get("size", 0) if obj.get("size") is not None else 0),
            created=parse_time(obj.get("created")),
            md5=md5 if isinstance(md5, str) and md5 else None,
            path=path if isinstance(path, str) and path else None,
            sample_id=_ref_id(obj.get("sample")),
            execution_id=_ref_id(obj.get("execution")),
            is_directory=obj.get("is_directory") is True,
            placement_known="sample" in obj and "execution" in obj,
        )
