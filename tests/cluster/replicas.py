"""Helpers and fixtures for the cluster tests (imported by them): backupd replicas
as real processes sharing a PostgreSQL store, on a compressed clock they all share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from conftest import base_config

from pgbackup_client import BackupClient
from pgbackup_server.postgres.embedded import EmbeddedPostgres, free_port

HERE = Path(__file__).resolve().parent
TINY = "tiny"


def store_database(pg: EmbeddedPostgres) -> tuple[str, str]:
    """A fresh database in ``pg`` as the cluster's store: (SQLAlchemy URL, conninfo)."""
    name = f"store_{uuid.uuid4().hex[:10]}"
    pg.create_database(name)
    return (pg.url(name).replace("postgresql://", "postgresql+psycopg://"),
            pg.admin_conninfo(name))


class Replica:
    """One backupd process of the cluster."""

    def __init__(self, root: Path, cfg: dict[str, Any], clock: tuple[float, float, float]):
        self.root = root
        self.cfg = cfg
        self.clock = clock
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = root / "backupd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return str(self.cfg["cluster"]["nodeName"])

    @property
    def grpc_address(self) -> str:
        return str(self.cfg["server"]["grpcAddress"])

    def spawn(self) -> Replica:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "replica.py"), *map(repr, self.clock),
                 "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def ready(self, timeout: float = 120) -> Replica:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with BackupClient(self.grpc_address, timeout=2) as client:
            while True:
                try:
                    client.get_stats()
                    return self
                except Exception:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{self.name} did not start:\n{self.log()}") from None
                    time.sleep(0.1)

    def metrics(self) -> str:
        """This replica's /metrics text."""
        import urllib.request

        address = self.cfg["metrics"]["address"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            return response.read().decode()

    def client(self) -> BackupClient:
        return BackupClient(self.grpc_address, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:  # a stop that hangs dumps stacks; don't leak it
            self.proc.kill()
            self.proc.wait(30)


def wait_for(predicate: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(every)


def rows(conninfo: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="session")
def tiny(pg: EmbeddedPostgres) -> str:
    """A small database: dumps take a blink, so tests measure coordination."""
    pg.psql(f"DROP DATABASE IF EXISTS {TINY}")
    pg.create_database(TINY)
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text); "
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g", TINY)
    return TINY


@pytest.fixture
def cluster(pg: EmbeddedPostgres, tmp_path: Path) -> Iterator[Callable[..., list[Replica]]]:
    """Start N replicas sharing a store: ``cluster(3, speed=120, store=url, ...)``."""
    started: list[Replica] = []

    def start(n: int = 3, *, store: str, database: str = TINY, speed: float = 1.0,
              lease: str = "15s", schedules: list[dict[str, Any]] | None = None,
              backup: dict[str, Any] | None = None, max_per_server: int = 0,
              virtual_start: float | None = None, generation: int = 0,
              **sections: Any) -> list[Replica]:
        """``virtual_start``: the service time at start (epoch seconds; default now);
        ``lease``: the product's default unless a test is about losing a lease (a short
        one taken over by a replica starved of CPU under load would fence and redo a
        healthy run); ``sections``: more of config.yaml (``alerts={...}``)."""
        now = time.time()
        clock = (now, virtual_start or now, speed)
        out = []
        for i in range(n):
            root = tmp_path / f"g{generation}r{i}"
            cfg = base_config(pg, tmp_path, backup=backup or {},
                              schedules=schedules or [],
                              server={"grpcAddress": f"127.0.0.1:{free_port()}",
                                      "envoy": False, "dataDirectory": str(root / "data"),
                                      "shutdownGrace": "3s"},
                              metrics={"address": f"127.0.0.1:{free_port()}"}, **sections)
            cfg["database"] = {"url": pg.url(database)}
            cfg["store"] = {"url": store}
            cfg["log"] = {"level": "info"}
            cfg["cluster"] = {"enabled": True, "nodeName": f"node-{i}", "leaseTimeout": lease,
                              "maxPerServer": max_per_server}
            out.append(Replica(root, cfg, clock))
        started.extend(out)
        for r in out:
            r.spawn()
        for r in out:
            r.ready()
        return out

    yield start
    for r in started:
        r.stop()


class Receiver:
    """A webhook on loopback that keeps the JSON it is sent."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self, event: str) -> list[str]:
        """The statuses of the ``event`` notifications received, in order."""
        return [p["status"] for p in list(self.payloads) if p.get("event") == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def orphan_pg_dumps() -> list[int]:
    """pg_dump processes whose parent is gone (re-parented to init or a subreaper)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if b"pg_dump" in cmd and stat[0] != "Z" and int(stat[1]) == 1:
            out.append(int(entry))
    return out
