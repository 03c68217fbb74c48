"""Conversion between the SDK models and the backup.v1 messages.

One generic ``from_proto`` and ``to_dict`` for every model, driven by the
message's descriptor and the model's field annotations (the models themselves
are generated: pgbackup_client.models), so a field added to the proto
needs no code here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["Model"]

_TIMESTAMP = "google.protobuf.Timestamp"
_INT64 = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}

M = TypeVar("M", bound="Model")


class Model:
    """Base of the SDK models: frozen, slotted dataclasses, one per message."""

    __slots__ = ()
    # The message class this model views.
    _proto: ClassVar[type[Message]]
    # Set by @dataclass on each model; declared so type checkers see a dataclass.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def from_proto(cls, msg: Message) -> Self:
        """Build from the matching ``backup.v1`` message.

        Unset timestamps and messages are None (not the epoch, not an empty
        message); enums are their value's name, or the number as a string when
        this client does not know it (a newer server may send one).
        """
        return _from_message(cls, msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: the message as ``json_format`` renders it, with the
        field names of the proto, 64-bit integers as numbers, enums as names,
        timestamps as ISO-8601 strings (``Z`` for UTC) and unset timestamps and
        messages as None."""
        raw = json_format.MessageToDict(
            _to_message(self),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        return _fix(self, raw)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    desc: FieldDescriptor
    kind: str  # "scalar", "enum", "timestamp" or "message"
    # The model of a message field; None for the others.
    model: type[Model] | None
    # Declared ``X | None``: an unset field (with presence) reads as None.
    optional: bool


# Per model class, computed on first use (a race only computes one twice).
_PLANS: dict[type[Model], tuple[_Field, ...]] = {}


def _plan(cls: type[Model]) -> tuple[_Field, ...]:
    """How to convert each field of ``cls``: its descriptor and its annotation."""
    cached = _PLANS.get(cls)
    if cached is not None:
        return cached
    descriptor = cls._proto.DESCRIPTOR
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        desc = descriptor.fields_by_name[f.name]
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        model = None
        if desc.message_type is not None and desc.message_type.full_name == _TIMESTAMP:
            kind = "timestamp"
        elif desc.message_type is not None:
            kind = "message"
            inner = args[0] if args else hint  # Model | None, tuple[Model, ...], Model
            if not (isinstance(inner, type) and issubclass(inner, Model)):
                raise TypeError(f"{cls.__name__}.{f.name}: {hint} is not a model type")
            model = inner
        elif desc.enum_type is not None:
            kind = "enum"
        else:
            kind = "scalar"
        plan.append(_Field(f.name, desc, kind, model, optional))
    _PLANS[cls] = tuple(plan)
    return _PLANS[cls]


def _from_message(cls: type[M], msg: Message) -> M:
    expected = cls._proto.DESCRIPTOR.full_name
    if getattr(getattr(msg, "DESCRIPTOR", None), "full_name", None) != expected:
        raise TypeError(f"{cls.__name__}.from_proto needs a {expected}, not {type(msg).__name__}")
    values: dict[str, Any] = {}
    for f in _plan(cls):
        raw = getattr(msg, f.name)
        if f.desc.is_repeated:
            values[f.name] = tuple(_read(f, item) for item in raw)
        elif f.optional and not msg.HasField(f.name):
            # proto3 message fields carry presence: an unset Timestamp means
            # "no value", not the Unix epoch.
            values[f.name] = None
        else:
            values[f.name] = _read(f, raw)
    return cls(**values)


def _read(f: _Field, raw: Any) -> Any:
    if f.kind == "timestamp":
        return raw.ToDatetime(tzinfo=UTC)
    if f.kind == "message":
        assert f.model is not None
        return f.model.from_proto(raw)
    if f.kind == "enum":
        # proto3 enums are open: keep a value this client does not know.
        known = f.desc.enum_type.values_by_number.get(raw)
        return known.name if known is not None else str(raw)
    return raw


def _to_message(model: Model) -> Message:
    msg = model._proto()
    for f in _plan(type(model)):
        value = getattr(model, f.name)
        if f.desc.is_repeated:
            target = getattr(msg, f.name)
            for item in value:
                if f.kind == "message":
                    target.add().CopyFrom(_to_message(item))
                elif f.kind == "timestamp":
                    target.add().FromDatetime(item)
                else:
                    target.append(_wire(f, item))
        elif value is None:
            continue
        elif f.kind == "message":
            getattr(msg, f.name).CopyFrom(_to_message(value))
        elif f.kind == "timestamp":
            getattr(msg, f.name).FromDatetime(value)
        else:
            setattr(msg, f.name, _wire(f, value))
    return msg


def _wire(f: _Field, value: Any) -> Any:
    if f.kind != "enum":
        return value
    known = f.desc.enum_type.values_by_name.get(value)
    if known is not None:
        return known.number
    try:
        return int(value)  # an unknown value, kept as its number
    except ValueError:
        return 0  # not representable; _fix prints the model's own value


def _fix(model: Model, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (MessageToDict of ``model``) in the model's field order, with
    int64 values as numbers (json_format quotes them), enums and timestamps as
    the model holds them, and unset messages as None (json_format omits them)."""
    out: dict[str, Any] = {}
    for f in _plan(type(model)):
        value = getattr(model, f.name)
        js = raw.get(f.name)
        if f.kind == "message":
            if f.desc.is_repeated:
                out[f.name] = [_fix(v, j) for v, j in zip(value, js or [], strict=True)]
            else:
                out[f.name] = None if value is None else _fix(value, js or {})
        elif f.kind == "timestamp":
            out[f.name] = [_iso(v) for v in value] if f.desc.is_repeated else _iso(value)
        elif f.kind == "enum":
            out[f.name] = list(value) if f.desc.is_repeated else value
        elif f.desc.cpp_type in _INT64 and js is not None:
            out[f.name] = [int(j) for j in js] if f.desc.is_repeated else int(js)
        else:
            out[f.name] = js
    return out


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # Same spelling as the proto3 JSON mapping used by the REST gateway.
    return value.isoformat().replace("+00:00", "Z")
