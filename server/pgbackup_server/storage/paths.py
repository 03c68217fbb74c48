"""Destination-relative names: checked once, so no name escapes its destination."""

from __future__ import annotations

import re

from ..domain.errors import InvalidArgument

# Unfinished local uploads: hidden, and never listed or counted as a backup.
TEMP_PREFIX = ".backupd-upload-"
TEMP_SUFFIX = ".partial"
MANIFEST_SUFFIX = ".manifest.json"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def check_relative(relative: str) -> str:
    """``db/backup_….sql.zst``: slash-separated, no empty, ``.`` or ``..`` segment."""
    parts = relative.split("/")
    if (not relative or _CONTROL.search(relative)
            or any(p in ("", ".", "..") for p in parts) or parts[-1].startswith(TEMP_PREFIX)):
        raise InvalidArgument(f"invalid stored name {relative!r}: use slash-separated names "
                              "without empty, . or .. parts")
    return relative
