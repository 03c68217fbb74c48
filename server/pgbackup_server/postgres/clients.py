"""Running libpq client programs (pg_dump, pg_restore, psql, ...) safely.

- The password reaches them only through a private passfile (never argv, never
  the environment's PGPASSWORD), removed after the run.
- They die with the thread that started them (``setpriv --pdeathsig KILL``): a
  killed backupd never leaves one behind. A Python ``preexec_fn`` would do the
  same but crashes children of a threaded gRPC process.
- They run in their own process group, so a stop reaches their children too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from .conninfo import ConnInfo

_PREFIX: list[str] | None = None


def death_signal_prefix() -> list[str]:
    """The argv prefix that makes a child die with the thread that started it (that
    thread waits for it), or nothing where setpriv is missing: the child then still
    dies on its next write to a closed pipe."""
    global _PREFIX
    if _PREFIX is None:
        setpriv = shutil.which("setpriv")
        ok = setpriv is not None and subprocess.run(
            [setpriv, "--pdeathsig", "KILL", "true"], capture_output=True,
            check=False).returncode == 0
        _PREFIX = [str(setpriv), "--pdeathsig", "KILL", "--"] if ok else []
    return _PREFIX


def write_passfile(password: str, directory: str) -> str:
    """A private libpq passfile holding ``password`` for any host."""
    fd, path = tempfile.mkstemp(prefix="pgpass-", dir=directory)
    # libpq wants \\ and : escaped; the wildcards keep the file valid for any host.
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(f"*:*:*:*:{escaped}\n")
    return path


@contextmanager
def client_env(conninfo: ConnInfo, runtime_dir: str) -> Iterator[dict[str, str]]:
    """The environment for a client of ``conninfo``: its password in a private
    passfile for the duration of the block. Without a password in the URL, the
    operator's own PGPASSWORD / PGPASSFILE / ~/.pgpass apply."""
    env = dict(os.environ)
    passfile = None
    if conninfo.password:
        passfile = write_passfile(conninfo.password, runtime_dir)
        env["PGPASSFILE"] = passfile
        env.pop("PGPASSWORD", None)
    try:
        yield env
    finally:
        if passfile:
            try:
                os.unlink(passfile)
            except FileNotFoundError:
                pass


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's whole process group (pg_dump -j has workers)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to ``proc``'s process group now, SIGKILL if it is still there after
    ``grace`` seconds (from a daemon thread: the caller does not wait)."""
    if proc.poll() is not None:
        return
    signal_group(proc, signal.SIGTERM)

    def kill_later() -> None:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)

    threading.Thread(target=kill_later, daemon=True).start()


class StoppableChild:
    """Holds one child process that another thread may stop; the first reason given
    is kept (``_stop_reason``) so the run can say why it ended. Subclasses set
    ``_proc`` under ``_lock`` when they start the child."""

    def __init__(self, kill_grace: float) -> None:
        self.kill_grace = kill_grace
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_reason: str | None = None
        self._lock = threading.Lock()

    def stop(self, reason: str) -> None:
        """Terminate the whole process group: SIGTERM, then SIGKILL after a grace."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            proc = self._proc
        if proc is not None:
            terminate_group(proc, self.kill_grace)


class StderrTail:
    """The last lines a child wrote to stderr, read on a thread so it never blocks."""

    def __init__(self, stream: IO[bytes], lines: int = 64) -> None:
        self.lines: deque[bytes] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.lines.append(line)
        stream.close()

    def text(self, limit: int = 4000) -> str:
        """What was read, up to the last ``limit`` characters (join first)."""
        self._thread.join(5)
        return b"".join(self.lines).decode("utf-8", "replace")[-limit:]
