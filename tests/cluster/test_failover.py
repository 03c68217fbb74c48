"""A replica killed with SIGKILL mid-backup: its run is FAILED "interrupted" once its
lease expires, the next fire runs on another replica, no file is left counted and
no pg_dump is left behind. The dump is held mid-way for real, by a table lock."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from replicas import cluster, orphan_pg_dumps, rows, store_database, wait_for  # noqa: F401

from pgbackup_client.cli import main as backupctl

EVERY_MINUTE = [{"name": "every-minute", "cron": "* * * * *", "job": "DatabaseBackup"}]
LEASE = 4.0


def replica_lines(address: str, capsys) -> tuple[int, dict[str, list[str]]]:
    """``backupctl cluster``: its exit status and its table's rows by replica."""
    code = backupctl(["--address", address, "cluster"])
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("REPLICA"))
    return code, {line.split()[0]: line.split()[1:] for line in lines[header + 1:]}


def test_kill_9_of_the_executing_replica_fails_over_within_the_lease(pg, cluster,  # noqa: F811
                                                                      capsys):
    url, store = store_database(pg)
    lock = psycopg.connect(pg.admin_conninfo("shop"))
    lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    try:
        trio = cluster(3, store=url, database="shop", speed=20, lease=f"{LEASE:g}s",
                       schedules=EVERY_MINUTE)
        running = wait_for(lambda: rows(store, "SELECT id, node, temp_path FROM backup_runs "
                                               "WHERE status = 'RUNNING'"), timeout=30)
        run_id, node, temp = running[0]
        victim = next(r for r in trio if r.name == node)
        wait_for(lambda: Path(temp).exists())
        # backupctl cluster: every replica alive, the victim holding the run.
        code, listed = replica_lines(trio[0].grpc_address, capsys)
        assert code == 0 and set(listed) == {r.name for r in trio}
        assert listed[trio[0].name][0] == "*"  # the one that answered
        assert all("alive" in cells for cells in listed.values())
        assert str(run_id) in listed[node]
        victim.kill()
        killed_at = time.monotonic()
    finally:
        lock.rollback()
        lock.close()
    survivors = [r for r in trio if r is not victim]

    def failed() -> list:
        return rows(store, "SELECT error FROM backup_runs WHERE id = %s AND status = 'FAILED'",
                    run_id)

    error = wait_for(failed, timeout=20)[0][0]
    took = time.monotonic() - killed_at
    assert error.startswith(f"interrupted: replica {node} stopped renewing its lease"), error
    assert LEASE - 1 < took <= 15, took
    assert not orphan_pg_dumps()
    # The next fire (and the interrupted one, queued again) run on another replica.
    later = wait_for(lambda: rows(store, "SELECT id, node FROM backup_runs WHERE id > %s AND "
                                         "status = 'SUCCEEDED'", run_id), timeout=20)
    assert all(n != node and n in {r.name for r in survivors} for _, n in later)
    assert not Path(temp).exists()  # its temporary file was removed by the taker
    with survivors[0].client() as client:
        dead = client.get_backup(run_id)
        assert dead.status == "FAILED" and dead.node == node and not dead.file_path
        succeeded = "SELECT count(*) FROM backup_runs WHERE status = 'SUCCEEDED'"
        before = rows(store, succeeded)[0][0]
        stats = client.get_stats()  # the schedule goes on firing meanwhile
        assert stats.total_backups == stats.succeeded_runs
        assert before <= stats.succeeded_runs <= rows(store, succeeded)[0][0]
        view = client.get_cluster()
        listed = {n.name: n for n in view.nodes}
        assert listed[node].silent and not listed[node].run_ids
        assert not any(listed[r.name].silent for r in survivors)
    code, listed = replica_lines(survivors[0].grpc_address, capsys)
    assert code == 1 and "silent" in listed[node] and str(run_id) not in listed[node]
    # Visible to monitoring: one replica (the monitor) alerts, every one counts it.
    texts = wait_for(lambda: [t for t in (r.metrics() for r in survivors)
                              if 'backup_alerts_firing{alert="replica_silent"} 1.0' in t])
    assert len(texts) == 1
    for r in survivors:
        assert 'backup_cluster_replicas{state="silent"} 1.0' in r.metrics()
