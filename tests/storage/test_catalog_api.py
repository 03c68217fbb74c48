"""ImportCatalog over gRPC, REST and backupctl: a new host with the same destination
lists and restores the old host's backups; importing twice records nothing twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DB, Running, drop_database, table_fingerprint

from pgbackup_client.cli import main as backupctl
from pgbackup_server.postgres.embedded import EmbeddedPostgres


def test_a_new_host_imports_lists_and_restores(
        pg: EmbeddedPostgres, tmp_path: Path, start_app: Callable[..., Running],
        capsys: pytest.CaptureFixture[str]) -> None:
    old = start_app(envoy=False, root=tmp_path / "old")
    made = old.app.store.runs.get(old.client().create_backup().backup.id)
    name = Path(made.file_path).name
    assert (old.backup_dir / f"{name}.manifest.json").is_file()  # written with the backup

    new = start_app(root=tmp_path / "new", backup={"directory": str(old.backup_dir)})
    status, body = new.rest("POST", "/api/v1/catalog:import", {"destination": "local"})
    assert status == 200, body
    assert (body["imported"], body["skipped"], body["runs_created"]) == (1, 0, 1)
    [backup] = new.client().list_backups().backups
    assert (backup.database, backup.sha256, backup.size_bytes, backup.status) == (
        made.database, made.sha256, made.size_bytes, "SUCCEEDED")

    assert backupctl(["--address", new.grpc_address, "catalog", "import",
                      "--destination", "local"]) == 0
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines()][:3] == [
        ["destination:", "local"], ["imported:", "0"], ["already", "known:", "1"]]
    assert len(new.client().list_backups().backups) == 1  # nothing recorded twice

    status, body = new.rest("POST", "/api/v1/catalog:import", {"destination": "nope"})
    assert status == 404 and "'nope' is not configured; configured: local" in body["message"]
    status, body = new.rest("POST", "/api/v1/catalog:import", {})
    assert status == 400 and "destination: required" in body["message"]
    # A private key never travels in a URL, where proxies log it.
    secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    status, body = new.rest("GET", f"/api/v1/backups/{backup.id}/contents?identity={secret}")
    assert status == 400 and "a private key never goes in a URL" in body["message"]
    assert secret not in str(body)

    target = "imported_restore"
    try:
        new.client().restore_backup(backup.id, target_database=target)
        assert table_fingerprint(pg, target) == table_fingerprint(pg, DB)
    finally:
        drop_database(pg, target)
