"""Watching the replicas: one replica at a time (the holder of a session advisory
lock) reports a replica whose heartbeat is older than ``cluster.leaseTimeout`` to
the listeners (the ``replica_silent`` alert), and reports it back when it beats
again or leaves cleanly. If the monitor dies, its lock goes with its connection
and another replica takes the role at its next heartbeat.

It also settles what a dead replica left that no lease covers: runs it recorded but
never queued, and its restores (a restore runs where it was asked, unqueued): FAILED
"interrupted" once the replica is silent."""

from __future__ import annotations

import time

import structlog
from sqlalchemy import Connection, Engine, exists, func, select, text, update

from ..domain.models import RunStatus
from ..domain.ports import Clock, Listener, RunStore
from ..persistence.schema import restore_runs, run_queue, runs
from .nodes import NodeRegistry

log = structlog.get_logger("pgbackup")
NEVER_QUEUED = ("interrupted: the replica that recorded this run stopped before queueing "
                "it")

_MONITOR_LOCK = 0x70676263_6D6F6E69  # "pgbcmoni"


class Monitor:
    def __init__(self, engine: Engine, registry: NodeRegistry, events: Listener,
                 store: RunStore, clock: Clock) -> None:
        self.engine = engine
        self.registry = registry
        self.events = events
        self.store = store
        self.clock = clock
        self._conn: Connection | None = None
        self._seen: set[str] = set()
        self._unqueued: dict[int, float] = {}  # run id -> when first seen without a row

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def _lead(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # the connection (and so the lock) is gone
                self.close()
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _MONITOR_LOCK}).scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def tick(self) -> None:
        if not self._lead():
            return
        nodes = self.registry.nodes()
        names = {n.name for n in nodes}
        for node in nodes:
            if node.silent and node.heartbeat_at is not None:
                self.events.on_replica_silent(node.name, node.heartbeat_at)
            else:
                self.events.on_replica_back(node.name)
        for gone in self._seen - names:  # left cleanly, or forgotten after a day
            self.events.on_replica_back(gone)
        self._seen = names
        self._settle_unqueued()
        self._settle_restores({n.name for n in nodes if not n.silent})

    def _settle_unqueued(self) -> None:
        """A run PENDING with no queue row for a whole lease was recorded by a replica
        that died before queueing it: FAILED, never left pending forever."""
        with self.engine.connect() as conn:
            ids = {int(i) for (i,) in conn.execute(select(runs.c.id).where(
                runs.c.status == RunStatus.PENDING.value,
                ~exists().where(run_queue.c.run_id == runs.c.id)))}
        now = time.monotonic()
        self._unqueued = {i: self._unqueued.get(i, now) for i in ids}
        for run_id, since in sorted(self._unqueued.items()):
            if now - since <= self.registry.lease_seconds:
                continue
            del self._unqueued[run_id]
            if self.store.get(run_id).status is not RunStatus.PENDING:
                continue
            failed = self.store.mark_failed(run_id, finished_at=self.clock(),
                                            error=NEVER_QUEUED)
            log.warning("Run never queued: its replica stopped first", run_id=run_id)
            self.events.on_run_finished(failed)

    def _settle_restores(self, alive: set[str]) -> None:
        """Restores running on a replica that is silent or gone: FAILED "interrupted"
        (a replica that stops cleanly cancels its own first)."""
        error = func.concat("interrupted: replica ", restore_runs.c.node,
                            " stopped renewing its lease (cluster.leaseTimeout "
                            f"{self.registry.lease_seconds:g}s) during this restore")
        with self.engine.begin() as conn:
            settled = conn.execute(update(restore_runs).where(
                restore_runs.c.status.in_([RunStatus.PENDING.value, RunStatus.RUNNING.value]),
                restore_runs.c.node != "", restore_runs.c.node.not_in(alive))
                .values(status=RunStatus.FAILED.value, finished_at=self.clock(), error=error)
                .returning(restore_runs.c.id, restore_runs.c.node)).all()
        for restore_id, node in settled:
            log.warning("Restore interrupted: its replica stopped renewing its lease",
                        restore_id=restore_id, node=node)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: S110 - already broken
                pass
            self._conn = None
