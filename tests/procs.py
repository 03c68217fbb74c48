"""Helpers for tests that run backupd as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml

from pgbackup_client import BackupClient


def lock_orders(conninfo: str) -> psycopg.Connection:
    """Hold pg_dump mid-run: it waits for this lock on a table it must read."""
    conn = psycopg.connect(conninfo)
    conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    return conn


def pg_dump_pids(marker: str) -> list[int]:
    """pids of pg_dump processes whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if "pg_dump" in cmd and marker in cmd and state != "Z":
            pids.append(int(entry))
    return pids


class Backupd:
    """backupd in a subprocess, as an operator runs it."""

    def __init__(self, root: Path, cfg: dict) -> None:
        self.root = root
        self.cfg = cfg
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = root / "backupd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_address(self) -> str:
        return self.cfg["server"]["grpcAddress"]

    def start(self, timeout: float = 30) -> Backupd:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgbackup_server", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        with BackupClient(self.grpc_address, timeout=2) as client:
            while True:
                try:
                    client.get_stats()
                    return self
                except Exception:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("backupd did not start:\n" + self.log()) from None
                    time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


def wait_for(predicate, timeout: float = 30, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
