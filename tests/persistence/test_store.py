"""The run store: WAL, exact statistics kept in step with every write, and
fast queries with many runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgbackup_server.domain.models import FileState, RunStatus, Trigger
from pgbackup_server.persistence import SqlRunStore, open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_sqlite_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}").runs
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    store.close()


def _scratch_stats(store: SqlRunStore, database: str = ""):
    """What the stats must be, recomputed from the runs alone."""
    runs = [r for r in store.list_runs(page_size=1000).runs
            if not database or r.database == database]
    present = [r for r in runs if r.file_state is FileState.PRESENT]
    return (len(present), sum(r.size_bytes for r in present),
            sum(r.status is RunStatus.SUCCEEDED for r in runs),
            sum(r.status is RunStatus.FAILED for r in runs),
            sum(not r.status.finished for r in runs),
            sum(r.verification == "OK" for r in runs),
            sum(r.verification == "FAILED" for r in runs))


def _stats_tuple(store: SqlRunStore, database: str = ""):
    s = store.stats("/b", database=database)
    return (s.total_backups, s.total_size_bytes, s.succeeded_runs, s.failed_runs,
            s.running_runs, s.verified_backups, s.verification_failures)


def test_totals_stay_exact_through_every_transition(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}").runs
    ids = []
    for i in range(12):
        db = "a" if i % 3 else "b"
        run = store.create_run(database=db, trigger=Trigger.MANUAL, backup_dir="/b",
                               queued_at=T0 + timedelta(hours=i))
        ids.append(run.id)
        store.mark_running(run.id, started_at=T0 + timedelta(hours=i), temp_path="/b/.t",
                           format="plain", compression="none", pg_dump_version="18.6",
                           server_version="18.6")
        if i % 4 == 0:
            store.mark_failed(run.id, finished_at=T0 + timedelta(hours=i), error=f"e{i}")
        elif i != 11:  # the last one stays RUNNING
            store.mark_succeeded(run.id, finished_at=T0 + timedelta(hours=i),
                                 file_path=f"/b/f{i}", size_bytes=100 * i, sha256="0" * 64)
        assert _stats_tuple(store) == _scratch_stats(store)
    store.set_verification(ids[1], ok=True, reason="", verified_at=T0)
    store.set_verification(ids[2], ok=False, reason="sha256 mismatch", verified_at=T0)
    store.set_verification(ids[2], ok=True, reason="", verified_at=T0)
    store.set_file_state([ids[1], ids[2]], FileState.DELETED)
    store.set_file_state([ids[3]], FileState.MISSING)
    for db in ("", "a", "b"):
        assert _stats_tuple(store, db) == _scratch_stats(store, db)
    stats = store.stats("/b")
    assert stats.last_success is not None and stats.last_success.id == ids[10]
    assert stats.last_failure is not None and stats.last_failure.id == ids[8]
    assert stats.last_failure.error == "e8"
    per_db = {d.database: d for d in stats.databases}
    assert per_db["b"].last_failure is not None and per_db["b"].last_failure.id == ids[0]
    assert per_db["b"].last_success is not None and per_db["b"].last_success.id == ids[9]
    assert per_db["a"].last_success is not None and per_db["a"].last_success.id == ids[10]
    # A restart rebuilds the derived tables from the runs: same answer.
    before = _stats_tuple(store)
    store.close()
    reopened = open_store(f"sqlite:///{tmp_path / 's.db'}").runs
    assert _stats_tuple(reopened) == before
    reopened.close()


def test_stats_and_list_with_100k_runs_are_index_lookups(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}").runs
    rows = []
    for i in range(100_000):
        t = T0 + timedelta(minutes=i)
        ok = i % 10 != 0
        rows.append(dict(
            database=f"db{i % 5}", target=f"db{i % 5}",
            status="SUCCEEDED" if ok else "FAILED", trigger="SCHEDULE", schedule="s",
            backup_dir="/b", file_path=f"/b/f{i}" if ok else "", temp_path="", size_bytes=10,
            sha256="", queued_at=t, started_at=t, finished_at=t, error="" if ok else "x",
            format="plain", compression="none", pg_dump_version="", server_version="",
            file_state="PRESENT" if ok else "NONE", present=ok, bytes_written=0,
            estimated_total_bytes=0, verification="", verification_reason="",
            verified_at=None))
    store.bulk_insert(rows)
    stats = store.stats("/b")
    assert stats.total_backups == 90_000 and stats.total_size_bytes == 900_000
    assert stats.failed_runs == 10_000 and len(stats.databases) == 5
    assert stats.last_success is not None and stats.last_success.id == 100_000
    # The plans use indexes or the small derived tables, never a scan of the runs.
    with store.engine.connect() as conn:
        plans = [" ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {q}"))
                 for q in ("SELECT min(started_at) FROM backup_runs WHERE present = 1",
                           "SELECT max(started_at) FROM backup_runs WHERE database = 'db1' "
                           "AND present = 1")]
    assert all("SCAN" not in p and "INDEX" in p for p in plans), plans
    page = store.list_runs(page_size=50)
    assert len(page.runs) == 50 and page.runs[0].id == 100_000
    store.close()
