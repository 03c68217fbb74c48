"""Domain objects -> proto messages, field by field by name.

A message field is filled from the attribute of the same name (a property
counts: ``Run.file_deleted``, ``Run.duration_seconds``), so a field added to both
the dataclass and the message needs nothing here. Timestamps come from aware
datetimes, enums by name, strings from ``str()`` (``"plain"``, ``"zstd:1"``),
nested messages and repeated fields recursively; ``None`` leaves a field unset.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
_TIMESTAMP = "google.protobuf.Timestamp"


def to_message(obj: Any, message_type: type[M], **overrides: Any) -> M:
    """A ``message_type`` filled from ``obj``'s attributes (``overrides`` win)."""
    message = message_type()
    fill(message, obj, overrides)
    return message


def fill(message: Message, obj: Any, overrides: Mapping[str, Any] | None = None) -> None:
    for field in message.DESCRIPTOR.fields:
        if overrides and field.name in overrides:
            value = overrides[field.name]
        elif hasattr(obj, field.name):
            value = getattr(obj, field.name)
        else:
            continue
        if value is not None:
            _set(message, field, value)


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if field.is_repeated:
        items: Iterable[Any] = value
        if field.message_type is not None:
            for item in items:
                fill(target.add(), item)
        else:
            target.extend(_scalar(field, item) for item in items)
    elif field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            if not isinstance(value, datetime):
                raise TypeError(f"{field.name}: expected a datetime, got {value!r}")
            target.FromDatetime(value)
        else:
            fill(target, value)
            target.SetInParent()  # present even when every field has its default
    else:
        setattr(message, field.name, _scalar(field, value))


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None:
        name = value.value if isinstance(value, enum.Enum) else str(value)
        return field.enum_type.values_by_name[name].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return value.value if isinstance(value, enum.Enum) else str(value)
    return value
