"""A cluster with a tablespace: pg_basebackup writes it as ``<oid>.tar.gz`` beside
``base.tar.gz``. The archive is summed, copied (encrypted) to the other destination,
and a restore of the chain puts the tablespace where ``tablespace_mapping`` says,
linked from the data directory, the restored server holding its rows. Where the
tablespace was is in use (the live cluster's): a restore without a mapping is refused
before anything runs, and bad mappings are refused naming the field. Deep verify
restores the tablespace into its scratch area and removes it after. A new host
imports the copies (S3) and restores the full backup alone, its tablespace fetched and
moved into place. Point-in-time recovery replays WAL into the mapped tablespace."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from physical_support import fetch_command, rows_at_three_times
from pyrage import x25519

from pgbackup_client import FailedPrecondition, InvalidArgument
from pgbackup_server.domain.errors import BackupError
from pgbackup_server.physical import tablespaces
from pgbackup_server.physical.scratch import ThrowawayServer
from pgbackup_server.postgres import embedded
from pgbackup_server.postgres.embedded import EmbeddedPostgres

SPACE = "test_space"


@pytest.fixture
def tablespace(phys_pg: EmbeddedPostgres) -> Iterator[Path]:
    """A tablespace of phys_pg in a directory of its own (owned by the server's user,
    0700), dropped afterwards whatever happened: the other physical tests back up
    the whole cluster."""
    parent = Path(tempfile.mkdtemp(prefix="pgbackup-test-tblspc-"))
    parent.chmod(0o711)
    location = parent / "live"
    location.mkdir(mode=0o700)
    if os.geteuid() == 0:
        user = pwd.getpwnam(embedded.RUN_AS)
        os.chown(location, user.pw_uid, user.pw_gid)
    phys_pg.psql(f"CREATE TABLESPACE {SPACE} LOCATION '{location}'")
    try:
        yield location
    finally:
        try:
            phys_pg.psql("DROP TABLE IF EXISTS spaced", "app")
        finally:
            phys_pg.psql(f"DROP TABLESPACE IF EXISTS {SPACE}")
            shutil.rmtree(parent, ignore_errors=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_chain_with_a_tablespace_restores_it_where_mapped(
        start_physical, phys_pg, tablespace, s3, reachable_dir, tmp_path):
    phys_pg.psql(f"CREATE TABLE spaced (i int) TABLESPACE {SPACE}; "
                 "INSERT INTO spaced SELECT generate_series(1, 100)", "app")
    oid = phys_pg.psql(f"SELECT oid FROM pg_tablespace WHERE spcname = '{SPACE}'").strip()
    identity = x25519.Identity.generate()
    bucket = s3.make_bucket()
    offsite = s3.destination("offsite", f"{bucket}/pg")
    r = start_physical(env=s3.env(), destinations=[
        {"name": "local", "url": f"file://{tmp_path / 'backups'}"}, offsite],
        encryption={"recipients": [str(identity.to_public())]})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    folder = Path(full.file_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "SHA256SUMS", "backup_manifest", "base.tar.gz", "pg_wal.tar.gz", f"{oid}.tar.gz"])
    sums = (folder / "SHA256SUMS").read_text()
    stored = s3.client().get_object(Bucket=bucket, Key=f"pg/{folder.name}/{oid}.tar.gz.age")
    plain = pyrage.decrypt(stored["Body"].read(), [identity])
    assert f"{_sha256(plain)}  {oid}.tar.gz" in sums
    phys_pg.psql("INSERT INTO spaced SELECT generate_series(101, 200); "
                 "DELETE FROM spaced WHERE i <= 10", "app")
    incr = client.create_backup(database="cluster", type="incremental").backup
    assert incr.parent_id == full.id
    assert (Path(incr.file_path) / f"{oid}.tar.gz").is_file()
    phys_pg.psql("INSERT INTO spaced SELECT generate_series(201, 300)", "app")
    live = sorted(p.relative_to(tablespace) for p in tablespace.rglob("*"))

    def leftovers() -> list[str]:
        return sorted(p.name for p in reachable_dir.iterdir())

    # Where the tablespace was is the live cluster's: refused, naming it and the fix.
    out = reachable_dir / "restored"
    with pytest.raises(FailedPrecondition) as err:
        client.restore_backup(incr.id, target_directory=str(out))
    message = str(err.value)
    assert f"tablespace {oid} of backup {incr.id} was at {tablespace}, which is not " \
        "empty" in message
    assert f"--tablespace-mapping {tablespace}=NEWDIR" in message
    assert leftovers() == [] and not client.list_restores().restores

    busy = reachable_dir / "busy"
    busy.mkdir()
    (busy / "file").write_text("not ours")
    moved = reachable_dir / "space"
    for value, says in [
            (f"relative={moved}", "'relative' in .* is not an absolute path"),
            (str(tablespace), "expected OLDDIR=NEWDIR"),
            (f"/nowhere={moved}", f"/nowhere is not a tablespace of backup {incr.id}; "
                                  f"its tablespaces: {tablespace} \\(OID {oid}\\)"),
            (f"{tablespace}={reachable_dir / 'no' / 'space'}", "has no parent directory"),
            (f"{tablespace}={busy}", f"{busy} \\(for the tablespace at .*\\) is not empty"),
            (f"{tablespace}={out / 'space'}", "overlaps target_directory")]:
        with pytest.raises(InvalidArgument, match=f"tablespace_mapping: .*{says}"):
            client.restore_backup(incr.id, target_directory=str(out),
                                  tablespace_mapping=[value])
    assert leftovers() == ["busy"] and (busy / "file").read_text() == "not ours"
    busy_before = sorted(busy.iterdir())

    restored = client.restore_backup(incr.id, target_directory=str(out),
                                     tablespace_mapping=[f"{tablespace}={moved}"])
    assert restored.status == "SUCCEEDED", restored.error
    assert leftovers() == ["busy", "restored", "space"]
    assert sorted(busy.iterdir()) == busy_before
    assert oct(moved.stat().st_mode & 0o777) == "0o700"
    assert os.readlink(out / "pg_tblspc" / oid) == str(moved)
    assert (out / "tablespace_map").read_text() == f"{oid} {moved}\n"
    binaries = r.app.service.executor.binaries
    with ThrowawayServer(out, binaries, trust_local=False) as srv:
        assert srv.psql("SELECT count(*), min(i), max(i) FROM spaced", "app").strip() \
            == "190|11|200"
        assert srv.psql(f"SELECT pg_tablespace_location(oid) FROM pg_tablespace "
                        f"WHERE spcname = '{SPACE}'").strip() == str(moved)
    assert sorted(p.relative_to(tablespace) for p in tablespace.rglob("*")) == live
    assert phys_pg.psql("SELECT count(*) FROM spaced", "app").strip() == "290"

    def scratch() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("pgbackup-verify-*"))

    before = scratch()
    deep = client.verify_backup(incr.id, deep=True)
    assert deep.verification == "OK", deep.reason
    assert any(t.table == "spaced" and t.rows == 190 for t in deep.tables)
    assert scratch() == before
    assert sorted(p.relative_to(tablespace) for p in tablespace.rglob("*")) == live

    # A new host imports the copies and restores the full backup alone: its
    # tablespace is fetched, decrypted and moved into place.
    r.app.stop()
    new = start_physical(env=s3.env(), root=tmp_path / "new-host", envoy=False,
                         destinations=[offsite])
    imported = new.client().import_catalog("offsite")
    assert imported.imported == 2 and not imported.problems, imported
    new_full = next(b for b in new.client().list_backups(database="cluster").backups
                    if b.kind == "PHYSICAL_FULL")
    again, moved_again = reachable_dir / "again", reachable_dir / "space-again"
    moved_again.mkdir(mode=0o755)  # empty: used, made private
    restored = new.client().restore_backup(
        new_full.id, target_directory=str(again), identity=str(identity),
        tablespace_mapping=[f"{tablespace}/={moved_again}"])
    assert restored.status == "SUCCEEDED", restored.error
    assert oct(moved_again.stat().st_mode & 0o777) == "0o700"
    assert os.readlink(again / "pg_tblspc" / oid) == str(moved_again)
    assert not [p for p in reachable_dir.iterdir() if p.name.startswith(".pgbackup-")]
    with ThrowawayServer(again, binaries, trust_local=False) as srv:
        assert srv.psql("SELECT count(*), max(i) FROM spaced", "app").strip() == "100|100"


def test_point_in_time_recovery_replays_into_the_mapped_tablespace(
        start_physical, phys_pg, tablespace, reachable_dir):
    """Rows inserted after the backup, at T1 < T2 < T3, into a table in a tablespace: a
    restore to a time between T2 and T3 with the tablespace mapped replays them there."""
    phys_pg.psql(f"CREATE TABLE spaced (n int) TABLESPACE {SPACE}", "app")
    r = start_physical(wal={"stream": True, "maxLag": "1m", "fetchCommand": fetch_command()})
    client = r.client()
    full = client.create_backup(database="cluster").backup
    between = rows_at_three_times(r, phys_pg, "spaced")

    out, moved = reachable_dir / "pitr", reachable_dir / "space"
    restored = client.restore_backup(full.id, target_directory=str(out), target_time=between,
                                     tablespace_mapping=[f"{tablespace}={moved}"])
    assert restored.status == "SUCCEEDED", restored.error
    assert (out / "recovery.signal").exists()
    with ThrowawayServer(out, r.app.service.executor.binaries, trust_local=False) as srv:
        srv.wait_promoted()
        assert srv.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM spaced",
                        "app").strip() == "1,2"
        assert srv.psql(f"SELECT pg_tablespace_location(oid) FROM pg_tablespace "
                        f"WHERE spcname = '{SPACE}'").strip() == str(moved)
    assert any(moved.rglob("PG_18_*"))


def test_a_failed_rebuild_removes_the_tablespace_directories_it_made(tmp_path):
    """What rebuild() calls when anything fails after it claimed the directories: those
    it made go, those that were there (empty) are emptied, nothing else is touched."""
    made, was_empty, other = tmp_path / "made", tmp_path / "was-empty", tmp_path / "other"
    was_empty.mkdir()
    other.mkdir()
    (other / "keep").write_text("not ours")
    places = {"16385": made, "16386": was_empty}
    had = tablespaces.claim(places)
    assert had == {"16386"}
    for path in places.values():
        (path / "PG_18_202506291" / "5").mkdir(parents=True, exist_ok=True)
        (path / "PG_18_202506291" / "5" / "16390").write_bytes(b"half")
    tablespaces.discard(places, had)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "was-empty"]
    assert not any(was_empty.iterdir()) and (other / "keep").read_text() == "not ours"

    (was_empty / "late").write_text("someone else's")  # between the check and the run
    with pytest.raises(BackupError, match="tablespace_mapping: .*was-empty .* no longer"):
        tablespaces.claim(places)
