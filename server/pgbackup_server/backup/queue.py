"""The run queue: ``backup.maxConcurrent`` runs per database server at once and
``backup.maxQueued`` waiting; past that, API requests get RESOURCE_EXHAUSTED.
Scheduled runs are never turned away: a skipped scheduled backup is silent loss.

One worker pool per server, so a busy server's queue never holds up another's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol, TypeVar

from ..domain.errors import BackupError, ResourceExhausted, Unavailable
from ..domain.models import CreateResult, Run, Trigger
from ..domain.ports import RunStore
from ..domain.targets import ServerKey, Targets

T = TypeVar("T")
SHUTTING_DOWN = "the service is shutting down; retry on the next instance"
NOT_STARTED = "cancelled: the service shut down before this run started"


class Queue(Protocol):
    """What the backup service needs of a queue: this module's, or the cluster's
    (``cluster/queue.py``, given through a :data:`QueueFactory`)."""

    @property
    def closing(self) -> bool: ...
    def admit(self, key: ServerKey, count: int, trigger: Trigger) -> None: ...
    def release(self, key: ServerKey, count: int) -> None: ...
    def submit(self, key: ServerKey, run_id: int, work: Callable[[], CreateResult],
               job: Any = None) -> Future[CreateResult]: ...
    def shutdown(self, grace_seconds: float, on_expired: Callable[[], None]) -> None: ...
    def unsettled(self, store: RunStore) -> list[Run]: ...


# (targets, execute(run, job)) -> the queue; execute runs a job for its recorded run.
QueueFactory = Callable[[Targets, Callable[[Run, Any], CreateResult]], Queue]


class RunQueue:
    """Admission and execution of runs, in this process. Thread-safe."""

    def __init__(self, servers: Iterable[ServerKey], *, max_concurrent: int,
                 max_queued: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._pools = {key: ThreadPoolExecutor(max_workers=max_concurrent,
                                               thread_name_prefix=f"backup-{key[0]}:{key[1]}")
                       for key in servers}
        self._lock = threading.Lock()
        self._admitted: dict[ServerKey, int] = dict.fromkeys(self._pools, 0)
        self._futures: dict[int, Future[CreateResult]] = {}
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def admit(self, key: ServerKey, count: int, trigger: Trigger) -> None:
        """Reserve ``count`` places on ``key``'s server, or refuse. A request larger than
        the queue (allDatabases) is admitted when the server is idle."""
        with self._lock:
            if self._closing:
                raise Unavailable(SHUTTING_DOWN)
            limit = self.max_concurrent + self.max_queued
            if (trigger is Trigger.MANUAL and self._admitted[key]
                    and self._admitted[key] + count > limit):
                raise ResourceExhausted(
                    f"backup queue is full: {self.max_concurrent} running and "
                    f"{self.max_queued} queued for {key[0]}:{key[1]} (backup.maxConcurrent, "
                    "backup.maxQueued); retry later")
            self._admitted[key] += count

    def release(self, key: ServerKey, count: int) -> None:
        """Give back places admitted but never submitted."""
        with self._lock:
            self._admitted[key] -= count

    def submit(self, key: ServerKey, run_id: int, work: Callable[[], CreateResult],
               job: Any = None) -> Future[CreateResult]:
        """Run ``work`` in an admitted place; UNAVAILABLE when the queue just closed."""
        try:
            future = self._pools[key].submit(work)
        except RuntimeError:  # the pool shut down after the admission
            raise Unavailable(SHUTTING_DOWN) from None
        with self._lock:
            self._futures[run_id] = future

        def forget(_future: object) -> None:
            with self._lock:
                self._admitted[key] -= 1
                self._futures.pop(run_id, None)

        future.add_done_callback(forget)
        return future

    def unsettled(self, store: RunStore) -> list[Run]:
        """Runs left unfinished at shutdown: every one (this process ran them all)."""
        return store.unfinished_runs()

    def shutdown(self, grace_seconds: float, on_expired: Callable[[], None]) -> None:
        """Admit nothing more; cancel queued runs; give running ones ``grace_seconds``,
        then ``on_expired`` (which stops them); wait for the workers."""
        with self._lock:
            self._closing = True
            futures = list(self._futures.values())
        for f in futures:
            f.cancel()  # queued runs do not start during the grace; running ones go on
        # wait() counts a cancelled future as done (Future.exception() raises on one).
        wait_futures(futures, timeout=grace_seconds)
        on_expired()
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def result(future: Future[CreateResult]) -> CreateResult:
    """The run's result; a run cancelled by the shutdown before it started is UNAVAILABLE."""
    try:
        return future.result()
    except CancelledError:
        raise Unavailable(NOT_STARTED) from None


def gather(futures: list[Future[CreateResult]]) -> CreateResult:
    """Wait for every run of a multi-database request; fail if any failed."""
    if len(futures) == 1:
        return result(futures[0])
    results: list[CreateResult] = []
    failures: list[BackupError] = []
    for future in futures:
        try:
            results.append(result(future))
        except BackupError as exc:
            failures.append(exc)
    if failures:
        raise failures[0].prefixed(f"{len(failures)} of {len(futures)} runs failed; first: ")
    return CreateResult(results[-1].run, sum(r.deleted_files for r in results),
                        tuple(r.run for r in results))
