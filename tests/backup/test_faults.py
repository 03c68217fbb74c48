"""Faults produced for real: database down mid-dump, disk full, timeout,
graceful shutdown, and a pg_dump that ignores SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import DB, ManualClock, base_config
from procs import Backupd, lock_orders, pg_dump_pids, wait_for

from pgbackup_client import BackupClient
from pgbackup_server.backup.dump import DumpProcess
from pgbackup_server.backup.plan import DumpPlan
from pgbackup_server.domain.models import NO_COMPRESSION, DumpFormat
from pgbackup_server.postgres.binaries import PgBinary
from pgbackup_server.postgres.conninfo import ConnInfo
from pgbackup_server.postgres.embedded import EmbeddedPostgres, free_port, seed_sample


@pytest.fixture
def own_pg():
    """A PostgreSQL of this test's own, so it can be stopped without harming others."""
    root = Path(tempfile.mkdtemp(prefix="pgbackup-fault-pg-"))
    server = EmbeddedPostgres(root, password="fault-pw").start()
    seed_sample(server, DB)
    yield server
    server.destroy()


def test_database_down_mid_dump(own_pg, start_app):
    stack = start_app(database={"url": own_pg.url(DB)},
                      schedules=[{"name": "hourly", "cron": "0 * * * *",
                                  "job": "DatabaseBackup"}])
    client = stack.client()
    earlier = client.create_backup().backup
    earlier_bytes = Path(earlier.file_path).read_bytes()

    lock = lock_orders(own_pg.admin_conninfo(DB))
    run = client.create_backup(background=True).backup
    wait_for(lambda: pg_dump_pids(f"port={own_pg.port}"))
    lock.close()
    own_pg.stop("immediate")  # the server goes away while pg_dump is connected
    failed = wait_for(lambda: (r := client.get_backup(run.id)).status == "FAILED" and r)
    assert "pg_dump" in failed.error
    assert any(s in failed.error for s in ("server closed the connection", "terminating",
                                           "connection"))
    assert not [p for p in stack.backup_dir.iterdir() if p.name.endswith(".partial")]
    assert Path(earlier.file_path).read_bytes() == earlier_bytes

    own_pg.start()  # same port: the next scheduled run just works
    stack.app.scheduler.run_now("hourly")
    ok = wait_for(lambda: [b for b in client.list_backups(status="SUCCEEDED").backups
                           if b.trigger == "SCHEDULE"], timeout=60)
    assert ok[0].schedule == "hourly"
    assert Path(ok[0].file_path).exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: real ENOSPC. Needs permission to mount."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full(start_app, small_disk):
    clock = ManualClock()
    backups = small_disk / "backups"
    stack = start_app(clock=clock, backup={"directory": str(backups), "retentionDays": 7,
                                           "cleanupOld": True})
    client = stack.client()
    old = [client.create_backup().backup for _ in range(2)]
    clock.advance(days=30)
    # Leave ~100 KB free: less than one backup (~350 KB).
    st = os.statvfs(small_disk)
    free = st.f_bavail * st.f_frsize
    with open(small_disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - 100_000))
    from pgbackup_client import InternalError

    with pytest.raises(InternalError) as info:
        client.create_backup()
    assert "no space left on device" in info.value.details
    (failed,) = client.list_backups(status="FAILED").backups
    assert "no space left on device" in failed.error
    assert not [p for p in backups.iterdir() if p.name.endswith(".partial")]
    # The failure did not trigger cleanup: both expired backups are still there.
    assert all(Path(b.file_path).exists() for b in old)
    assert client.get_stats().total_backups == 2


def test_timeout_kills_pg_dump(pg, start_app):
    stack = start_app(backup={"timeout": "1s"})
    lock = lock_orders(pg.admin_conninfo(DB))
    try:
        from pgbackup_client import InternalError

        with pytest.raises(InternalError) as info:
            stack.client().create_backup()
    finally:
        lock.close()
    assert "timed out after 1s (backup.timeout)" in info.value.details
    (run,) = stack.client().list_backups().backups
    assert run.status == "FAILED" and run.error.startswith("timed out after 1s")
    assert not pg_dump_pids(f"port={pg.port}")
    assert not [p for p in stack.backup_dir.iterdir() if p.name.endswith(".partial")]


def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path):
    """A child that ignores SIGTERM (and its own child) is SIGKILLed after the grace."""
    script = tmp_path / "stubborn"
    script.write_text("#!/bin/sh\ntrap '' TERM\nsleep 300 &\nwait\n")
    script.chmod(0o755)
    plan = DumpPlan(PgBinary(str(script), 99, 0), DumpFormat.PLAIN, NO_COMPRESSION, None, None,
                    ".sql")
    dump = DumpProcess(plan, ConnInfo.of({"dbname": "x"}), str(tmp_path), kill_grace=0.5)
    (tmp_path / "out").mkdir()
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            dump.run(tmp_path / "out", "backup_x", 1, timeout=0.3)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(15)
    assert not t.is_alive()
    assert "timed out after" in str(errors[0])
    assert list((tmp_path / "out").iterdir()) == []


def test_graceful_shutdown_cancels_and_records(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["server"].update(grpcAddress=f"127.0.0.1:{free_port()}",
                         httpAddress=f"127.0.0.1:{free_port()}", shutdownGrace="1s")
    daemon = Backupd(tmp_path, cfg).start()
    lock = lock_orders(pg.admin_conninfo(DB))
    try:
        with BackupClient(daemon.grpc_address) as client:
            running = client.create_backup(background=True).backup
            queued = client.create_backup(background=True).backup
            wait_for(lambda: client.get_backup(running.id).status == "RUNNING")
        children = _children(daemon.proc.pid)
        assert children, "expected Envoy and pg_dump children"
        assert daemon.kill(signal.SIGTERM) == 0
    finally:
        lock.close()
    for pid in children:
        assert not _alive(pid), f"child {pid} outlived backupd"
    assert not pg_dump_pids(f"port={pg.port}")
    daemon.start()
    try:
        with BackupClient(daemon.grpc_address) as client:
            first = client.get_backup(running.id)
            second = client.get_backup(queued.id)
    finally:
        daemon.stop()
    assert first.status == "FAILED" and "shut down" in first.error
    assert "server.shutdownGrace" in first.error
    assert second.status == "FAILED" and "before this run started" in second.error


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return False
    return state != "Z"
