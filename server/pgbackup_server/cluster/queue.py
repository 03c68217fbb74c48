"""The cluster's run queue: runs wait in ``run_queue`` and any replica takes them.

A replica takes runs for one database server at a time: it locks that server's row
(``FOR UPDATE SKIP LOCKED``: a replica already taking runs for it is skipped, never
waited for), counts the runs executing for it across the cluster, and takes the
oldest waiting ones (``FOR UPDATE SKIP LOCKED`` again) up to both its own free places
(``backup.maxConcurrent``) and the server's (``cluster.maxPerServer``). A taken run
is leased: :mod:`.leases` renews it and takes it over from a replica that died.

To :class:`~..backup.service.BackupService` it is the same queue as the local one
(admit, submit, shutdown); a run submitted here may execute on any replica, and the
caller's future resolves when the store says it ended.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..backup.jobs import Job
from ..domain.errors import BackupError, BackupFailed, ResourceExhausted, Unavailable
from ..domain.models import CreateResult, Run, RunKind, RunStatus, Trigger
from ..domain.ports import Clock, RunStore
from ..domain.targets import ServerKey, Targets
from ..persistence.schema import cluster_servers, run_queue, runs
from .retry import on_store

log = structlog.get_logger("pgbackup")
SHUTTING_DOWN = "the service is shutting down; retry on the next instance"
MAX_ATTEMPTS = 3  # a scheduled run interrupted this often is not queued again
Execute = Callable[[Run, Job], CreateResult]


def server_name(key: ServerKey) -> str:
    return f"{key[0]}:{key[1]}"


def job_json(job: Job) -> str:
    """What a replica needs to execute the run, by target name (every replica has the
    same configuration)."""
    return json.dumps({"directory": str(job.directory), "retention_days": job.retention_days,
                       "cleanup_old": job.cleanup_old, "target": job.target.name,
                       "database": job.database, "dbname": job.dbname,
                       "kind": job.kind.value, "dir_field": job.dir_field,
                       "requested": job.requested})


def job_from_json(text: str, targets: Targets) -> Job:
    d = json.loads(text)
    return Job(Path(d["directory"]), int(d["retention_days"]), bool(d["cleanup_old"]),
               targets.by_name[d["target"]], d["database"], d["dbname"], RunKind(d["kind"]),
               d["dir_field"], bool(d["requested"]))


def enqueue(conn: Connection, run_id: int, server: str, job: str, now: datetime,
            attempt: int = 1) -> None:
    conn.execute(insert(run_queue).values(run_id=run_id, server=server, job=job,
                                          enqueued_at=now, node=None, heartbeat_at=None,
                                          attempt=attempt))


def requeue(conn: Connection, store: RunStore, clock: Clock, run: Run, row: Any,
            max_attempts: int) -> Run | None:
    """Queue a scheduled run that was interrupted again, as a new run; a manual one is
    not (its caller got the failure), nor one interrupted ``max_attempts`` times."""
    if run.trigger is not Trigger.SCHEDULE or run.status is RunStatus.SUCCEEDED:
        return None
    attempt = int(row.attempt)
    if attempt >= max_attempts:
        log.error("Scheduled run interrupted too often; not queued again", run_id=run.id,
                  attempts=attempt)
        return None
    again = store.create_run(database=run.database, trigger=run.trigger,
                             backup_dir=run.backup_dir, queued_at=clock(),
                             schedule=run.schedule, target=run.target, kind=run.kind)
    enqueue(conn, again.id, str(row.server), str(row.job), clock(), attempt + 1)
    log.info("Interrupted scheduled run queued again", run_id=again.id,
             interrupted_run=run.id, attempt=attempt + 1)
    return again


class ClusterQueue:
    """Admission, enqueueing and this replica's share of the execution."""

    def __init__(self, engine: Engine, store: RunStore, targets: Targets, execute: Execute, *,
                 node: str, max_concurrent: int, max_queued: int, max_per_server: int,
                 clock: Clock, poll_seconds: float = 0.2) -> None:
        self.engine = engine
        self.store = store
        self.targets = targets
        self.execute = execute
        self.node = node
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_per_server = max_per_server or max_concurrent
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._servers = sorted(targets.servers())
        self._pools = {key: ThreadPoolExecutor(max_workers=max_concurrent,
                                               thread_name_prefix=f"backup-{key[0]}:{key[1]}")
                       for key in self._servers}
        self._lock = threading.Lock()
        self._local: dict[ServerKey, int] = dict.fromkeys(self._servers, 0)
        self._executing: set[int] = set()  # run ids executing here
        self._fenced: set[int] = set()  # stopped for want of a lease: queued again at the end
        self._work: dict[int, Future[None]] = {}
        self._waiting: dict[int, Future[CreateResult]] = {}  # callers on this replica
        self._closing = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- what the backup service uses -----------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        with self.engine.begin() as conn:
            for key in self._servers:
                conn.execute(pg_insert(cluster_servers).values(server=server_name(key))
                             .on_conflict_do_nothing())
        for target, name in ((self._dispatch_loop, "cluster-dispatch"),
                             (self._wait_loop, "cluster-waiters")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def admit(self, key: ServerKey, count: int, trigger: Trigger) -> None:
        """Refuse a manual request when the server's queue is full across the cluster;
        scheduled runs are never turned away."""
        if self._closing:
            raise Unavailable(SHUTTING_DOWN)
        if trigger is not Trigger.MANUAL:
            return
        with self.engine.connect() as conn:
            queued = int(conn.execute(select(func.count()).select_from(run_queue).where(
                run_queue.c.server == server_name(key))).scalar() or 0)
        limit = self.max_per_server + self.max_queued
        if queued and queued + count > limit:
            raise ResourceExhausted(
                f"backup queue is full: {queued} runs queued or running for {key[0]}:{key[1]} "
                f"across the cluster (cluster.maxPerServer, backup.maxQueued); retry later")

    def release(self, key: ServerKey, count: int) -> None:
        """Nothing to give back: a place is a row, written only by :meth:`submit`."""

    def submit(self, key: ServerKey, run_id: int, work: Callable[[], CreateResult],
               job: Job | None = None) -> Future[CreateResult]:
        """Queue the run in the store for any replica; the future ends with the run."""
        if self._closing:
            raise Unavailable(SHUTTING_DOWN)
        assert job is not None, "the cluster queue needs the job to queue it"
        future: Future[CreateResult] = Future()
        with self._lock:
            self._waiting[run_id] = future
        on_store(self._enqueue, run_id, server_name(key), job_json(job))
        self._wake.set()
        return future

    def _enqueue(self, run_id: int, server: str, job: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(run_queue.c.run_id).where(
                    run_queue.c.run_id == run_id)).first() is None:  # a retried commit
                enqueue(conn, run_id, server, job, self.clock())

    def unsettled(self, store: RunStore) -> list[Run]:
        """Runs this replica must record as cancelled at shutdown: none. Runs it did
        not start went back to the queue, for another replica."""
        return []

    def shutdown(self, grace_seconds: float, on_expired: Callable[[], None]) -> None:
        """Take nothing more; hand back runs taken but not started; give running ones
        ``grace_seconds``, then ``on_expired`` (which stops them)."""
        with self._lock:
            self._closing = True
            work = list(self._work.values())
        self._wake.set()
        for f in work:
            f.cancel()  # taken, not started: handed back below
        wait_futures(work, timeout=grace_seconds)
        on_expired()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            self._hand_back()
        except Exception:  # the store is gone: the leases expire and others take them
            log.warning("Could not hand queued runs back to the cluster", exc_info=True)
        with self._lock:
            waiting = list(self._waiting.values())
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(Unavailable("the service shut down before this run ended; "
                                            "its result is on the run (GetBackup)"))

    def _hand_back(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(run_queue).where(run_queue.c.node == self.node)
                         .values(node=None, heartbeat_at=None))

    # -- execution here -------------------------------------------------------

    def executing(self) -> set[int]:
        with self._lock:
            return set(self._executing)

    def wake(self) -> None:
        self._wake.set()

    def fenced(self, run_id: int) -> None:
        """``run_id`` is being stopped because its lease could not be kept."""
        with self._lock:
            self._fenced.add(run_id)

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._closing:
                continue
            for key in self._servers:
                with self._lock:
                    free = self.max_concurrent - self._local[key]
                if free <= 0:
                    continue
                try:
                    taken = self._take(key, free)
                except Exception as exc:  # the store is away: try again on the next poll
                    log.debug("Could not take queued runs", error=str(exc)[:200])
                    continue
                for run_id, job in taken:
                    self._start(key, run_id, job)

    def _take(self, key: ServerKey, free: int) -> list[tuple[int, str]]:
        server = server_name(key)
        with self.engine.begin() as conn:
            mine = conn.execute(select(cluster_servers.c.server)
                                .where(cluster_servers.c.server == server)
                                .with_for_update(skip_locked=True)).first()
            if mine is None:  # another replica is taking runs for this server now
                return []
            running = int(conn.execute(select(func.count()).select_from(run_queue).where(
                run_queue.c.server == server, run_queue.c.node.is_not(None))).scalar() or 0)
            n = min(free, self.max_per_server - running)
            if n <= 0:
                return []
            rows = conn.execute(select(run_queue.c.run_id, run_queue.c.job)
                                .where(run_queue.c.server == server, run_queue.c.node.is_(None))
                                .order_by(run_queue.c.run_id).limit(n)
                                .with_for_update(skip_locked=True)).all()
            ids = [int(r.run_id) for r in rows]
            if ids:
                conn.execute(update(run_queue).where(run_queue.c.run_id.in_(ids))
                             .values(node=self.node, heartbeat_at=func.now()))
                conn.execute(update(runs).where(runs.c.id.in_(ids)).values(node=self.node))
        return [(int(r.run_id), str(r.job)) for r in rows]

    def _start(self, key: ServerKey, run_id: int, job_text: str) -> None:
        with self._lock:
            self._local[key] += 1
        try:
            future = self._pools[key].submit(self._execute, key, run_id, job_text)
        except RuntimeError:  # shutting down: handed back by shutdown()
            with self._lock:
                self._local[key] -= 1
            return
        with self._lock:
            self._work[run_id] = future

        def forget(_f: object) -> None:
            with self._lock:
                self._work.pop(run_id, None)

        future.add_done_callback(forget)

    def _execute(self, key: ServerKey, run_id: int, job_text: str) -> None:
        with self._lock:
            if self._closing:  # taken just before the shutdown: handed back, not run
                self._local[key] -= 1
                return
            self._executing.add(run_id)
        outcome: CreateResult | BaseException | None = None
        try:
            run = on_store(self.store.get, run_id)
            if run.status.finished:  # settled meanwhile (taken over): nothing to do
                return
            log.info("Run taken from the cluster queue", run_id=run_id, node=self.node)
            outcome = self.execute(run, job_from_json(job_text, self.targets))
        except BaseException as exc:
            outcome = exc
        finally:
            try:  # an outcome the store could not take: recorded now, never left RUNNING
                self._settle_unrecorded(run_id, outcome)
            except Exception:  # the lease expires and a peer records it
                log.warning("Could not record a run's outcome", run_id=run_id)
            try:
                on_store(self._done, run_id)
            except Exception:  # the lease expires and the row is settled by a peer
                log.warning("Could not release a finished run's lease", run_id=run_id)
            with self._lock:
                self._executing.discard(run_id)
                self._local[key] -= 1
                waiter = self._waiting.pop(run_id, None)
            self._wake.set()
            if waiter is not None and outcome is not None and not waiter.done():
                if isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)

    def _settle_unrecorded(self, run_id: int, outcome: object) -> None:
        if outcome is None or on_store(self.store.get, run_id).status.finished:
            return
        why = f": {outcome}" if isinstance(outcome, BaseException) else ""
        on_store(self.store.mark_failed, run_id, finished_at=self.clock(),
                 error=f"interrupted: the outcome could not be recorded{why}"[:2000])
        log.error("Run outcome could not be recorded; marked interrupted", run_id=run_id)
        with self._lock:
            self._fenced.add(run_id)  # queued again like a run that lost its lease

    def _done(self, run_id: int) -> None:
        with self._lock:
            fenced = run_id in self._fenced
            self._fenced.discard(run_id)
        with self.engine.begin() as conn:
            mine = and_(run_queue.c.run_id == run_id, run_queue.c.node == self.node)
            row = conn.execute(select(run_queue).where(mine).with_for_update()).first()
            if row is None:  # taken over meanwhile: the taker settled it
                return
            if fenced:
                requeue(conn, self.store, self.clock, self.store.get(run_id), row,
                        MAX_ATTEMPTS)
            conn.execute(delete(run_queue).where(mine))

    # -- callers waiting for runs executing elsewhere -------------------------

    def _wait_loop(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                pending = [i for i, f in self._waiting.items()
                           if i not in self._executing and not f.done()]
            if not pending:
                continue
            try:
                self._settle(pending)
            except Exception:  # the store is away: ask again later
                continue

    def _settle(self, ids: Iterable[int]) -> None:
        with self.engine.connect() as conn:
            done = [int(i) for (i,) in conn.execute(select(runs.c.id).where(
                runs.c.id.in_(list(ids)),
                runs.c.status.in_([RunStatus.SUCCEEDED.value, RunStatus.FAILED.value])))]
        for run_id in done:
            run = self.store.get(run_id)
            with self._lock:
                if run_id in self._executing:
                    continue
                future = self._waiting.pop(run_id, None)
            if future is None or future.done():
                continue
            if run.status is RunStatus.SUCCEEDED:
                future.set_result(CreateResult(run))
            else:
                future.set_exception(_failure(run))


def _failure(run: Run) -> BackupError:
    return BackupFailed(run.error or "failed").prefixed(f"backup {run.id} failed: ")

