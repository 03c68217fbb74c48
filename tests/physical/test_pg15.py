"""The CI server (PostgreSQL 15 on 127.0.0.1:5432, trust, database ``test``): an
incremental is refused with the version it needs; a full physical backup works
(or, where its pg_hba.conf allows no replication, says exactly what to add)."""

from __future__ import annotations

import pytest

from pgbackup_client import FailedPrecondition
from pgbackup_server.physical.checks import read_server
from pgbackup_server.postgres.conninfo import ConnInfo

PG15 = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def pg15():
    try:
        server = read_server(ConnInfo.parse(PG15), timeout=2)
    except Exception as exc:  # noqa: BLE001 - absent: nothing to test against
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    if server.major != 15:
        pytest.skip(f"127.0.0.1:5432 is PostgreSQL {server.version}, not 15")
    return server


def test_pg15_refuses_incrementals_clearly_and_takes_full_backups(pg15, start_app):
    r = start_app(database=None, schedules=None, databases=[
        {"name": "pg15", "url": PG15, "kind": "physical"}])
    client = r.client()
    with pytest.raises(FailedPrecondition) as err:
        client.create_backup(database="pg15", type="incremental")
    assert ("incremental backups need PostgreSQL 17 or later (pg_basebackup --incremental "
            f"and WAL summaries); this server is PostgreSQL {pg15.version}") in str(err.value)
    failed = client.list_backups(database="pg15").backups[0]
    assert failed.status == "FAILED" and "PostgreSQL 17" in failed.error
    try:
        full = client.create_backup(database="pg15").backup
    except FailedPrecondition as exc:  # this host's pg_hba.conf allows no replication
        assert "add one such as \"host replication postgres" in str(exc)
        pytest.skip("127.0.0.1:5432 allows no replication connections (pg_hba.conf)")
    assert full.status == "SUCCEEDED" and full.kind == "PHYSICAL_FULL"
    assert full.server_version.startswith("15.")
    assert client.verify_backup(full.id).verification == "OK"
