"""How backups are named on disk, and the names the service recognises as its own
(nothing else is ever deleted).

``backup_<database>_<YYYY-MM-DD_HH-MM-SS>[_N].<ext>`` for a database,
``globals_<target>_<stamp>.<ext>`` for a server's globals; while running,
``.<final name>.run<ID>.partial`` in the same directory.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ..domain.errors import BackupFailed
from ..domain.models import RunKind

BACKUP_NAME = re.compile(r"^(?:backup|globals)_[A-Za-z0-9_.-]+_"
                         r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(?:_\d+)?"
                         r"\.(?:sql|sql\.gz|sql\.zst|sql\.lz4|dump|dir|full|incr)$")
# Backups kept as a folder: pg_dump's directory format, physical backups (full, incr).
# An age-encrypted file or object: its name plus this.
ENCRYPTED_SUFFIX = ".age"
DIRECTORY_EXTENSIONS = (".dir", ".full", ".incr")
# .<final name>.run<ID>.partial, or .run<ID>-<N>.partial when that name was taken.
TEMP_NAME = re.compile(r"^\.(?:backup|globals)_.+\.run\d+(?:-\d+)?\.partial$")
_PREFIX = {RunKind.DATABASE: "backup", RunKind.GLOBALS: "globals"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(name: str) -> str:
    """A database or target name as it appears in file names."""
    return _UNSAFE.sub("_", name)[:100] or "db"


def stem(kind: RunKind, name: str, started: datetime, tz: ZoneInfo) -> str:
    """The file name without extension: the kind's prefix, the name, and when the run
    started in the scheduler's timezone."""
    return f"{_PREFIX[kind]}_{safe_name(name)}_{started.astimezone(tz):%Y-%m-%d_%H-%M-%S}"


def free_temp_path(directory: Path, name: str, run_id: int) -> Path:
    """The temporary path of a run writing ``name``: ``.<name>.run<ID>.partial``, or
    ``.run<ID>-2.partial``, ... when something already has that name (left by another
    store, or planted): it is never opened, followed or removed."""
    for n in range(1, 1000):
        temp = directory / f".{name}.run{run_id}{'' if n == 1 else f'-{n}'}.partial"
        if not os.path.lexists(temp):
            return temp
    raise BackupFailed(f"no free temporary name for {name} in {directory}; remove the "
                       f".{name}.run{run_id}*.partial files there")
