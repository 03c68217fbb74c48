"""Point-in-time recovery settings for a rebuilt data directory.

PostgreSQL replays archived WAL when it finds ``recovery.signal``, fetching each
file with ``restore_command`` and stopping at ``recovery_target_time`` (or
``_lsn``); ``recovery_target_action = 'promote'`` then opens it for writes. The
settings go to ``postgresql.auto.conf``, which pg_verifybackup ignores and which
later ALTER SYSTEM calls keep.
"""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path


def _quoted(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def restore_command(address: str, target: str, program: str | None = None) -> str:
    """``backupctl wal-fetch`` for this service and target, as restore_command (``%f``
    the file PostgreSQL wants, ``%p`` where to put it). ``program``: the configured
    ``wal.fetchCommand`` (default: this Python running the CLI). No token: give the
    restored server's environment BACKUPCTL_TOKEN when the service requires one."""
    prefix = program or " ".join(shlex.quote(a) for a in
                                 (sys.executable, "-m", "pgbackup_client.cli"))
    argv = ["wal-fetch", "--address", address, "--target", target]
    return prefix + " " + " ".join(shlex.quote(a) for a in argv) + " %f %p"


def write_recovery(datadir: Path, *, command: str, target_time: datetime | None = None,
                   target_lsn: str = "") -> None:
    """Recovery settings and ``recovery.signal``: replay to the target, then promote."""
    lines = ["", "# Written by backupd for point-in-time recovery",
             f"restore_command = {_quoted(command)}"]
    if target_time is not None:
        lines.append(f"recovery_target_time = "
                     f"{_quoted(target_time.astimezone(UTC).isoformat(sep=' '))}")
    elif target_lsn:
        lines.append(f"recovery_target_lsn = {_quoted(target_lsn)}")
    lines += ["recovery_target_action = 'promote'", ""]
    auto = datadir / "postgresql.auto.conf"
    with open(auto, "a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    (datadir / "recovery.signal").touch(mode=0o600)


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
