"""``schedule_fires``: one row per scheduled fire, inserted by the replica that fires it.

The unique key (schedule, fire time) makes each fire run once whatever the number of
replicas. :meth:`FireClaims.claim_and_queue` claims a batch of fires and, in the same
transaction, records their runs PENDING and queues them: a fire is claimed together
with its runs or not at all, and the fires of one instant cost a few round trips per
batch instead of several per fire (1,000 schedules firing at once are queued in well
under a second). Rows are locked in (schedule, fire time) order by every replica, so
two replicas claiming overlapping batches wait for each other, never deadlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text, update

from ..backup.jobs import Job
from ..domain.models import Trigger
from ..persistence import totals
from ..persistence.bulk import full_rows, names, rows_select
from ..persistence.codec import aware
from ..persistence.runs import pending_row
from ..persistence.schema import run_queue, runs, schedule_fires
from .queue import job_json

_FIRE_COLUMNS = ("schedule", "fire_time", "node", "claimed_at", "run_ids")
_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence('backup_runs', 'id')) "
                 "FROM generate_series(1, :n)")
# A batch is worked on by one replica at a time; the others skip it for now.
_TRY_BATCH = text("SELECT pg_try_advisory_xact_lock(1885823590, :k)")  # "pgbf"


def _queue(conn: Connection, new: list[dict[str, Any]], queued: list[dict[str, Any]],
           fires: list[dict[str, Any]]) -> None:
    """In one statement: insert the runs ``new`` and their ``queued`` entries, and
    note each fire's run ids on its claim."""
    run_rows, run_params = rows_select(conn, runs, list(new[0]), new, "r")
    queue_rows, queue_params = rows_select(conn, run_queue, list(queued[0]), queued, "q")
    fire_rows, fire_params = rows_select(conn, schedule_fires, list(fires[0]), fires, "f")
    conn.execute(text(
        f"WITH r AS (INSERT INTO backup_runs ({names(conn, new[0])}) {run_rows}), "
        f"q AS (INSERT INTO run_queue ({names(conn, queued[0])}) {queue_rows}) "
        f"UPDATE schedule_fires f SET run_ids = u.run_ids FROM ({fire_rows}) AS u "
        "WHERE f.schedule = u.schedule AND f.fire_time = u.fire_time"),
        {**run_params, **queue_params, **fire_params})


def _batch_key(first: PlannedFire) -> int:
    """The same int4 on every replica for the batch that starts with ``first``."""
    digest = hashlib.sha256(f"{first.schedule}\0{first.fire_time.timestamp()}".encode())
    return int.from_bytes(digest.digest()[:4], "big", signed=True)


@dataclass(frozen=True, slots=True)
class PlannedFire:
    """A fire that has come, with the jobs its runs will be (and their server)."""

    schedule: str
    fire_time: datetime
    server: str
    jobs: tuple[Job, ...]

    @property
    def key(self) -> tuple[str, datetime]:
        return self.schedule, self.fire_time


class FireClaims:
    """Claims of fires in the store, for one replica (``node``)."""

    def __init__(self, engine: Engine, node: str) -> None:
        self.engine = engine
        self.node = node

    def claim(self, schedule: str, fire_time: datetime, now: datetime) -> bool:
        """Claim one fire alone (its runs are queued afterwards, by the service)."""
        with self.engine.begin() as conn:
            return bool(self._claim(conn, [(schedule, fire_time)], now))

    def claim_and_queue(self, fires: Sequence[PlannedFire], now: datetime, *,
                        wait: bool = True) -> list[tuple[PlannedFire, list[int]]] | None:
        """Claim ``fires``; record and queue the runs of those this replica won, in the
        same transaction. Returns the fires won, with their run ids; None, without
        waiting, when ``wait`` is false and another replica is claiming the same batch
        now (come back to it later: by then its fires are taken, and cost nothing)."""
        ordered = sorted(fires, key=lambda f: f.key)
        if not ordered:
            return []
        with self.engine.begin() as conn:
            if not wait and not conn.execute(_TRY_BATCH, {"k": _batch_key(ordered[0])}).scalar():
                return None
            won = self._claim(conn, [f.key for f in ordered], now)
            mine = [f for f in ordered if f.key in won]
            if not mine:
                return []
            jobs = [(fire, job) for fire in mine for job in fire.jobs]
            ids = sorted(int(i) for i in conn.execute(_NEXT_IDS, {"n": len(jobs)}).scalars())
            new = full_rows(runs, [{"id": run_id, **pending_row(
                database=job.database, trigger=Trigger.SCHEDULE, backup_dir=str(job.directory),
                queued_at=now, schedule=fire.schedule, target=job.target.name, kind=job.kind)}
                for run_id, (fire, job) in zip(ids, jobs, strict=True)])
            queued = [{"run_id": run_id, "server": fire.server, "job": job_json(job),
                       "enqueued_at": now, "node": None, "heartbeat_at": None, "attempt": 1}
                      for run_id, (fire, job) in zip(ids, jobs, strict=True)]
            by_fire: dict[tuple[str, datetime], list[int]] = {}
            for run_id, (fire, _job) in zip(ids, jobs, strict=True):
                by_fire.setdefault(fire.key, []).append(run_id)
            out = [(fire, by_fire[fire.key]) for fire in mine]
            _queue(conn, new, queued, [{"schedule": f.schedule, "fire_time": f.fire_time,
                                        "run_ids": ",".join(map(str, i))} for f, i in out])
            # Last: the totals' rows are shared by every replica's writes, so they are
            # held from here to the commit only.
            totals.apply(conn, {}, totals.of_rows(new))
        return out

    def _claim(self, conn: Connection, keys: list[tuple[str, datetime]],
               now: datetime) -> set[tuple[str, datetime]]:
        """Insert the claims of ``keys``; those this replica won (the others were
        claimed already). Rows are locked in the order given."""
        select, params = rows_select(conn, schedule_fires, _FIRE_COLUMNS, [
            {"schedule": name, "fire_time": at, "node": self.node, "claimed_at": now,
             "run_ids": ""} for name, at in keys])
        return {(name, aware(at) or at) for name, at in conn.execute(text(
            f"INSERT INTO schedule_fires ({names(conn, _FIRE_COLUMNS)}) {select} "
            "ON CONFLICT DO NOTHING RETURNING schedule, fire_time"), params)}

    def record(self, schedule: str, fire_time: datetime, outcome: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(schedule_fires).where(schedule_fires.c.schedule == schedule,
                                                      schedule_fires.c.fire_time == fire_time)
                         .values(run_ids=outcome[:2000]))

    def last_fires(self) -> dict[str, datetime]:
        """The newest claimed fire of each schedule."""
        with self.engine.connect() as conn:
            return {name: aware(at) or at for name, at in conn.execute(
                select(schedule_fires.c.schedule, func.max(schedule_fires.c.fire_time))
                .group_by(schedule_fires.c.schedule))}
