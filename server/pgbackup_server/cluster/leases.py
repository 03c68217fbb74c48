"""Leases: a replica renews its heartbeat and the leases of its runs every third of
``cluster.leaseTimeout``; any replica takes over the runs whose lease expired.

- **Fencing.** A replica that could not renew for two thirds of the lease stops its
  own runs before anyone can take them over, and stops any run the store says it no
  longer holds: a run never executes on two replicas at once.
- **Taking over.** A run whose lease expired (its replica died or lost the store) is
  recorded FAILED "interrupted", its temporary file removed, and a scheduled run is
  queued again as a new run (a manual one is not: its caller got the failure). Each
  look for expired leases also says when the next one expires, and the next look is
  made then, not at the next poll: a dead replica's runs are taken over within a few
  milliseconds of ``leaseTimeout`` after its last heartbeat, so at most
  ``leaseTimeout`` after its death.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, delete, func, select

from ..backup import files
from ..backup.naming import TEMP_NAME
from ..domain.ports import Clock, Listener, RunStore
from ..persistence.codec import aware
from ..persistence.schema import run_queue
from .nodes import NodeRegistry, store_now
from .queue import MAX_ATTEMPTS, requeue

log = structlog.get_logger("pgbackup")
REAP_SECONDS = 0.5


def interrupted(node: str, lease: float) -> str:
    return (f"interrupted: replica {node} stopped renewing its lease (cluster.leaseTimeout "
            f"{lease:g}s) during this run")


class Leases:
    """The heartbeat thread of one replica."""

    def __init__(self, engine: Engine, registry: NodeRegistry, store: RunStore,
                 events: Listener, *, clock: Clock, executing: Callable[[], set[int]],
                 stop_run: Callable[[int, str], None], wake: Callable[[], None],
                 fenced: Callable[[int], None] = lambda _run_id: None,
                 after: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.registry = registry
        self.store = store
        self.events = events
        self.clock = clock
        self.executing = executing
        self.stop_run = stop_run
        self.wake = wake
        self.fenced = fenced
        self.after = after  # the monitor's turn, after each good heartbeat
        self.lease = registry.lease_seconds
        self.interval = self.lease / 3
        # The fence must act well within the third of the lease between two thirds
        # (when it acts) and the lease (when others may take the runs over).
        self.watch_every = min(REAP_SECONDS, self.lease / 20)
        self._next_expiry: float | None = None  # seconds, from the last look
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = time.monotonic()
        self.beats = 0
        self.failures = 0

    def start(self) -> None:
        self._last_ok = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="cluster-leases", daemon=True)
        self._thread.start()
        # Apart from the heartbeat, which may hang on an unreachable store: whatever
        # the network does, runs stop before their lease can be taken over.
        threading.Thread(target=self._watchdog, name="cluster-fence", daemon=True).start()

    def _watchdog(self) -> None:
        fenced: set[int] = set()
        while not self._stop.wait(self.watch_every):
            if time.monotonic() - self._last_ok <= self.lease * 2 / 3:
                fenced.clear()
                continue
            doomed = self.executing() - fenced
            if doomed:
                fenced |= doomed
                self._fence(doomed, "the lease could not be renewed for two thirds of "
                                    "cluster.leaseTimeout")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        # Expired leases are looked for twice a second, and at the moment the next
        # one expires: a dead replica's runs are taken over as its lease ends.
        next_beat = time.monotonic() + self.interval
        wait = min(REAP_SECONDS, self.interval)
        while not self._stop.wait(wait):
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                if self.beat():
                    self._after()
            self.reap()
            wait = min(REAP_SECONDS, max(0.0, next_beat - time.monotonic()))
            if self._next_expiry is not None:
                wait = min(wait, self._next_expiry + 0.005)

    def tick(self) -> None:
        """One heartbeat and one look for expired leases."""
        if self.beat():
            self._after()
        self.reap()

    def beat(self) -> bool:
        """Renew; fence what this replica no longer holds. False: the store is away."""
        mine = self.executing()
        try:
            held = self.registry.heartbeat(len(mine))
        except Exception as exc:
            self.failures += 1
            silent = time.monotonic() - self._last_ok
            log.warning("Cluster heartbeat failed", error=str(exc).splitlines()[0][:200],
                        silent_seconds=round(silent, 1))
            return False  # the watchdog fences, after two thirds of the lease
        self._last_ok = time.monotonic()
        self.beats += 1
        still = self.executing()
        lost = {r for r in mine if r not in held and r in still}
        if lost:
            self._fence(lost, "another replica took the run over")
        return True

    def reap(self) -> None:
        try:
            if self.take_over():
                self.wake()
        except Exception as exc:  # the store is away: the heartbeat reports it
            log.debug("Could not look for expired leases", error=str(exc)[:200])

    def _after(self) -> None:
        try:
            self.after()
        except Exception:
            log.warning("Cluster monitor check failed", exc_info=True)

    def _fence(self, run_ids: set[int], why: str) -> None:
        for run_id in sorted(run_ids):
            log.error("Stopping a run this replica no longer holds a lease on", run_id=run_id,
                      reason=why)
            self.fenced(run_id)
            self.stop_run(run_id, f"interrupted: {why}")

    def take_over(self) -> int:
        """Settle every run whose lease expired; return how many. Notes when the next
        lease of another replica's run expires (``_next_expiry``, seconds)."""
        lease = timedelta(seconds=self.lease)
        with self.engine.begin() as conn:
            now = store_now(conn)
            rows = conn.execute(select(run_queue).where(
                run_queue.c.node.is_not(None), run_queue.c.heartbeat_at < now - lease)
                .order_by(run_queue.c.run_id).with_for_update(skip_locked=True)).all()
            for row in rows:
                self._settle(conn, row)
                conn.execute(delete(run_queue).where(run_queue.c.run_id == row.run_id))
            oldest = aware(conn.execute(select(func.min(run_queue.c.heartbeat_at)).where(
                run_queue.c.node.is_not(None),
                run_queue.c.node != self.registry.name)).scalar())
        self._next_expiry = (None if oldest is None
                             else max(0.0, (oldest + lease - now).total_seconds()))
        return len(rows)

    def _settle(self, conn: Connection, row: Any) -> None:
        run = self.store.get(row.run_id)
        node = str(row.node)
        if not run.status.finished:
            failed = self.store.mark_failed(run.id, finished_at=self.clock(),
                                            error=interrupted(node, self.lease))
            log.warning("Run interrupted: its replica stopped renewing its lease",
                        run_id=run.id, database=run.database, node=node)
            if (run.temp_path and TEMP_NAME.match(Path(run.temp_path).name)
                    and files.remove_temp(Path(run.temp_path))):
                log.info("Removed temporary file of an interrupted run", run_id=run.id,
                         file_path=run.temp_path)
            self.events.on_run_finished(failed)
        requeue(conn, self.store, self.clock, self.store.get(run.id), row, MAX_ATTEMPTS)
