"""Which verifications and restores may start: the one place the restore service and
the physical restorer share their bookkeeping.

- Nothing new starts once the service shuts down (UNAVAILABLE: retry elsewhere).
- One restore at a time into a target: a database, or a data directory. A second is
  refused before anything runs, naming the restore that holds it.
- Only a succeeded backup whose file retention has not deleted is verified, restored
  or listed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ..domain.enums import FileState, RunStatus
from ..domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from ..domain.models import Run
from ..domain.ports import RunStore

T = TypeVar("T")


class Admission:
    """Admits work, holds each restore's target while it runs, and runs work in the
    background on a pool of ``workers`` threads. Thread-safe."""

    def __init__(self, workers: int) -> None:
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore")
        self._busy: dict[str, int] = {}  # target -> restore id (0 while being recorded)
        self._closing = False

    def admit(self) -> None:
        """UNAVAILABLE once the service is shutting down."""
        with self._lock:
            if self._closing:
                raise Unavailable("the service is shutting down; retry on the next instance")

    def claim(self, key: str, label: str) -> None:
        """Hold ``key`` (a target) for a restore being recorded; FAILED_PRECONDITION,
        ``label`` first, while another restore into it runs."""
        with self._lock:
            if key in self._busy:
                raise FailedPrecondition(f"{label}: restore {self._busy[key]} into it is "
                                         "still running")
            self._busy[key] = 0

    def bind(self, key: str, restore_id: int) -> None:
        """The restore that holds ``key``, once recorded."""
        with self._lock:
            self._busy[key] = restore_id

    def release(self, key: str) -> None:
        with self._lock:
            self._busy.pop(key, None)

    def idle(self) -> bool:
        """No target is held."""
        with self._lock:
            return not self._busy

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T] | None:
        """Run ``fn`` on the pool; None when shutting down."""
        with self._lock:
            if self._closing:
                return None
            return self._pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        """Refuse new work from now on."""
        with self._lock:
            self._closing = True

    def shutdown(self) -> None:
        """Wait for the running work; what has not started is cancelled."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def succeeded_backup(store: RunStore, run_id: int, action: str) -> Run:
    """The backup ``run_id`` if it can be ``action`` (verified, restored, listed):
    INVALID_ARGUMENT for a bad id, FAILED_PRECONDITION unless it succeeded and its file
    is not deleted by retention (NOT_FOUND from the store when there is none)."""
    if run_id < 1:
        raise InvalidArgument(f"id: must be a positive backup id, got {run_id}")
    run = store.get(run_id)
    if run.status is not RunStatus.SUCCEEDED:
        raise FailedPrecondition(f"backup {run.id} is {run.status.value}; only a succeeded "
                                 f"backup can be {action}")
    if run.file_state is FileState.DELETED:
        raise FailedPrecondition(f"backup {run.id}: its file was deleted by retention")
    return run
