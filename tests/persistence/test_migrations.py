"""The store's schema is managed by Alembic: a store written by backupd 0.1.0 upgrades
in place and keeps its runs, a new store is created by the migrations, the
migrations agree with the models, and a store from a newer backupd is refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.domain.models import (
    CopyState,
    FileState,
    RunKind,
    RunStatus,
    Verification,
)
from pgbackup_server.persistence import open_store
from pgbackup_server.persistence.engine import MIGRATIONS
from pgbackup_server.persistence.schema import metadata

LEGACY = Path(__file__).resolve().parents[1] / "data" / "backupd-0.1.0.sqlite3"


def head() -> str:
    """The newest revision, as Alembic sees it (never hard-coded: revisions are added)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(config).get_current_head())


def drift(store) -> list:
    """What differs between the migrated database and the models (nothing, we hope)."""
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                metadata)


def revision(store) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())


def test_a_store_of_backupd_0_1_0_upgrades_in_place_keeping_its_runs(tmp_path):
    path = tmp_path / "backupd.sqlite3"
    shutil.copy(LEGACY, path)
    with sqlite3.connect(path) as raw:  # as that release recorded a globals run
        raw.execute("INSERT INTO backup_runs (database, target, status, trigger, schedule, "
                    "backup_dir, file_path, temp_path, size_bytes, sha256, queued_at, error, "
                    "format, compression, pg_dump_version, server_version, file_state, "
                    "present, bytes_written, estimated_total_bytes, verification, "
                    "verification_reason) VALUES ('srv-globals', 'srv', 'FAILED', 'SCHEDULE', "
                    "'n', '/b', '', '', 0, '', '2026-12-01 02:00:00', 'x', '', '', '', '', "
                    "'NONE', 0, 0, 0, '', '')")
        before = raw.execute("SELECT id, database, status, file_path, size_bytes, sha256 "
                             "FROM backup_runs ORDER BY id").fetchall()
    assert len(before) == 4
    store = open_store(f"sqlite:///{path}")
    try:
        runs = [store.runs.get(row[0]) for row in before]
        assert [(r.id, r.database, r.status.value, r.file_path, r.size_bytes, r.sha256)
                for r in runs] == [tuple(row) for row in before]
        assert runs[0].verification is Verification.OK and runs[0].verified_at is not None
        assert runs[2].status is RunStatus.FAILED and "boom" in runs[2].error
        assert [r.kind for r in runs] == [RunKind.DATABASE] * 3 + [RunKind.GLOBALS]
        stats = store.runs.stats("/b")
        assert (stats.succeeded_runs, stats.failed_runs, stats.total_backups) == (2, 2, 2)
        assert stats.last_success is not None and stats.last_success.id == 2
        assert store.restores.get(1).target_database == "shop_copy"
        # Every run with a file has its copy at the default destination, "local".
        for run in runs:
            if run.file_path:
                (copy,) = run.copies
                assert (copy.destination, copy.state, copy.file_state) == (
                    "local", CopyState.SUCCEEDED, FileState.PRESENT)
                assert copy.location == run.file_path.rsplit("/", 1)[1]
                assert (copy.size_bytes, copy.sha256) == (run.size_bytes, run.sha256)
                assert copy.stored_at == run.finished_at
            else:
                assert run.copies == ()
        assert store.copies.usage()["local"].copies == 2
        assert revision(store) == head()
        assert drift(store) == []
        # Still a working store: a new run is recorded after the old ones.
        assert store.runs.list_runs(page_size=10).runs[0].id == 4
    finally:
        store.close()
    reopened = open_store(f"sqlite:///{path}")  # a second start migrates nothing
    try:
        assert revision(reopened) == head() and reopened.runs.get(1).status is RunStatus.SUCCEEDED
    finally:
        reopened.close()


def test_a_new_sqlite_store_is_made_by_the_migrations(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    try:
        assert revision(store) == head() and drift(store) == []
    finally:
        store.close()


def test_a_new_postgresql_store_is_made_by_the_migrations(pg):
    pg.psql("DROP DATABASE IF EXISTS migrations_store")
    pg.create_database("migrations_store")
    url = pg.url("migrations_store").replace("postgresql://", "postgresql+psycopg://")
    store = open_store(url)
    try:
        assert revision(store) == head() and drift(store) == []
        big = 5 * 1024**3  # a 32-bit integer column would overflow here
        from datetime import UTC, datetime

        from pgbackup_server.domain.models import Trigger

        run = store.runs.create_run(database="db", trigger=Trigger.MANUAL, backup_dir="/b",
                                    queued_at=datetime.now(UTC))
        done = store.runs.mark_succeeded(run.id, finished_at=datetime.now(UTC),
                                         file_path="/b/f", size_bytes=big, sha256="ab")
        assert done.size_bytes == big and store.runs.stats("/b").total_size_bytes == big
    finally:
        store.close()
        pg.psql("DROP DATABASE IF EXISTS migrations_store WITH (FORCE)")


def test_a_store_of_a_newer_backupd_is_refused(tmp_path):
    path = tmp_path / "newer.sqlite3"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(ConfigError) as info:
        open_store(f"sqlite:///{path}")
    assert "written by a newer backupd (schema revision 0099" in info.value.message
    assert info.value.message.startswith("store.url:")
