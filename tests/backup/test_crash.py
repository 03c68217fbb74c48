"""A backupd killed with SIGKILL mid-backup: after restart nothing is lost or
left behind. The dump is held mid-way for real, by a lock on a table."""

from __future__ import annotations

import signal

import psycopg
import pytest
from conftest import base_config
from procs import Backupd, pg_dump_pids, wait_for

from pgbackup_client import BackupClient
from pgbackup_server.postgres.embedded import free_port


@pytest.fixture
def locked_table(pg):
    """Hold an ACCESS EXCLUSIVE lock on orders: pg_dump blocks on it, mid-run."""
    conn = psycopg.connect(pg.admin_conninfo("shop"))
    conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    yield conn
    conn.rollback()
    conn.close()


def test_kill_9_mid_backup_then_restart(pg, tmp_path, locked_table):
    cfg = base_config(pg, tmp_path)
    cfg["server"].update(grpcAddress=f"127.0.0.1:{free_port()}",
                         httpAddress=f"127.0.0.1:{free_port()}")
    daemon = Backupd(tmp_path, cfg).start()
    marker = f"port={pg.port}"
    try:
        with BackupClient(daemon.grpc_address) as client:
            run = client.create_backup(background=True).backup
            wait_for(lambda: client.get_backup(run.id).status == "RUNNING")
            backups = tmp_path / "backups"
            temps = wait_for(lambda: [p for p in backups.iterdir() if p.name.endswith(".partial")])
            wait_for(lambda: pg_dump_pids(marker))
        assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL
        # pg_dump dies with the process that started it, not on its next write.
        wait_for(lambda: not pg_dump_pids(marker), timeout=10)
        assert temps[0].exists()  # nobody cleaned up yet
        locked_table.rollback()

        daemon.start()
        with BackupClient(daemon.grpc_address) as client:
            dead = client.get_backup(run.id)
            assert dead.status == "FAILED" and "interrupted" in dead.error
            assert not any(p.name.endswith(".partial") for p in backups.iterdir())
            assert f"Removed temporary file left by a crash    run_id={run.id}    " \
                   f"file_path={temps[0]}" in daemon.log()
            stats = client.get_stats()
            assert (stats.total_backups, stats.failed_runs, stats.succeeded_runs) == (0, 1, 0)
            fresh = client.create_backup().backup
            assert fresh.status == "SUCCEEDED"
            assert client.get_stats().total_backups == 1
    finally:
        daemon.stop()
    assert not pg_dump_pids(marker)
