"""Field helpers for the settings models: typed values parsed from YAML, each with
the phrase that says what it expects (``an integer >= 1``), used in errors.

A parser takes the raw YAML value and returns the typed one, or raises
``ValueError``; :mod:`.errors` turns that into ``key.path: expected <phrase>,
got <value>``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from ..domain.models import Compression

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def setting(default: Any = ..., *, alias: str | None = None, expected: str = "",
            **constraints: Any) -> Any:
    """``Field`` with the camelCase key and the phrase used in error messages."""
    return Field(default, alias=alias, json_schema_extra={"expected": expected},
                 **constraints)


def problem(message: str) -> PydanticCustomError:
    """An error whose message is complete (printed after the key's path)."""
    return PydanticCustomError("config", "{message}", {"message": message})


def parse_duration(value: Any) -> float:
    """``90`` (seconds), ``"30s"``, ``"15m"``, ``"6h"``, ``"2d"`` -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError("not a duration")
    if not 0 < seconds <= 366 * 86400:
        raise ValueError("out of range")
    return seconds


def text(value: Any) -> str:
    """A non-empty string without control characters."""
    if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
        raise ValueError("not a text")
    return value


def _address(value: Any) -> str:
    host, sep, port = text(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not HOST:PORT")
    return str(value)


def _compression(value: Any) -> Compression:
    if isinstance(value, Compression):
        return value
    if not isinstance(value, str):
        raise ValueError("not a compression")
    return Compression.parse(value)


def _jobs(value: Any) -> int | str:
    """``auto`` or an integer from 1 to 64."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError("not a job count")
    return value


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's directory."""
    path = Path(os.path.expanduser(str(value)))
    base = (info.context or {}).get("base")
    return path if path.is_absolute() or base is None else Path(base) / path


Duration = Annotated[float, BeforeValidator(parse_duration)]
Text = Annotated[str, BeforeValidator(text)]
Address = Annotated[str, BeforeValidator(_address)]
CompressionSetting = Annotated[Compression, BeforeValidator(_compression)]
Jobs = Annotated[int | Literal["auto"], BeforeValidator(_jobs)]
ConfigPath = Annotated[Path, BeforeValidator(lambda v: Path(text(v))),
                       AfterValidator(resolve_path)]


def show(value: Any) -> str:
    """A value as it appears in an error message: strings quoted, long ones cut; text
    with control characters as repr, so a message stays on one line."""
    shown = (repr(value) if not isinstance(value, str) or _CONTROL.search(value)
             else f'"{value}"')
    return shown if len(shown) <= 80 else shown[:77] + "..."


class Section(BaseModel):
    """Base of every section: unknown keys refused, immutable, camelCase keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True,
                              validate_by_alias=True, arbitrary_types_allowed=True)
