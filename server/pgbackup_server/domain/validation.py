"""Checks of names and paths that callers send, before anything runs."""

from __future__ import annotations

import unicodedata

from .errors import InvalidArgument


def refuse_control_characters(field: str, value: str) -> None:
    """Refuse a path or name holding a control character (NUL, newline, tab, escape...):
    it would make a file name nobody can type, and forge lines in logs."""
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            what = "a NUL byte" if ch == "\x00" else f"a control character (U+{ord(ch):04X})"
            raise InvalidArgument(f"{field}: contains {what} at position {i}; paths and names "
                                  "must not contain control characters")
