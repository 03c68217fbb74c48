"""How one restore goes, decided before it is recorded: the target database, the
mode (a new database, an empty one, a staging database swapped in, or objects
replaced in place) and, for a partial restore, the entries of the archive's table
of contents or of the plain dump's sections."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..domain.errors import FailedPrecondition, InvalidArgument
from ..domain.models import Run
from ..postgres.conninfo import ConnInfo
from .archive import Archive, read_archive
from .databases import connect, database_exists, database_state
from .models import Corrupt
from .plaintoc import PlainToc, read_plain_toc
from .selection import Selection, exists_in, select_entries, unmet_reads
from .verify import check_recorded


@dataclass
class Plan:
    """How one restore goes, decided before it is recorded."""

    server: ConnInfo
    target: str
    mode: str  # "new": create target; "into": existing empty target;
    #            "swap": restore into a staging database, then replace target;
    #            "replace": partial restore over existing objects (--clean)
    selection: Selection | None = None
    jobs: int = 0
    toc: PlainToc | None = None  # a plain partial restore: the sections, file checksummed
    checksum_failure: str = ""  # a plain partial restore: the file is not as recorded

    @property
    def busy_key(self) -> str:
        """The target database, on its server: one restore into it at a time."""
        return f"{self.server.get('host', '')}:{self.server.get('port', '')}/{self.target}"


def plan_restore(run: Run, server: ConnInfo, *, target_database: str, overwrite: bool,
                 schemas: tuple[str, ...], tables: tuple[str, ...], jobs: int) -> Plan:
    plan = Plan(server=server, target=target_database, mode="new", jobs=jobs)
    partial = bool(schemas or tables)
    archive: Archive | None = None
    if partial:  # names are checked before anything else happens
        archive = _table_of_contents(run, plan)
        if archive is not None:
            select_entries(archive, schemas, tables, run.id)
    _plan_target(run, plan, overwrite, partial)
    if archive is not None:
        plan.selection = select_entries(archive, schemas, tables, run.id,
                                        replacing=plan.mode == "replace")
        _check_reads(plan, archive, plan.selection, schemas)
    return plan


def _table_of_contents(run: Run, plan: Plan) -> Archive | None:
    """The archive's table of contents, or a plain dump's sections read in one pass
    that also checks the file's checksum (None: it does not match; the restore is
    recorded and fails as a whole restore of a damaged file does)."""
    if run.format != "plain":
        try:
            return read_archive(Path(run.file_path))
        except Corrupt as exc:
            raise FailedPrecondition(f"backup {run.id}: {exc.reason}") from None
    toc = read_plain_toc(run)
    try:
        check_recorded(run, toc.size, toc.sha256)
    except Corrupt as exc:
        plan.checksum_failure = exc.reason
        return None
    if not toc.complete:
        reason = toc.problem or ("the SQL does not end with pg_dump's completion marker: "
                                 "the dump is incomplete")
        raise FailedPrecondition(f"backup {run.id}: {reason}")
    plan.toc = toc
    return toc.archive


def _check_reads(plan: Plan, archive: Archive, selection: Selection,
                 schemas: tuple[str, ...]) -> None:
    """A selected view must find the relations it reads: restored with it, or
    already in the target (only an existing, non-empty one can have them)."""
    unmet = unmet_reads(archive, selection)
    if unmet and plan.mode == "replace":
        with connect(plan.server, plan.target) as conn:
            unmet = [(view, rel) for view, rel in unmet if not exists_in(conn, rel)]
    if unmet:
        view, rel = unmet[0]
        field = "schemas" if view.namespace in schemas else "tables"
        raise InvalidArgument(
            f"{field}: {view.desc.lower()} {view.namespace}.{view.tag} needs "
            f"{rel.desc.lower()} {rel.namespace}.{rel.tag}; add it to tables (or restore "
            f"schema {rel.namespace})")


def _plan_target(run: Run, plan: Plan, overwrite: bool, partial: bool) -> None:
    if not plan.target:
        plan.target = _new_name(plan.server, run)
        return
    state = database_state(plan.server, plan.target)
    if state is None:
        return
    if state == "empty":
        plan.mode = "into"
        return
    if not overwrite:
        what = "the restored objects in it" if partial else "it"
        raise FailedPrecondition(f'database "{plan.target}" exists and is not empty; set '
                                 f"overwrite: true to replace {what}, or choose another "
                                 "target_database")
    plan.mode = "replace" if partial else "swap"


def _new_name(server: ConnInfo, run: Run) -> str:
    """A database named after the backup that does not exist yet."""
    base = re.sub(r"[^a-z0-9_]", "_", run.database.lower())[:40] or "db"
    base = base if base[0].isalpha() or base[0] == "_" else f"db_{base}"
    for n in range(1, 100):
        name = f"{base}_restore_{run.id}" + (f"_{n}" if n > 1 else "")
        if not database_exists(server, name):
            return name
    raise FailedPrecondition(f"no free database name for restoring backup {run.id}; "
                             "give target_database")
