"""Checks of what a restore request names: databases, schemas and tables, jobs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..domain.errors import FailedPrecondition, InvalidArgument
from ..domain.models import Run, RunKind
from ..domain.targets import Targets

MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
MAX_JOBS = 64
MAX_SELECTION = 1000
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
_TEMPLATES = ("template0", "template1")


def _check_name(value: str, field: str, what: str = "name",
                limit: int = MAX_NAME_BYTES) -> None:
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains a NUL byte")
    if not value or not value.strip():
        raise InvalidArgument(f"{field}: an empty {what}")
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{field}: {value[:70]!r} is longer than {limit} bytes "
                              f"(PostgreSQL names have at most {MAX_NAME_BYTES})")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"{field}: {value!r} contains control characters")


def check_database_name(name: str, field: str = "target_database") -> None:
    """Database names: an identifier (letters, digits, ``_``, ``$``, ``-``), at most
    63 bytes, not a template."""
    _check_name(name, field, "database name")
    if not _DB_NAME.match(name):
        raise InvalidArgument(f"{field}: {name!r} is not a valid database name; use letters, "
                              "digits, _, $ and -, starting with a letter or _")
    if name in _TEMPLATES:
        raise InvalidArgument(f"{field}: {name} is a template database; restore into another "
                              "database")


def check_selection(values: Iterable[str], field: str) -> tuple[str, ...]:
    """``schemas`` or ``tables`` of a partial restore, without duplicates."""
    items = tuple(dict.fromkeys(values))
    if len(items) > MAX_SELECTION:
        raise InvalidArgument(f"{field}: at most {MAX_SELECTION} names, got {len(items)}")
    for item in items:
        # schema.table (possibly quoted): two names, a dot and quotes.
        limit = 2 * MAX_NAME_BYTES + 5 if field == "tables" else MAX_NAME_BYTES
        _check_name(item, field, limit=limit)
    return items


def check_jobs(jobs: int) -> None:
    if not 0 <= jobs <= MAX_JOBS:
        raise InvalidArgument(f"jobs: must be between 0 and {MAX_JOBS} (0: one), got {jobs}")


def refuse_globals(run: Run, action: str) -> None:
    if run.kind is RunKind.GLOBALS:
        raise FailedPrecondition(
            f"backup {run.id} holds the server's roles and tablespaces (pg_dumpall "
            f"--globals-only) and cannot be {action} into a database: it changes the whole "
            "server. Review it, then apply it with psql by hand")


def refuse_risky(targets: Targets, run: Run, target: str, partial: bool) -> None:
    """Overwriting the maintenance database or the backup's own live source database
    (the configured target's, or for an allDatabases target the run's own) needs
    ``force``."""
    source = targets.source_dbname(run.target, run.database) or run.database
    if target == source:
        what = "the live database this backup was taken from"
    elif target == "postgres":
        what = "the server's maintenance database"
    else:
        return
    replaced = "the restored objects in it" if partial else "it"
    raise FailedPrecondition(
        f'target_database: "{target}" is {what}; restoring over it replaces {replaced} '
        "with the backup's contents — set force: true (backupctl restore --force) to "
        "do it anyway, or restore into a new database")
