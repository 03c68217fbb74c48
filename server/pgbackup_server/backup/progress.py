"""Progress of running backups: bytes produced, persisted now and then, and the
snapshots WatchBackup streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from ..domain.models import Progress, Run, RunStatus
from ..domain.ports import Clock, RunStore


class ProgressTracker:
    """(bytes produced, estimated total) of each running run. Thread-safe."""

    def __init__(self, store: RunStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._progress: dict[int, tuple[int, int]] = {}  # run id -> (bytes, estimate)

    def recorder(self, run_id: int, estimate: int) -> Callable[[int], None]:
        """Track bytes produced; persist at most once a second (cheap, and enough
        for GetBackup and WatchBackup)."""
        last_saved = [0.0]

        def record(seen: int) -> None:
            total = max(estimate, seen)
            with self._lock:
                self._progress[run_id] = (seen, total)
            now = time.monotonic()
            if now - last_saved[0] >= 1.0:
                last_saved[0] = now
                self.store.set_progress(run_id, bytes_written=seen, estimated_total_bytes=total)

        with self._lock:
            self._progress[run_id] = (0, estimate)
        return record

    def forget(self, run_id: int) -> None:
        """The run ended: stop tracking it."""
        with self._lock:
            self._progress.pop(run_id, None)

    def current(self, run_id: int) -> tuple[int, int]:
        """(bytes produced so far, estimated total) of a running run; (0, 0) otherwise."""
        with self._lock:
            return self._progress.get(run_id, (0, 0))

    def _seen(self, run: Run) -> tuple[int, int]:
        """Progress of a run executing here; of one executing on another cluster
        replica, what it persisted in the store."""
        with self._lock:
            local = self._progress.get(run.id)
        return local if local is not None else (run.bytes_written, run.estimated_total_bytes)

    def watch(self, run: Run, *, interval: float = 0.5,
              cancelled: Callable[[], bool] = lambda: False) -> Iterator[Progress]:
        """Progress snapshots of ``run`` until it ends; the last one carries the run."""
        run_id = run.id
        last: tuple[RunStatus, int] | None = None
        while True:
            if run.status.finished:
                yield self.snapshot(run, run.bytes_written, run.estimated_total_bytes, run)
                return
            seen, total = self._seen(run)
            if (run.status, seen) != last:  # send only what changed
                last = (run.status, seen)
                yield self.snapshot(run, seen, total)
            if cancelled():
                return
            time.sleep(interval)
            run = self.store.get(run_id)

    def snapshot(self, run: Run, seen: int, total: int, final: Run | None = None) -> Progress:
        end = run.finished_at or self.clock()
        elapsed = max(0.0, (end - run.started_at).total_seconds()) if run.started_at else 0.0
        return Progress(id=run.id, status=run.status, bytes_written=seen,
                        estimated_total_bytes=max(total, seen), elapsed_seconds=elapsed,
                        bytes_per_second=seen / elapsed if elapsed > 0 else 0.0, run=final)

