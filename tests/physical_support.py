"""Physical-backup fixtures, registered by tests/conftest.py: a small PostgreSQL 18 of
its own for the physical tests, with WAL summaries on: a physical backup copies the
whole cluster, so the session's shared server (with every other test's databases)
would make each backup and restore slower."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pgbackup_server.postgres.embedded import EmbeddedPostgres

PASSWORD = "ph-Pa55:word"


@pytest.fixture(scope="session")
def phys_pg() -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-phys-"))
    server = EmbeddedPostgres(root, password=PASSWORD).start()
    server.psql("ALTER SYSTEM SET summarize_wal = on")
    server.psql("SELECT pg_reload_conf()")
    server.create_database("app")
    yield server
    server.destroy()


@pytest.fixture
def start_physical(start_app: Callable[..., Any], phys_pg: EmbeddedPostgres,
                   tmp_path: Path) -> Callable[..., Any]:
    """backupd with one physical target ``cluster`` on phys_pg."""

    def start(*, wal: dict[str, Any] | None = None, **overrides: Any) -> Any:
        target: dict[str, Any] = {"name": "cluster", "url": phys_pg.url("postgres"),
                                  "kind": "physical"}
        if wal is not None:
            target["wal"] = wal
        return start_app(database=None, schedules=None, databases=[target], **overrides)

    return start


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory the restored server's user can reach (as root the server runs as
    embedded_postgres, and pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="pgbackup-test-restore-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fetch_command() -> str:
    """restore_command's program for a restored server running as another user: the
    system Python with this checkout's packages. As root the server runs as
    ``embedded_postgres``, which cannot enter a checkout or venv in a 0700 home: the
    packages the CLI imports are then copied once into a directory it can read."""
    import sys
    import sysconfig

    import pgbackup_client

    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    paths = [sysconfig.get_paths()["purelib"], str(Path(pgbackup_client.__file__).parents[1])]
    if os.geteuid() == 0 and not all(_others_can_read(Path(p)) for p in paths):
        paths = [str(_packages_for_others(paths))]
    return f"env PYTHONPATH={':'.join(paths)} {python} -m pgbackup_client.cli"


def _others_can_read(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` (every parent o+x)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


_SHARED: list[Path] = []


def _packages_for_others(paths: list[str]) -> Path:
    """Copy the top-level packages the CLI imports (from ``paths``) into a directory
    under /var/tmp that every user may read; removed at exit."""
    import atexit
    import subprocess
    import sys

    if _SHARED:
        return _SHARED[0]
    files = subprocess.run(
        [sys.executable, "-c", "import sys, pgbackup_client.cli\n"
         "print('\\n'.join(m.__file__ for m in list(sys.modules.values())"
         " if getattr(m, '__file__', None)))"],
        capture_output=True, text=True, check=True).stdout.split()
    roots = [Path(p) for p in paths]
    tops = {(root, Path(f).relative_to(root).parts[0]) for f in files for root in roots
            if Path(f).is_relative_to(root)}
    target = Path(tempfile.mkdtemp(prefix="pgbackup-test-fetch-", dir="/var/tmp"))
    target.chmod(0o755)
    for root, name in sorted(tops):
        source = root / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / name)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    atexit.register(shutil.rmtree, target, True)
    _SHARED.append(target)
    return target


def rows_at_three_times(r: Any, pg: EmbeddedPostgres, table: str) -> datetime:
    """Insert 1, 2 and 3 into ``table`` (of database app) at T1 < T2 < T3, switch WAL
    and wait until ``r``'s archive holds the segment; a time between T2 and T3."""
    pg.psql(f"INSERT INTO {table} VALUES (1)", "app")  # T1
    pg.psql(f"INSERT INTO {table} VALUES (2)", "app")  # T2
    between = datetime.fromisoformat(pg.psql("SELECT clock_timestamp()").strip())
    pg.psql(f"INSERT INTO {table} VALUES (3)", "app")  # T3
    segment = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
    pg.psql("SELECT pg_switch_wal()")
    wal = r.app.service.wal
    deadline = time.monotonic() + 30.0
    while not any(p.name.startswith(segment) and not p.name.endswith(".partial")
                  for p in wal.files("cluster")):
        assert time.monotonic() < deadline, f"segment {segment} never archived: " \
            f"{wal.status()}"
        time.sleep(0.1)
    return between
