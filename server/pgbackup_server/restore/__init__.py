"""Verification and restore of recorded backups.

Verification is quick (size and SHA-256 against the run record, then the
format's own structure: ``pg_restore --list`` for archives, pg_dump's
completion marker for plain SQL) or deep (a real restore into a scratch
database that is always dropped). Restores stream the backup into
``pg_restore`` or ``psql``: never a second copy on disk. Each restore is
recorded as its own run.

Its store is persistence.SqlRestoreStore, behind the RestoreStore port.
"""

from __future__ import annotations

from .archive import Archive, TocEntry, data_sizes, read_archive
from .models import BackupContents, ContentEntry, RestoreRun, TableRows, VerifyResult
from .selection import Selection, select_entries
from .service import RestoreService
from .validation import check_database_name
from .verify import VerifyAfterBackup

__all__ = [
    "Archive",
    "BackupContents",
    "ContentEntry",
    "RestoreRun",
    "RestoreService",
    "Selection",
    "TableRows",
    "TocEntry",
    "VerifyAfterBackup",
    "VerifyResult",
    "check_database_name",
    "data_sizes",
    "read_archive",
    "select_entries",
]
