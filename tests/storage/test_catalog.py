"""Manifests next to each backup: written once, read back whole, bad ones reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from s3 import S3

from pgbackup_server.domain.errors import StorageExists
from pgbackup_server.domain.models import (
    Compression,
    DumpFormat,
    Run,
    RunKind,
    RunStatus,
    Stored,
    Trigger,
)
from pgbackup_server.settings.destinations import DestinationConfig
from pgbackup_server.storage.catalog import (
    Manifest,
    manifest_for,
    read_manifests,
    write_manifest,
)
from pgbackup_server.storage.local import LocalDestination
from pgbackup_server.storage.registry import build_destination

T0 = datetime(2026, 1, 15, 14, 30, 25, tzinfo=UTC)
NAME = "backup_shop_2026-01-15_14-30-25.sql.zst.age"


def run() -> Run:
    return Run(id=7, database="shop", status=RunStatus.RUNNING, trigger=Trigger.SCHEDULE,
               backup_dir="/b", queued_at=T0, started_at=T0 + timedelta(seconds=1),
               kind=RunKind.DATABASE, schedule="nightly", target="shop",
               format=DumpFormat.PLAIN, compression=Compression.parse("zstd:3"),
               pg_dump_version="18.1", server_version="18.1", plaintext_sha256="b" * 64,
               encryption=("age1fingerprint",))


def test_manifest_says_what_the_backup_is(tmp_path: Path) -> None:
    stored = Stored(NAME, 1234, "a" * 64, etag="e-1")
    manifest = manifest_for(run(), stored, finished_at=T0 + timedelta(seconds=9))
    dest = LocalDestination("local", tmp_path)
    assert write_manifest(dest, NAME, manifest) == NAME + ".manifest.json"
    on_disk = json.loads((tmp_path / (NAME + ".manifest.json")).read_text())
    assert on_disk == {
        "tool": "pgbackup-scheduler", "format_version": 1, "tool_version": "0.1.0",
        "location": NAME, "database": "shop", "target": "shop", "kind": "DATABASE",
        "format": "plain", "compression": "zstd:3", "encryption": ["age1fingerprint"],
        "size_bytes": 1234, "sha256": "a" * 64, "plaintext_sha256": "b" * 64,
        "etag": "e-1", "server_version": "18.1", "pg_dump_version": "18.1",
        "queued_at": "2026-01-15T14:30:25+00:00", "started_at": "2026-01-15T14:30:26+00:00",
        "finished_at": "2026-01-15T14:30:34+00:00", "schedule": "nightly",
        "trigger": "SCHEDULE"}
    [read] = read_manifests(dest)
    assert read.manifest == manifest and not read.problem
    with pytest.raises(StorageExists):
        write_manifest(dest, NAME, manifest)


def test_bad_manifests_are_reported_not_fatal(tmp_path: Path) -> None:
    dest = LocalDestination("local", tmp_path)
    good = manifest_for(run(), Stored("a.sql", 1, "c" * 64), finished_at=T0)
    write_manifest(dest, "a.sql", good)
    (tmp_path / "b.sql.manifest.json").write_text("{not json")
    (tmp_path / "c.sql.manifest.json").write_bytes(
        good.to_json().replace(b'"format_version": 1', b'"format_version": 99'))
    (tmp_path / "d.sql.manifest.json").write_bytes(good.to_json())  # names a.sql
    reads = list(read_manifests(dest))
    assert [r.name for r in reads if r.manifest] == ["a.sql.manifest.json"]
    problems = [r.problem for r in reads if r.problem]
    assert problems[0].startswith("b.sql.manifest.json: not JSON")
    assert "format_version 99 is not supported" in problems[1]
    assert problems[2] == "d.sql.manifest.json: describes a.sql, not the backup next to it"
    with pytest.raises(ValueError, match="finished_at"):
        Manifest.from_json(good.to_json().replace(b'"finished_at": "2026', b'"finished_at": "x'))


def test_a_folders_manifest_lists_its_objects_as_stored(tmp_path: Path) -> None:
    """A physical backup's copy: each object (name, size, SHA-256, store checksum), so
    that a quick verify checks them without the identity; absent for a single file."""
    folder = "backup_cluster_2026-01-15_14-30-25.full"
    parts = (Stored(f"{folder}/base.tar.gz.age", 100, "a" * 64, etag='"m-1"'),
             Stored(f"{folder}/SHA256SUMS.age", 20, "b" * 64))
    manifest = manifest_for(run(), Stored(folder, 120, "c" * 64, parts=parts),
                            finished_at=T0)
    raw = json.loads(manifest.to_json())
    assert raw["files"] == [
        {"name": "base.tar.gz.age", "size": 100, "sha256": "a" * 64, "etag": '"m-1"'},
        {"name": "SHA256SUMS.age", "size": 20, "sha256": "b" * 64, "etag": ""}]
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert "files" not in json.loads(manifest_for(run(), Stored(NAME, 1, "d"),
                                                  finished_at=T0).to_json())
    raw["files"][0]["size"] = -1
    with pytest.raises(ValueError, match="files: .*size is not a count"):
        Manifest.from_json(json.dumps(raw).encode())
    raw["files"] = ["base.tar.gz.age"]
    with pytest.raises(ValueError, match=r"files: .*not a list of files"):
        Manifest.from_json(json.dumps(raw).encode())


def test_manifests_on_s3(s3: S3) -> None:
    bucket = s3.make_bucket()
    dest = build_destination(DestinationConfig.model_validate(
        s3.destination("offsite", f"{bucket}/pg")), s3.env())
    manifest = manifest_for(run(), Stored(f"shop/{NAME}", 10, "d" * 64), finished_at=T0)
    write_manifest(dest, f"shop/{NAME}", manifest)
    assert s3.keys(bucket) == [f"pg/shop/{NAME}.manifest.json"]
    [read] = read_manifests(dest)
    assert read.manifest == manifest


def test_import_rebuilds_the_run_store_idempotently(tmp_path: Path, s3: S3) -> None:
    from pgbackup_server.catalog import CatalogImporter
    from pgbackup_server.persistence import open_store

    # The old host stored one backup at two destinations, and another locally only.
    local = LocalDestination("local", tmp_path / "backups")
    bucket = s3.make_bucket()
    offsite = build_destination(DestinationConfig.model_validate(
        s3.destination("offsite", f"{bucket}/pg")), s3.env())
    for dest in (local, offsite):
        sink = dest.upload(NAME)
        sink.write(b"encrypted bytes")
        [stored] = sink.finish()
        write_manifest(dest, NAME, manifest_for(run(), stored, finished_at=T0))
    sink = local.upload("older.sql.zst")
    sink.write(b"older")
    write_manifest(local, "older.sql.zst", manifest_for(run(), sink.finish()[0],
                                                        finished_at=T0))
    write_manifest(local, "gone.sql.zst", manifest_for(run(), Stored("gone.sql.zst", 1, "f"),
                                                       finished_at=T0))
    # A new host: an empty store, the same destinations.
    store = open_store(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    try:
        importer = CatalogImporter(store.runs, store.copies,
                                   {"local": local, "offsite": offsite}, clock=lambda: T0)
        first = importer.import_catalog("local")
        assert (first.imported, first.skipped, first.runs_created) == (2, 0, 2)
        assert first.problems == ("gone.sql.zst.manifest.json: the backup gone.sql.zst is "
                                  "not there",)
        again = importer.import_catalog("local")
        assert (again.imported, again.skipped, again.runs_created) == (0, 2, 0)
        remote = importer.import_catalog("offsite")
        assert (remote.imported, remote.runs_created) == (1, 0)  # joins the same run
        runs = store.runs.list_runs().runs
        assert len(runs) == 2
        joined = store.runs.get(remote.backup_ids[0])
        assert {c.destination for c in joined.copies} == {"local", "offsite"}
        assert (joined.status, joined.database, joined.format, str(joined.compression),
                joined.encryption, joined.plaintext_sha256, joined.schedule,
                joined.finished_at) == (RunStatus.SUCCEEDED, "shop", DumpFormat.PLAIN,
                                        "zstd:3", ("age1fingerprint",), "b" * 64,
                                        "nightly", T0)
        assert joined.file_path == str(tmp_path / "backups" / NAME)
        assert joined.copy_at("offsite").location == NAME
    finally:
        store.close()


def test_an_incremental_whose_parent_is_not_there_is_reported_not_imported(
        tmp_path: Path) -> None:
    from dataclasses import replace

    from pgbackup_server.catalog import CatalogImporter
    from pgbackup_server.persistence import open_store

    local = LocalDestination("local", tmp_path / "backups")
    folder = "backup_cluster_2026-01-15_14-30-25.incr"
    sink = local.upload(f"{folder}/base.tar.gz")
    sink.write(b"changed blocks")
    [stored] = sink.finish()
    incremental = replace(run(), kind=RunKind.PHYSICAL_INCREMENTAL,
                          format=DumpFormat.DIRECTORY, start_lsn="0/5000028",
                          end_lsn="0/5000120", timeline=1)
    manifest = manifest_for(incremental, Stored(folder, stored.size, "c" * 64),
                            finished_at=T0, parent="backup_cluster_2026-01-14_14-30-25.full")
    assert json.loads(manifest.to_json())["parent"].endswith(".full")
    write_manifest(local, folder, manifest)
    store = open_store(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    try:
        result = CatalogImporter(store.runs, store.copies, {"local": local},
                                 clock=lambda: T0).import_catalog("local")
        assert (result.imported, result.runs_created) == (0, 0)
        assert result.problems == (
            f"{folder}.manifest.json: its parent backup_cluster_2026-01-14_14-30-25.full "
            "is not in this catalog; an incremental cannot be restored without it: not "
            "imported",)
        assert store.runs.list_runs().runs == ()
    finally:
        store.close()
