"""pydantic's validation errors in the form operators read: the key's path as it is
written in config.yaml, and what was expected.

``backup.retentionDays: expected an integer >= 1, got "thirty"``
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .fields import show


def key_path(loc: Sequence[str | int]) -> str:
    """``("databases", 0, "url")`` -> ``databases[0].url``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def messages(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per problem, in the order pydantic found them."""
    out = []
    for e in error.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not _is_union_tag(p))
        while loc and isinstance(loc[-1], int):
            loc = loc[:-1]  # an item of a list: the key names the list
        path = key_path(loc)
        kind = e["type"]
        if kind == "config":  # our own complete message
            message = str((e.get("ctx") or {}).get("message", e["msg"]))
            out.append(f"{path}: {message}" if path else message)
            continue
        if kind == "extra_forbidden":
            known = sorted(_known_keys(root, loc[:-1]))
            out.append(f"{path}: unknown key (known keys: {', '.join(known)})")
            continue
        if kind == "missing":
            out.append(f"{path}: required")
            continue
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            out.append(f"{path}: expected a mapping, got {show(e['input'])}")
            continue
        expected = _expected(root, loc) or _generic(kind)
        out.append(f"{path}: expected {expected}, got {show(e['input'])}")
    return out


def _is_union_tag(part: str | int) -> bool:
    # pydantic adds the union member's type name to the location ("list[...]").
    return isinstance(part, str) and ("[" in part or part in ("function-after",
                                                               "function-before"))


def _generic(kind: str) -> str:
    return {"int_type": "an integer", "bool_type": "true or false",
            "string_type": "a text", "list_type": "a list", "float_type": "a number",
            "literal_error": "one of the allowed values"}.get(kind, "a valid value")


def _field_map(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _known_keys(root: type[BaseModel], loc: Sequence[str | int]) -> set[str]:
    model = _model_at(root, loc)
    return set(_field_map(model)) if model is not None else set()


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    annotation: Any = root
    for part in loc:
        model = _first_model(annotation)
        if isinstance(part, int):
            annotation = _item_type(annotation)
            continue
        if model is None or part not in _field_map(model):
            return None
        annotation = _field_map(model)[part].annotation
    return _first_model(annotation)


def _expected(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    if not loc or isinstance(loc[-1], int):
        parent = _model_at(root, loc[:-2]) if len(loc) >= 2 else None
        name = loc[-2] if len(loc) >= 2 else None
    else:
        parent, name = _model_at(root, loc[:-1]), loc[-1]
    if parent is None or not isinstance(name, str):
        return ""
    info = _field_map(parent).get(name)
    extra = info.json_schema_extra if info is not None else None
    return str(extra.get("expected", "")) if isinstance(extra, dict) else ""


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _item_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) in (list, tuple):
                return _item_type(arg)
        return annotation
    args = typing.get_args(annotation)
    return args[0] if args else annotation
