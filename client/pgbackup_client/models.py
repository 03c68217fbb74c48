"""Plain, immutable views of the BackupService messages for SDK users.

The models are generated from proto/ (pgbackup_client._generated_models, by
scripts/gen_proto.py): every field of a message is a typed attribute, and
``from_proto`` / ``to_dict`` are generic (pgbackup_client._convert). This is
their public home, with the few hand-written extras.
"""

from __future__ import annotations

from pgbackup_client import _generated_models as _generated
from pgbackup_client._generated_models import (
    Backup,
    BackupContents,
    BackupPage,
    CleanupResult,
    ContentEntry,
    CreateResult,
    DatabaseStats,
    Progress,
    RestoreRun,
    RunSummary,
    Schedule,
    Stats,
    TableRows,
)

__all__ = [
    "Backup",
    "BackupContents",
    "BackupPage",
    "CleanupResult",
    "ContentEntry",
    "CreateResult",
    "DatabaseStats",
    "Progress",
    "RestoreRun",
    "RunSummary",
    "Schedule",
    "Stats",
    "TableRows",
    "VerifyResult",
]


class VerifyResult(_generated.VerifyResult):
    """Outcome of VerifyBackup: ``verification`` is ``"OK"`` or ``"FAILED"``."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        """True when the verification passed."""
        return self.verification == "OK"
