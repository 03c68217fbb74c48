"""Retention rules: pure functions over backups, no I/O.

A policy (:class:`Policy`) keeps a backup when any of its rules keeps it:

- ``days``: it started within the last N days (0: no age window);
- ``min_keep`` / ``keep_last``: it is among the N newest successful backups of its group;
- ``keep_hourly`` ... ``keep_yearly`` (grandfather-father-son): it is the newest
  backup of one of the last N hours, days, ISO weeks, months or years that hold one,
  the periods read in the configured timezone.

Guards that no rule can override:

- the newest successful backup of a group is always kept;
- while a group's newest finished run failed, nothing of it is pruned, so a string of
  failures can never eat the last good copies;
- a copy under Object Lock is never deleted before ``locked_until`` (and that is no
  failure: it is kept, and says why).

A group is a (target, database) pair: two servers may both have a database "postgres".
Only backups the service recorded as SUCCEEDED with their file present are candidates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from .models import FileState, Run, RunStatus

Group = tuple[str, str]  # (target, database)
NEWEST = "newest successful backup"
FAILING = "newest run failed; nothing pruned"


@dataclass(frozen=True, slots=True)
class Policy:
    """What one place (a target's backups at one destination) keeps. 0 turns a rule off."""

    days: int = 30
    min_keep: int = 1
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def periods(self) -> tuple[tuple[str, int], ...]:
        """The period rules that are on: (rule name, N)."""
        rules = (("keepHourly", self.keep_hourly), ("keepDaily", self.keep_daily),
                 ("keepWeekly", self.keep_weekly), ("keepMonthly", self.keep_monthly),
                 ("keepYearly", self.keep_yearly))
        return tuple((rule, n) for rule, n in rules if n > 0)

    def describe(self) -> str:
        """``days 7, keepDaily 7, keepWeekly 4`` (the rules that are on)."""
        parts = [f"days {self.days}"] if self.days else []
        parts += [f"minKeep {self.min_keep}"] if self.min_keep > 1 else []
        parts += [f"keepLast {self.keep_last}"] if self.keep_last else []
        parts += [f"{rule} {n}" for rule, n in self.periods]
        return ", ".join(parts) or "newest only"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A successful backup (one copy of it) that retention may delete."""

    id: int  # the run's id
    group: Group
    started_at: datetime
    locked_until: datetime | None = None  # S3 Object Lock: not deletable before


@dataclass(frozen=True, slots=True)
class Decision:
    candidate: Candidate
    keep: bool
    reasons: tuple[str, ...]


def period_key(rule: str, when: datetime, tz: tzinfo) -> str:
    """The period of ``when`` for a rule, in ``tz``: ``2026-01-15`` for keepDaily,
    ``2026-W03`` (ISO week, its year is the ISO year) for keepWeekly, ..."""
    local = when.astimezone(tz)
    if rule == "keepHourly":
        # With the offset: the hour repeated when clocks go back is two hours.
        return local.strftime("%Y-%m-%d %H:00 %z")
    return local.strftime({"keepDaily": "%Y-%m-%d", "keepWeekly": "%G-W%V",
                           "keepMonthly": "%Y-%m", "keepYearly": "%Y"}[rule])


def decide(candidates: Iterable[Candidate], policy_for: Callable[[Group], Policy], *,
           now: datetime, tz: tzinfo,
           latest_status: Mapping[Group, RunStatus] | None = None) -> list[Decision]:
    """A decision for every candidate, with the rules that keep it or why it goes;
    in the candidates' order by group, newest first within a group."""
    latest_status = latest_status or {}
    groups: dict[Group, list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[c.group].append(c)
    out: list[Decision] = []
    for group, members in groups.items():
        members.sort(key=_order, reverse=True)
        policy = policy_for(group)
        reasons = _reasons(members, policy, now, tz,
                           failing=latest_status.get(group) is RunStatus.FAILED)
        goes = (_why_not(policy),)
        out.extend(Decision(c, bool(r), tuple(r) if r else goes)
                   for c, r in zip(members, reasons, strict=True))
    return out


def _reasons(newest_first: list[Candidate], policy: Policy, now: datetime, tz: tzinfo, *,
             failing: bool) -> list[list[str]]:
    """Per candidate (newest first), the rules that keep it; empty: it goes."""
    reasons: list[list[str]] = [[] for _ in newest_first]
    if reasons:
        reasons[0].append(NEWEST)
    if failing:
        for r in reasons:
            r.append(FAILING)
    cutoff = now - timedelta(days=policy.days)
    min_keep = max(1, policy.min_keep)
    for i, c in enumerate(newest_first):
        if policy.days and c.started_at >= cutoff:
            reasons[i].append(f"within {policy.days} days")
        if 0 < i < min_keep:
            reasons[i].append(f"minKeep {min_keep}")
        if i < policy.keep_last:
            reasons[i].append(f"keepLast {policy.keep_last}")
    for rule, n in policy.periods:
        seen: set[str] = set()
        for i, c in enumerate(newest_first):
            if len(seen) >= n:
                break
            key = period_key(rule, c.started_at, tz)
            if key not in seen:  # the first seen is the newest of its period
                seen.add(key)
                reasons[i].append(f"{rule}: newest of {key}")
    for i, c in enumerate(newest_first):
        if not reasons[i] and c.locked_until is not None and c.locked_until > now:
            reasons[i].append(f"locked until {c.locked_until.isoformat()}")
    return reasons


def _why_not(policy: Policy) -> str:
    if policy.days:
        return f"older than {policy.days} days and kept by no rule ({policy.describe()})"
    return f"kept by no rule ({policy.describe()})"


def candidates(runs: Iterable[Run]) -> list[Candidate]:
    """The runs retention may delete: SUCCEEDED with their file present."""
    return [Candidate(r.id, (r.target, r.database), _started(r)) for r in runs
            if r.status is RunStatus.SUCCEEDED and r.file_state is FileState.PRESENT]


def expired(runs: Iterable[Run], *, now: datetime, retention_days: int, min_keep: int = 1,
            latest_status: Mapping[Group, RunStatus] | None = None,
            tz: tzinfo | None = None) -> list[Run]:
    """The runs whose files a ``days``/``min_keep`` policy deletes now, oldest first."""
    if retention_days < 1:
        raise ValueError("retention_days must be >= 1")
    runs = list(runs)
    by_id = {r.id: r for r in runs}
    policy = Policy(days=retention_days, min_keep=max(1, min_keep))
    decisions = decide(candidates(runs), lambda _group: policy, now=now,
                       tz=tz or UTC, latest_status=latest_status)
    return sorted((by_id[d.candidate.id] for d in decisions if not d.keep), key=_run_order)


def _started(run: Run) -> datetime:
    return run.started_at or run.queued_at


def _order(c: Candidate) -> tuple[datetime, int]:
    # Ids break ties: runs started in the same instant still have an order.
    return c.started_at, c.id


def _run_order(run: Run) -> tuple[datetime, int]:
    return _started(run), run.id

