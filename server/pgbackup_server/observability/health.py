"""Health: is the service able to do its job right now? Every few seconds the run
store must answer a query and the backup directory must take a file; a change is
reported through ``set_serving`` (gRPC health and ``backup_healthy``).
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..domain.ports import RunStore

log = structlog.get_logger("pgbackup")

HEALTH_INTERVAL_SECONDS = 5.0
STORE_TIMEOUT_SECONDS = 10.0
PROBE_PREFIX = ".backupd-health-"


@dataclass(frozen=True, slots=True)
class HealthReport:
    serving: bool
    problems: tuple[str, ...] = ()


def directory_problem(directory: Path) -> str | None:
    """Why backups cannot be written to ``directory`` now, or None. A directory
    that does not exist yet is fine if it can be created (probed in the nearest
    existing parent)."""
    target = directory
    while True:
        try:
            st = os.stat(target)
            break
        except FileNotFoundError:
            if target == target.parent:
                return f"backup directory {directory}: no existing parent"
            target = target.parent
        except OSError as exc:
            return f"backup directory {directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        what = directory if target == directory else f"{target} (parent of {directory})"
        return f"backup directory {what} is not a directory"
    # Create, write and delete a file: the only test that covers permissions,
    # read-only mounts, immutable flags, full disks and quotas alike, even as root.
    probe = target / f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        return f"backup directory {target} is not writable: {exc.strerror or exc}"
    try:
        os.write(fd, b"x")
    except OSError as exc:
        return f"backup directory {target} cannot take data: {exc.strerror or exc}"
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass
    return None


class HealthMonitor:
    """Checks the store and the backup directory; calls ``set_serving`` on changes."""

    def __init__(self, store: RunStore, directory: Path, set_serving: Callable[[bool], None],
                 *, interval: float = HEALTH_INTERVAL_SECONDS,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.store = store
        self.directory = directory
        self.set_serving = set_serving
        self.interval = interval
        self.on_change = on_change
        self.last: HealthReport | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_probe: threading.Thread | None = None

    def check(self) -> HealthReport:
        """Check now; report a change through ``set_serving``."""
        with self._lock:
            problems = [p for p in (self._store_problem(), directory_problem(self.directory))
                        if p]
            report = HealthReport(not problems, tuple(problems))
            changed = self.last is None or report.serving != self.last.serving
            previous, self.last = self.last, report
            if not changed:
                if report.serving is False and previous and previous.problems != report.problems:
                    log.error("Still not serving", problems=list(report.problems))
                return report
            if report.serving:
                log.info("Health: SERVING" + (" again" if previous else ""))
            else:
                log.error("Health: NOT_SERVING", problems=list(report.problems))
            for hook in (self.set_serving, self.on_change):
                if hook is None:
                    continue
                try:
                    hook(report.serving)
                except Exception:
                    log.exception("Health status hook failed")
            return report

    def _store_problem(self) -> str | None:
        if self._store_probe is not None and self._store_probe.is_alive():
            return "run store: an earlier query has not answered yet"
        error: list[str] = []

        def query() -> None:
            try:
                self.store.list_runs(page_size=1)
            except Exception as exc:
                error.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

        # In a thread: a hung database must report NOT_SERVING, not hang the monitor.
        self._store_probe = threading.Thread(target=query, daemon=True, name="health-store")
        self._store_probe.start()
        self._store_probe.join(STORE_TIMEOUT_SECONDS)
        if self._store_probe.is_alive():
            return f"run store: no answer within {STORE_TIMEOUT_SECONDS:g} s"
        return f"run store unusable: {error[0]}" if error else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="health")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                log.exception("Health check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STORE_TIMEOUT_SECONDS + 5)
