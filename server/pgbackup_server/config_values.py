"""Reading config values: the key walker that collects problems, and the value parsers.

A parser takes the raw YAML value and returns the typed one, or raises
``ValueError``/``TypeError``; :class:`Reader` turns that into a message naming
the key's path and what was expected.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .config_model import COMPRESSIONS, Compression, DatabaseConfig
from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

T = TypeVar("T")


class Reader:
    """Walks the raw mapping, collecting one message per bad key."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def section(self, raw: Any, path: str, known: set[str]) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.errors.append(f"{path}: expected a mapping, got {show(raw)}")
            return {}
        for key in raw:
            if key not in known:
                hint = ", ".join(sorted(known))
                self.errors.append(f"{path}.{key}: unknown key (known keys: {hint})".lstrip("."))
        return raw

    def get(self, raw: Mapping[str, Any], path: str, key: str, default: T,
            parse: Callable[[Any], T], expected: str) -> T:
        if key not in raw or raw[key] is None:
            return default
        try:
            return parse(raw[key])
        except (TypeError, ValueError):
            self.errors.append(f"{path}.{key}: expected {expected}, got {show(raw[key])}")
            return default


def show(value: Any) -> str:
    # repr for text with control characters: a message must stay on one line.
    text = repr(value) if not isinstance(value, str) or _has_control(value) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError


def int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value

    return parse


def _has_control(text: str) -> bool:
    return not text.isprintable() and any(
        unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def as_text(value: Any) -> str:
    """A non-blank single-line string: no NUL, newline or other control character
    (paths and names with them cannot be typed, and would forge log lines)."""
    if not isinstance(value, str) or not value.strip() or _has_control(value):
        raise ValueError
    return value


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError
        return str(value)

    return parse


def as_address(value: Any) -> str:
    host, sep, port = as_text(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError
    return value


def as_path_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError
    return [as_text(x) for x in value]


def resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def parse_duration(value: Any) -> float:
    """``90`` (seconds), ``"30s"``, ``"15m"``, ``"6h"``, ``"2d"`` -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError
    if not 0 < seconds <= 366 * 86400:
        raise ValueError
    return seconds


def parse_compression(value: Any) -> Compression:
    """``"zstd"``, ``"zstd:3"``, ``"gzip:6"``, ``"none"``."""
    if not isinstance(value, str):
        raise ValueError
    method, _, level_text = value.strip().partition(":")
    if method not in COMPRESSIONS:
        raise ValueError
    low, high = COMPRESSIONS[method]
    if method == "none":
        if level_text:
            raise ValueError
        return Compression("none", 0)
    default = {"gzip": 6, "lz4": 1, "zstd": 1}[method]
    level = int(level_text) if level_text else default
    if not low <= level <= high:
        raise ValueError
    return Compression(method, level)


def parse_database_url(url: str, field: str = "database.url") -> DatabaseConfig:
    """Validate a libpq URI or key=value string; keep a redacted copy for logs."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception:  # psycopg's reason may quote the password: not repeated here
        raise ConfigError(f"{field}: not a valid libpq connection string; write "
                          "postgresql://user:password@host:5432/dbname and percent-encode "
                          "special characters in the password (@ as %40, : as %3A, "
                          "space as %20)") from None
    if "@" in str(params.get("host") or ""):
        raise ConfigError(f"{field}: the host contains '@'; percent-encode '@' in the "
                          "password as %40")
    for port in str(params.get("port") or "5432").split(","):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f'{field}: port "{port}" is not a port number (1-65535)')
    dbname = str(params.get("dbname") or params.get("user") or "")
    if not dbname:
        raise ConfigError(f"{field}: no database name; write "
                          "postgresql://user@host:5432/dbname")
    shown = {k: v for k, v in params.items() if k != "password"}
    if "password" in params:
        shown["password"] = "***"
    return DatabaseConfig(url=url, dbname=dbname, redacted_url=make_conninfo("", **shown))
