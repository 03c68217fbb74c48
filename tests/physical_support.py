"""Physical-backup fixtures, registered by tests/conftest.py: a small PostgreSQL 18 of
its own for the physical tests, with WAL summaries on: a physical backup copies the
whole cluster, so the session's shared server (with every other test's databases)
would make each backup and restore slower."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
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
    import shutil

    path = Path(tempfile.mkdtemp(prefix="pgbackup-test-restore-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fetch_command() -> str:
    """restore_command's program for a restored server running as another user: the
    system Python with this checkout's packages (the venv's interpreter may sit in a
    0700 home)."""
    import sys
    import sysconfig

    import pgbackup_client

    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    paths = [sysconfig.get_paths()["purelib"], str(Path(pgbackup_client.__file__).parents[1])]
    return f"env PYTHONPATH={':'.join(paths)} {python} -m pgbackup_client.cli"
