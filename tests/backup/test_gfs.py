"""GFS retention as pure functions, with an injected clock: a year of daily backups,
hourly backups, the issue's local-vs-S3 example, guards, Object Lock, and period
boundaries in the configured timezone (ISO weeks, DST)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pgbackup_server.domain.models import RunStatus
from pgbackup_server.domain.retention import (
    FAILING,
    NEWEST,
    Candidate,
    Decision,
    Policy,
    decide,
    period_key,
)

GROUP = ("shop", "shop")
LOCAL = Policy(days=7)  # the example: local storage keeps 7 days ...
S3 = Policy(days=0, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3)  # ... S3 GFS
DUMP = timedelta(minutes=5)  # cleanup runs when the backup is done, a little after it started


def run_decide(backups: list[Candidate], policy: Policy, now: datetime, tz=UTC,
               latest: RunStatus | None = None) -> list[Decision]:
    return decide(backups, lambda _g: policy, now=now, tz=tz,
                  latest_status={GROUP: latest} if latest else None)


def simulate(policy: Policy, first: datetime, days: int,
             step: timedelta = timedelta(days=1), tz=UTC) -> list[Decision]:
    """A backup every ``step`` from ``first``, each followed by a cleanup that deletes
    what retention lets go (as cleanupOld does): the decisions of the last cleanup."""
    kept: list[Candidate] = []
    decisions: list[Decision] = []
    when = first
    for i in range(int(timedelta(days=days) / step)):
        kept.append(Candidate(i + 1, GROUP, when))
        decisions = run_decide(kept, policy, when + DUMP, tz)
        kept = [d.candidate for d in decisions if d.keep]
        when += step
    return [d for d in decisions if d.keep]


def days_of(decisions: list[Decision]) -> list[date]:
    return sorted(d.candidate.started_at.date() for d in decisions)


def tiers(kept: list[Decision]) -> Counter[str]:
    """Each kept backup counted once, under the first tier that keeps it
    (daily before weekly before monthly before yearly)."""
    order = ("keepHourly", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly")
    return Counter(next(t for t in order if any(r.startswith(t) for r in d.reasons))
                   for d in kept)


def test_a_year_of_daily_backups_local_7_days_against_s3_gfs():
    start = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    # Local: 7 days, and nothing else. The backup of 7 days ago is 7 days and 5 minutes
    # old when the cleanup runs: 7 files.
    local = simulate(LOCAL, start, 365)
    assert days_of(local) == [date(2026, 12, 25) + timedelta(days=i) for i in range(7)]

    # S3 after a year (the last backup on Thursday 2026-12-31):
    # - 7 daily: Dec 25-31;
    # - 4 weekly (ISO): W53 (Dec 28-) and W52 (Dec 21-27) end in daily ones (Dec 31, 27),
    #   W51 and W50 add their Sundays, Dec 20 and Dec 13: 2 more;
    # - 12 monthly: December's newest is daily; Jan-Nov add their last days: 11 more;
    # - 3 yearly: 2026's newest is daily, and no older year holds a backup: 0 more.
    # 7 + 2 + 11 = 20 files, against 365 backups taken.
    s3 = simulate(S3, start, 365)
    assert tiers(s3) == {"keepDaily": 7, "keepWeekly": 2, "keepMonthly": 11}
    month_ends = [date(2026, m + 1, 1) - timedelta(days=1) for m in range(1, 12)]
    assert days_of(s3) == sorted([*month_ends, date(2026, 12, 13), date(2026, 12, 20),
                                  *(date(2026, 12, 25) + timedelta(days=i) for i in range(7))])


def test_the_peers_example_after_forty_days_keeps_7_daily_2_weekly_1_monthly():
    # Databasus' figure for daily backups under 7d/4w/12m/3y: 10 files. On Monday
    # 2026-02-09: daily Feb 3-9; ISO weeks W07 and W06 end in daily ones, W05 and W04
    # add Sunday Feb 1 and Jan 25; January adds Jan 31; 2026 adds nothing.
    kept = simulate(S3, datetime(2026, 1, 1, 2, 0, tzinfo=UTC), 40)
    assert tiers(kept) == {"keepDaily": 7, "keepWeekly": 2, "keepMonthly": 1}
    assert date(2026, 1, 31) in days_of(kept) and date(2026, 1, 25) in days_of(kept)


def test_yearly_tier_keeps_the_newest_of_each_older_year():
    # Two and a half years, to 2026-12-31: monthly reaches back to January 2026, yearly
    # adds 2025's and 2024's last backups (Dec 31), which no other tier keeps.
    kept = simulate(S3, datetime(2024, 7, 1, 2, 0, tzinfo=UTC), 914)
    assert days_of(kept)[-1] == date(2026, 12, 31)
    yearly = [d for d in kept if tiers([d]) == {"keepYearly": 1}]
    assert days_of(yearly) == [date(2024, 12, 31), date(2025, 12, 31)]
    assert tiers(kept)["keepYearly"] == 2


def test_hourly_tier():
    # Hourly backups for three days, 24 hourly and 7 daily: the last 24 hours, plus
    # the newest (23:00) of the two days before.
    policy = Policy(days=0, keep_hourly=24, keep_daily=7)
    kept = simulate(policy, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), 3, step=timedelta(hours=1))
    assert tiers(kept) == {"keepHourly": 24, "keepDaily": 2}
    older = sorted(d.candidate.started_at for d in kept)[:2]
    assert older == [datetime(2026, 3, 1, 23, tzinfo=UTC), datetime(2026, 3, 2, 23, tzinfo=UTC)]


def test_days_only_is_the_old_behaviour_and_says_why():
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    backups = [Candidate(i, GROUP, now - timedelta(days=d))
               for i, d in enumerate([40, 31, 29, 1], start=1)]
    decisions = {d.candidate.id: d for d in run_decide(backups, Policy(days=30), now)}
    assert sorted(i for i, d in decisions.items() if not d.keep) == [1, 2]
    assert decisions[1].reasons == ("older than 30 days and kept by no rule (days 30)",)
    assert decisions[3].reasons == ("within 30 days",)
    assert decisions[4].reasons == (NEWEST, "within 30 days")


def test_guards_newest_success_and_a_failing_database():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = [Candidate(i, GROUP, now - timedelta(days=400 - i)) for i in range(3)]
    decisions = run_decide(old, Policy(days=1), now)
    assert [(d.candidate.id, d.keep) for d in decisions] == [(2, True), (1, False), (0, False)]
    assert decisions[0].reasons == (NEWEST,)
    # The newest run failed: nothing of that database goes, and it says so.
    failing = run_decide(old, Policy(days=1), now, latest=RunStatus.FAILED)
    assert all(d.keep and FAILING in d.reasons for d in failing)


def test_min_keep_and_keep_last_count_the_newest():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    backups = [Candidate(i, GROUP, now - timedelta(days=100 + i)) for i in range(6)]
    decisions = run_decide(backups, Policy(days=30, min_keep=2, keep_last=4), now)
    assert [d.reasons for d in decisions] == [
        (NEWEST, "keepLast 4"), ("minKeep 2", "keepLast 4"), ("keepLast 4",),
        ("keepLast 4",), ("older than 30 days and kept by no rule (days 30, minKeep 2, "
                          "keepLast 4)",), ("older than 30 days and kept by no rule (days 30, "
                                            "minKeep 2, keepLast 4)",)]


def test_a_locked_object_is_kept_until_its_lock_ends_and_that_is_no_failure():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    until = now + timedelta(days=3)
    backups = [Candidate(1, GROUP, now - timedelta(days=60), locked_until=until),
               Candidate(2, GROUP, now - timedelta(days=50), locked_until=now),
               Candidate(3, GROUP, now)]
    decisions = {d.candidate.id: d for d in run_decide(backups, Policy(days=7), now)}
    assert decisions[1].keep and decisions[1].reasons == (f"locked until {until.isoformat()}",)
    assert not decisions[2].keep  # a lock that ended no longer holds it
    later = {d.candidate.id: d.keep
             for d in run_decide(backups, Policy(days=7), until + timedelta(seconds=1))}
    assert later == {1: False, 2: False, 3: True}


def test_periods_are_read_in_the_configured_timezone():
    # 16:30 UTC is 23:30 in Jakarta (UTC+7) on the 1st; 17:30 and 23:00 UTC are the 2nd.
    utc = [datetime(2026, 3, 1, h, m, tzinfo=UTC) for h, m in ((16, 30), (17, 30), (23, 0))]
    backups = [Candidate(i, GROUP, t) for i, t in enumerate(utc, start=1)]
    policy = Policy(days=0, keep_daily=2)
    now = datetime(2026, 3, 2, tzinfo=UTC)

    def kept(tz) -> set[int]:
        return {d.candidate.id for d in run_decide(backups, policy, now, tz) if d.keep}

    assert kept(UTC) == {3}  # one UTC day holds all three
    assert kept(ZoneInfo("Asia/Jakarta")) == {1, 3}  # the newest of each Jakarta day


def test_weeks_are_iso_weeks_across_the_new_year():
    # Monday 2025-12-29 belongs to ISO week 2026-W01, with Thursday 2026-01-01;
    # Sunday 2025-12-28 ends 2025-W52.
    days = [date(2025, 12, 28), date(2025, 12, 29), date(2026, 1, 1)]
    backups = [Candidate(i, GROUP, datetime(d.year, d.month, d.day, 2, tzinfo=UTC))
               for i, d in enumerate(days, start=1)]
    decisions = run_decide(backups, Policy(days=0, keep_weekly=2),
                           datetime(2026, 1, 2, tzinfo=UTC))
    assert {d.candidate.id: d.keep for d in decisions} == {1: True, 2: False, 3: True}
    assert decisions[0].reasons == (NEWEST, "keepWeekly: newest of 2026-W01")
    assert decisions[2].reasons == ("keepWeekly: newest of 2025-W52",)
    assert period_key("keepWeekly", datetime(2027, 1, 1, tzinfo=UTC), UTC) == "2026-W53"


def test_the_hour_repeated_when_clocks_go_back_is_two_hours():
    paris = ZoneInfo("Europe/Paris")  # 2026-10-25 03:00 CEST -> 02:00 CET
    utc = [datetime(2026, 10, 24, 23, 30, tzinfo=UTC),  # 01:30 CEST
           datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST
           datetime(2026, 10, 25, 1, 30, tzinfo=UTC)]  # 02:30 CET
    backups = [Candidate(i, GROUP, t) for i, t in enumerate(utc, start=1)]
    decisions = run_decide(backups, Policy(days=0, keep_hourly=2),
                           datetime(2026, 10, 25, 2, tzinfo=UTC), paris)
    assert {d.candidate.id: d.keep for d in decisions} == {1: False, 2: True, 3: True}
    assert decisions[1].reasons == ("keepHourly: newest of 2026-10-25 02:00 +0200",)


def test_groups_are_decided_apart():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    a = [Candidate(i, ("a", "postgres"), now - timedelta(days=50 + i)) for i in range(2)]
    b = [Candidate(10 + i, ("b", "postgres"), now - timedelta(days=50 + i)) for i in range(2)]
    policies = {("a", "postgres"): Policy(days=7), ("b", "postgres"): Policy(days=90)}
    decisions = decide(a + b, policies.__getitem__, now=now, tz=UTC)
    assert {d.candidate.id: d.keep for d in decisions} == {0: True, 1: False, 10: True,
                                                           11: True}
