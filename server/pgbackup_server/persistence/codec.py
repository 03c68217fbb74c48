"""Rows <-> domain objects, by field name: a field added to a dataclass is carried
without touching this module."""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast

from ..domain.models import Compression

T = TypeVar("T")


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


@cache
def _plan(cls: Any) -> tuple[tuple[str, Any, bool], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, *_unwrap(hints[f.name])) for f in fields(cls)
                 if f.metadata.get("column", True))


def from_row(cls: type[T], row: Mapping[str, Any]) -> T:
    """A ``cls`` (a dataclass) from a row holding a column per field."""
    values: dict[str, Any] = {}
    plan: tuple[tuple[str, Any, bool], ...] = _plan(cast(Any, cls))
    for name, kind, optional in plan:
        if name not in row:
            continue
        value = row[name]
        if kind is Compression:
            value = Compression.parse(value) if value else None
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            value = None if optional and value in ("", None) else kind(value)
        elif kind is datetime:
            value = aware(value)
        elif typing.get_origin(kind) is tuple:
            value = tuple(json.loads(value or "[]"))
        values[name] = value
    return cls(**values)


def to_column(value: Any) -> Any:
    """A domain value as stored: enums by value, compression as ``zstd:1``, None as ""
    for text-like columns."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Compression):
        return str(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return value


def to_row(changes: Mapping[str, Any], optional_text: frozenset[str]) -> dict[str, Any]:
    """Column values for ``changes``; ``optional_text`` lists the columns where None is
    stored as ""."""
    return {k: ("" if v is None and k in optional_text else to_column(v))
            for k, v in changes.items()}


def aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
