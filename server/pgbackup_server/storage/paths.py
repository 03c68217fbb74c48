"""Destination-relative names: checked once, so no name escapes its destination."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..domain.errors import InvalidArgument

if TYPE_CHECKING:
    from ..domain.ports import Destination

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


def as_recorded(dest: Destination, relative: str) -> str:
    """Where a stored copy is, as a run records it: a path for a local destination
    (``file://``), else the object's URL (never mistaken for a file on this host)."""
    url = dest.location_of(relative)
    return unquote(urlsplit(url).path) if dest.is_local else url


def recorded_place(dest: Destination, relative: str) -> tuple[str, str]:
    """(file_path, backup_dir) of a run whose backup is this copy: as
    :func:`as_recorded`, and the folder (or URL prefix) holding it."""
    shown = as_recorded(dest, relative)
    return shown, os.path.dirname(shown) if dest.is_local else shown.rsplit("/", 1)[0]


def is_own_file(dest: Destination, relative: str, file_path: str) -> bool:
    """The copy is the run's own file or folder (``file_path``): a local destination
    that is where the backup was written."""
    return bool(file_path) and dest.is_local and os.path.normpath(
        as_recorded(dest, relative)) == os.path.normpath(file_path)
