"""The chain rules, as pure functions over runs with an injected clock: a parent for
an incremental (or why it becomes full), retention that never orphans an
incremental, and WAL kept from the oldest kept backup's start on."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgbackup_server.domain import retention
from pgbackup_server.domain.models import FileState, Run, RunKind, RunStatus, Trigger
from pgbackup_server.physical import chain

T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)  # a Monday


def _run(run_id: int, day: int, parent: Run | None, lsn: int) -> Run:
    at = T0 + timedelta(days=day)
    return Run(id=run_id, database="cluster", target="cluster", status=RunStatus.SUCCEEDED,
               trigger=Trigger.SCHEDULE, backup_dir="/b", queued_at=at, started_at=at,
               finished_at=at + timedelta(minutes=5), kind=chain.kind_for(parent),
               parent_id=parent.id if parent else 0, chain=chain.chain_text(parent, run_id),
               file_state=FileState.PRESENT, file_path=f"/b/{run_id}",
               start_lsn=chain.lsn_text(lsn), timeline=1)


def weekly_fulls_daily_incrementals(days: int) -> list[Run]:
    """A full backup every Monday, an incremental on each other day."""
    runs: list[Run] = []
    segment = chain.WAL_SEGMENT_SIZE
    for day in range(days):
        now = T0 + timedelta(days=day)
        if now.weekday() == 0:
            parent = None
        else:
            choice = chain.choose_parent(runs, now=now)
            assert choice.parent is not None, choice.reason
            parent = choice.parent
        runs.append(_run(day + 1, day, parent, (day + 2) * segment))
    return runs


def test_an_incremental_builds_on_the_newest_intact_backup_or_says_why_it_is_full():
    runs = weekly_fulls_daily_incrementals(3)
    assert [r.kind for r in runs] == [RunKind.PHYSICAL_FULL] + [RunKind.PHYSICAL_INCREMENTAL] * 2
    assert runs[2].chain == "1,2,3" and runs[2].parent_id == 2
    now = T0 + timedelta(days=3)
    assert chain.choose_parent(runs, now=now).parent == runs[2]
    assert "no earlier physical backup" in chain.choose_parent([], now=now).reason
    gone = [replace(runs[0], file_state=FileState.MISSING), *runs[1:]]
    assert chain.choose_parent(gone, now=now).reason.startswith(
        "the newest backup's chain is broken (backup 1 is missing from disk)")
    failed = [*runs, replace(runs[2], id=4, status=RunStatus.FAILED)]
    assert chain.choose_parent(failed, now=now).parent == runs[2]  # failed runs are skipped
    late = chain.choose_parent(runs, now=now + timedelta(days=12))
    assert late.parent is None and "WAL summaries" in late.reason


def test_retention_over_a_year_of_chains_never_orphans_an_incremental():
    runs = weekly_fulls_daily_incrementals(365)
    by_id = {r.id: r for r in runs}
    for day in (30, 100, 365):
        now = T0 + timedelta(days=day, hours=12)
        present = [r for r in runs if r.started_at <= now]
        doomed = retention.expired(present, now=now, retention_days=12, min_keep=1)
        ids, reasons = chain.close_retention(present, {r.id for r in doomed})
        kept = [r for r in present if r.id not in ids]
        for r in kept:  # every kept backup can be restored: its whole chain is kept
            assert set(chain.chain_ids(r)) <= {k.id for k in kept}, r.chain
        for i in ids:  # a deleted full takes its incrementals with it
            assert all(r.id in ids for r in present if i in chain.chain_ids(r))
        # The oldest kept backup is the full of a chain that reaches into the window.
        oldest = min(kept, key=lambda r: r.id)
        assert oldest.kind is RunKind.PHYSICAL_FULL
        assert now - oldest.started_at < timedelta(days=12 + 7)
        assert any(reason.startswith("kept: backup") for reason in reasons.values())
    # Retention that would delete just a full backup keeps it while incrementals need it.
    ids, reasons = chain.close_retention(runs[:3], {1})
    assert ids == set() and reasons == {1: "kept: backup 2 depends on it"}
    ids, reasons = chain.close_retention(runs[:3], {1, 2, 3})
    assert ids == {1, 2, 3}
    ids, reasons = chain.close_retention(runs[:3], {1, 2})  # asked for part of a chain
    assert ids == set() and reasons[1] == reasons[2] == "kept: backup 3 depends on it"
    ids, reasons = chain.close_retention(runs[:3], {2, 3})  # its full stays, alone
    assert ids == {2, 3} and reasons == {}
    # The age rules doom a full backup whose newest incremental was doomed already.
    ids, reasons = chain.close_retention(runs[:4], {1})
    assert ids == set() and reasons == {1: "kept: backup 2 depends on it"}
    assert by_id[3].chain == "1,2,3"


def test_wal_older_than_the_oldest_kept_backup_is_deleted_and_nothing_it_needs():
    runs = weekly_fulls_daily_incrementals(10)
    names = [chain.segment_name(1, n * chain.WAL_SEGMENT_SIZE) for n in range(16)]
    names += ["00000002.history", names[-1] + ".partial"]
    kept = runs[7:]  # the second week's chain: it starts at segment 9
    doomed = chain.wal_to_delete([n + ".gz" for n in names], kept)
    assert doomed == [n + ".gz" for n in names[:9]]
    assert chain.segment_start(names[9]) == chain.lsn_value(kept[0].start_lsn)
    assert chain.wal_to_delete(names, []) == []  # no kept backup: keep the archive


def test_cleanup_keeps_a_chain_a_kept_backup_needs_and_deletes_old_wal(tmp_path):
    """The service's cleanup over recorded physical runs (a real store, real folders,
    an injected clock): a full backup whose incremental the GFS rules keep is kept,
    with the reason; a chain that goes, goes whole, and the WAL older than the oldest
    kept backup with it."""
    from pgbackup_server.backup.cleanup import Cleaner
    from pgbackup_server.backup.copy_retention import CopyRetention
    from pgbackup_server.domain.ports import Listener
    from pgbackup_server.persistence import open_store
    from pgbackup_server.physical.wal import WalArchives
    from pgbackup_server.settings import build_settings
    from pgbackup_server.storage.local import LocalDestination

    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)

    offsite = tmp_path / "offsite"
    offsite.mkdir(mode=0o700)

    def settings(keep_last: int):  # noqa: ANN202
        return build_settings({
            "databases": [{"name": "cluster", "url": "postgresql://u@127.0.0.1:1/postgres",
                           "kind": "physical", "wal": {"stream": True},
                           "retention": {"days": 3, "minKeep": 1, "keepLast": keep_last}}],
            "destinations": [{"name": "local", "url": f"file://{backups}"},
                             {"name": "offsite", "url": f"file://{offsite}"}],
            "backup": {"directory": str(backups)},
            "server": {"dataDirectory": str(tmp_path / "data")}}, base=tmp_path, env={})

    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    segment = chain.WAL_SEGMENT_SIZE
    made: list[Run] = []
    for day, parent in ((0, None), (1, 0), (2, 1), (7, None)):  # full, incr, incr, full
        at = T0 + timedelta(days=day)
        run = store.runs.create_run(database="cluster", trigger=Trigger.SCHEDULE,
                                    backup_dir=str(backups), queued_at=at, target="cluster",
                                    kind=RunKind.PHYSICAL_FULL)
        up = made[parent] if parent is not None else None
        folder = backups / f"backup_cluster_{at:%Y-%m-%d_%H-%M-%S}.{'incr' if up else 'full'}"
        folder.mkdir(mode=0o700)
        (folder / "base.tar.gz").write_bytes(b"x")
        store.runs.mark_running(run.id, started_at=at, kind=chain.kind_for(up),
                                parent_id=up.id if up else 0, chain=chain.chain_text(up, run.id))
        made.append(store.runs.mark_succeeded(
            run.id, finished_at=at, file_path=str(folder), size_bytes=1, sha256="0" * 64,
            start_lsn=chain.lsn_text((day + 2) * segment)))
        (offsite / folder.name).mkdir()  # its copy offsite: a file per file, a manifest
        (offsite / folder.name / "base.tar.gz.age").write_bytes(b"x")
        (offsite / f"{folder.name}.manifest.json").write_text("{}")
        for name in ("local", "offsite"):
            store.copies.add(run.id, name)
            store.copies.mark_succeeded(run.id, name, location=folder.name, size_bytes=1,
                                        sha256="0" * 64, stored_at=at)
    now = T0 + timedelta(days=8)

    def cleaner(keep_last: int) -> tuple[Cleaner, WalArchives]:
        s = settings(keep_last)
        wal = WalArchives(s, [], tmp_path, lambda: now)
        destinations = {"local": LocalDestination("local", backups),
                        "offsite": LocalDestination("offsite", offsite)}
        copies = CopyRetention(s, store.runs, store.copies, destinations, lambda: now)
        return Cleaner(s, store.runs, {"cluster": s.targets[0]}, Listener(), lambda: now,
                       copies, wal=wal), wal

    # keepLast 2 keeps the newest full backup and the incremental of day 2, whose chain
    # needs the full backup of day 0 and the incremental of day 1.
    result = cleaner(2)[0].cleanup(dry_run=True)
    decisions = {d.backup_id: d for d in result.decisions}
    assert [decisions[r.id].keep for r in made] == [True, True, True, True]
    assert decisions[made[0].id].reasons == (f"kept: backup {made[2].id} depends on it",)
    # keepLast 1: the first chain goes whole, and the WAL before the second full backup.
    clean, wal = cleaner(1)
    wal.directory("cluster").mkdir(parents=True)
    names = [chain.segment_name(1, n * segment) + ".gz" for n in range(12)]
    for name in names:
        (wal.directory("cluster") / name).write_bytes(b"w")
    result = clean.cleanup()
    assert result.deleted_files == 3 and os.path.isdir(made[3].file_path)
    assert not any(os.path.exists(r.file_path) for r in made[:3])
    assert sorted(p.name for p in wal.files("cluster")) == names[9:]
    # Its copies went from every destination with it, and are recorded so.
    left = sorted(p.relative_to(offsite).as_posix() for p in offsite.rglob("*") if p.is_file())
    last = Path(made[3].file_path).name
    assert left == [f"{last}.manifest.json", f"{last}/base.tar.gz.age"]
    for r in made[:3]:
        assert {c.destination: c.file_state for c in store.copies.of_run(r.id)} == {
            "local": FileState.DELETED, "offsite": FileState.DELETED}
    assert all(c.file_state is FileState.PRESENT for c in store.copies.of_run(made[3].id))
    store.close()
