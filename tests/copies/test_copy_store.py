"""The copy store: one copy per (run, destination), retried in place, read with the
runs in one query per page, and summed per destination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event

from pgbackup_server.domain.models import Copy, CopyState, FileState, Trigger
from pgbackup_server.persistence import open_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _store(tmp_path):
    return open_store(f"sqlite:///{tmp_path / 's.db'}")


def _run(store, n: int = 0):
    return store.runs.create_run(database="db", trigger=Trigger.MANUAL, backup_dir="/b",
                                 queued_at=T0 + timedelta(hours=n))


def test_a_copy_goes_pending_then_failed_then_retried_to_succeeded(tmp_path):
    store = _store(tmp_path)
    try:
        run = _run(store)
        assert store.copies.add(run.id, "s3").state is CopyState.PENDING
        failed = store.copies.mark_failed(run.id, "s3", error="s3: bucket 'x' does not exist")
        assert (failed.state, failed.error, failed.file_state) == (
            CopyState.FAILED, "s3: bucket 'x' does not exist", FileState.NONE)
        store.copies.add(run.id, "s3")  # a retry: the same row, PENDING again, no error
        assert store.copies.of_run(run.id) == (Copy(run.id, "s3", CopyState.PENDING),)
        done = store.copies.mark_succeeded(run.id, "s3", location="db/b.sql", size_bytes=7,
                                           sha256="ab", stored_at=T0)
        assert done.present and done.stored_at == T0 and done.error == ""
        assert store.runs.get(run.id).copies == (done,)
        store.copies.set_file_state(run.id, "s3", FileState.DELETED)
        assert not store.copies.get(run.id, "s3").present
        assert store.copies.present("s3") == []
    finally:
        store.close()


def test_runs_read_their_copies_in_one_query_per_page(tmp_path):
    store = _store(tmp_path)
    try:
        for n in range(30):
            run = _run(store, n)
            for dest in ("local", "s3"):
                store.copies.mark_succeeded(run.id, dest, location=f"f{n}", size_bytes=n,
                                            sha256="", stored_at=T0)
        statements: list[str] = []
        event.listen(store.engine, "before_cursor_execute",
                     lambda *args: statements.append(args[2]))
        page = store.runs.list_runs(page_size=25)
        assert [len(r.copies) for r in page.runs] == [2] * 25
        assert [c.destination for c in page.runs[0].copies] == ["local", "s3"]
        assert len([s for s in statements if "backup_copies" in s]) == 1
    finally:
        store.close()


def test_usage_counts_present_copies_per_destination_and_names_the_newest(tmp_path):
    store = _store(tmp_path)
    try:
        runs = [_run(store, n) for n in range(3)]
        for n, run in enumerate(runs):
            store.copies.mark_succeeded(run.id, "local", location=f"f{n}", size_bytes=10,
                                        sha256="", stored_at=T0 + timedelta(hours=n))
        store.copies.mark_failed(runs[2].id, "s3", error="boom")
        store.copies.mark_succeeded(runs[0].id, "s3", location="f0", size_bytes=4, sha256="",
                                    stored_at=T0)
        store.copies.set_file_state(runs[0].id, "local", FileState.DELETED)
        usage = store.copies.usage()
        assert (usage["local"].copies, usage["local"].used_bytes) == (2, 20)
        assert usage["local"].newest is not None and usage["local"].newest.run_id == runs[2].id
        assert (usage["s3"].copies, usage["s3"].used_bytes) == (1, 4)
        assert [(r.id, c.location) for r, c in store.copies.present("local")] == [
            (runs[1].id, "f1"), (runs[2].id, "f2")]
        run, _ = store.copies.present("s3")[0]
        assert {c.destination for c in run.copies} == {"local", "s3"}
        assert store.copies.find("s3", "f0") is not None and store.copies.find("s3", "x") is None
    finally:
        store.close()


def test_recording_an_imported_copy_is_idempotent(tmp_path):
    store = _store(tmp_path)
    try:
        run = _run(store)
        copy = Copy(run.id, "s3", CopyState.SUCCEEDED, "db/x.sql", 5, "ab", "", T0,
                    FileState.PRESENT)
        assert store.copies.record(copy) is True
        assert store.copies.record(copy) is False
        assert store.copies.of_run(run.id) == (copy,)
    finally:
        store.close()
