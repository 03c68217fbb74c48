"""The rules of backup chains, as pure functions over recorded runs.

A chain is a full physical backup and the incrementals taken on top of it, each
against the one before (``Run.parent_id``; ``Run.chain`` lists the ids from the
full backup to the run). The rules:

- an incremental's parent is the target's newest succeeded physical backup, if its
  whole chain is still intact; otherwise the run becomes a full backup and says why;
- retention never deletes a backup that a kept one depends on, and deletes an
  incremental with the backup it depends on;
- WAL is kept from the start of the oldest kept backup on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain.models import FileState, Run, RunKind, RunStatus, Verification

# WAL summaries are kept for wal_summary_keep_time (10 days by default); a parent
# older than that cannot be built on.
MAX_PARENT_AGE = timedelta(days=9)
WAL_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParentChoice:
    """The parent of a requested incremental, or why it must be a full backup."""

    parent: Run | None
    reason: str = ""


def chain_ids(run: Run) -> tuple[int, ...]:
    """The ids from the full backup to ``run`` (just ``run`` for a full one)."""
    if run.chain:
        return tuple(int(x) for x in run.chain.split(","))
    return (run.id,)


def chain_text(parent: Run | None, run_id: int) -> str:
    """The chain recorded on a new run: its parent's chain, then itself."""
    return ",".join(str(i) for i in (*(chain_ids(parent) if parent else ()), run_id))


def usable(run: Run, *, verified: bool = True) -> str:
    """Why ``run`` cannot be part of a chain to build on or restore; "" when it can.
    ``verified``: a failed verification or a folder missing here counts too (restore
    and verify re-check the files themselves instead, or fetch them from a copy)."""
    if run.status is not RunStatus.SUCCEEDED:
        return f"backup {run.id} is {run.status.value}"
    if run.file_state is FileState.DELETED:
        return f"backup {run.id} was deleted by retention"
    if verified and run.file_state is not FileState.PRESENT:
        return f"backup {run.id} is missing from disk"
    if verified and run.verification is Verification.FAILED:
        return f"backup {run.id} failed verification ({run.verification_reason})"
    return ""


def broken_link(run: Run, by_id: Mapping[int, Run], *, verified: bool = True) -> str:
    """Why ``run``'s chain cannot be restored or built on; "" when it is intact."""
    for member in chain_ids(run):
        found = by_id.get(member)
        if found is None:
            return f"backup {member} of its chain is no longer recorded"
        problem = usable(found, verified=verified)
        if problem:
            return problem
    return ""


def choose_parent(runs: Sequence[Run], *, now: datetime,
                  max_age: timedelta = MAX_PARENT_AGE) -> ParentChoice:
    """The parent for an incremental among a target's runs: its newest succeeded
    physical backup, with an intact chain, young enough for the server's WAL
    summaries. None, with the reason, when the run must be a full backup."""
    physical = [r for r in runs if r.kind.physical and r.status is RunStatus.SUCCEEDED]
    if not physical:
        return ParentChoice(None, "no earlier physical backup of this target to build on: "
                                  "taken as a full backup")
    newest = max(physical, key=lambda r: (r.finished_at or r.queued_at, r.id))
    by_id = {r.id: r for r in runs}
    problem = broken_link(newest, by_id)
    if problem:
        return ParentChoice(None, f"the newest backup's chain is broken ({problem}): taken "
                                  "as a full backup")
    taken = newest.started_at or newest.queued_at
    if now - taken > max_age:
        return ParentChoice(None, f"the newest backup ({newest.id}) is older than the "
                                  f"server keeps WAL summaries ({max_age.days} days): taken "
                                  "as a full backup")
    return ParentChoice(newest)


def restore_chain(run: Run, by_id: Mapping[int, Run]) -> list[Run]:
    """The runs to combine to restore ``run``, full backup first; ValueError naming the
    broken link."""
    problem = broken_link(run, by_id, verified=False)
    if problem:
        raise ValueError(problem)
    return [by_id[i] for i in chain_ids(run)]


def close_retention(present: Iterable[Run],
                    doomed: Iterable[int]) -> tuple[set[int], dict[int, str]]:
    """Apply the chain rules to what the retention rules would delete.

    A backup that a kept backup depends on stays; an incremental goes with the
    backup it depends on. Returns the ids to delete and, for each backup whose fate
    the chains changed, why."""
    runs = [r for r in present if r.kind.physical]
    doomed_ids = set(doomed)
    reasons: dict[int, str] = {}
    needed: dict[int, int] = {}  # id -> a kept backup that depends on it
    for r in runs:
        if r.id in doomed_ids:
            continue
        for member in chain_ids(r)[:-1]:
            needed.setdefault(member, r.id)
    for member, by in needed.items():
        if member in doomed_ids:
            doomed_ids.discard(member)
            reasons[member] = f"kept: backup {by} depends on it"
    # An incremental goes with a backup it depends on. (One whose full backup vanished
    # by other means is left to the age rules: a missing file may come back.)
    for r in sorted(runs, key=lambda r: r.id):
        if r.id in doomed_ids:
            continue
        lost = [m for m in chain_ids(r)[:-1] if m in doomed_ids]
        if lost:
            doomed_ids.add(r.id)
            reasons[r.id] = f"deleted with backup {lost[0]}, which it depends on"
    return doomed_ids, reasons


def lsn_value(text: str) -> int:
    """``"0/3000028"`` -> an integer position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_start(name: str, segment_size: int = WAL_SEGMENT_SIZE) -> int:
    """The first LSN of a WAL segment file name (``000000010000000000000003``)."""
    log_id, seg = int(name[8:16], 16), int(name[16:24], 16)
    return (log_id * (0x100000000 // segment_size) + seg) * segment_size


def segment_name(timeline: int, lsn: int, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    """The WAL segment file holding ``lsn`` on ``timeline``."""
    segno = lsn // segment_size
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def wal_to_delete(names: Iterable[str], kept: Iterable[Run],
                  segment_size: int = WAL_SEGMENT_SIZE) -> list[str]:
    """Archived WAL segments older than the start of the oldest kept physical backup
    (history files and the segment being written are always kept; nothing when no
    physical backup is kept, as the archive is then all there is)."""
    starts = [lsn_value(r.start_lsn) for r in kept if r.kind.physical and r.start_lsn]
    if not starts:
        return []
    horizon = min(starts)
    out = []
    for name in names:
        segment = name.split(".", 1)[0]
        if len(segment) != 24 or name.endswith(".partial") or ".history" in name:
            continue
        if segment_start(segment, segment_size) + segment_size <= horizon:
            out.append(name)
    return sorted(out)


def kind_for(parent: Run | None) -> RunKind:
    return RunKind.PHYSICAL_INCREMENTAL if parent is not None else RunKind.PHYSICAL_FULL
