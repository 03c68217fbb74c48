"""Several targets: per-database schedules and retention, allDatabases with
the globals, and statistics per database."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DB, ManualClock

from pgbackup_server.config import build_config
from pgbackup_server.errors import ConfigError


@pytest.fixture(scope="module")
def inventory(pg):
    pg.psql("DROP DATABASE IF EXISTS inventory")
    pg.create_database("inventory")
    pg.psql("CREATE TABLE items (id int PRIMARY KEY, name text); "
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g",
            "inventory")
    yield "inventory"
    pg.psql('DROP DATABASE IF EXISTS inventory WITH (FORCE)')


def test_two_targets_with_their_own_schedules_and_retention(pg, inventory, start_app):
    clock = ManualClock()
    stack = start_app(clock=clock, database=None, schedules=None, databases=[
        {"url": pg.url(DB), "schedules": [{"name": "shop-nightly", "cron": "0 2 * * *",
                                           "job": "DatabaseBackup"}]},
        {"name": "inv", "url": pg.url(inventory), "retentionDays": 2,
         "schedules": [{"name": "inv-hourly", "cron": "0 * * * *", "job": "DatabaseBackup"}]},
    ], backup={"retentionDays": 30})
    client = stack.client()
    shop = client.create_backup().backup  # the first target by default
    assert shop.database == DB
    status, body = stack.rest("POST", "/api/v1/backup/create", {"database": "inv"})
    assert status == 200 and body["backup"]["database"] == inventory
    assert Path(body["backup"]["file_path"]).name.startswith("backup_inventory_")
    status, body = stack.rest("POST", "/api/v1/backup/create", {"database": "nope"})
    assert status == 400 and "unknown target 'nope'" in body["message"]

    schedules = {s.name: s for s in client.list_schedules()}
    assert set(schedules) == {"shop-nightly", "inv-hourly"}
    stack.app.scheduler.run_now("inv-hourly")
    from procs import wait_for

    scheduled = wait_for(lambda: [b for b in client.list_backups(database=inventory).backups
                                  if b.trigger == "SCHEDULE" and b.status == "SUCCEEDED"])
    assert scheduled[0].schedule == "inv-hourly"

    stats = stack.rest("GET", "/api/v1/backup/stats")[1]
    per_db = {d["database"]: d for d in stats["databases"]}
    assert int(per_db[DB]["total_backups"]) == 1
    assert int(per_db[inventory]["total_backups"]) == 2
    only = stack.rest("GET", f"/api/v1/backup/stats?database={inventory}")[1]
    assert int(only["total_backups"]) == 2 and int(only["succeeded_runs"]) == 2

    # The inventory target keeps 2 days, the shop target the global 30.
    clock.advance(days=5)
    client.create_backup(database="inv")
    client.create_backup()
    result = client.cleanup()
    assert result.deleted_files == 2
    assert all(inventory in Path(f).name for f in result.files)
    assert Path(shop.file_path).exists()


def test_all_databases_and_globals(pg, inventory, start_app):
    stack = start_app(database=None, schedules=None, databases=[{"name": "server1",
                                                                  "url": pg.url(DB),
                                                 "allDatabases": True}])
    expected = pg.psql("SELECT datname FROM pg_database WHERE NOT datistemplate AND "
                       "datallowconn ORDER BY 1").split()
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 200, body
    runs = body["backups"]
    assert sorted(r["database"] for r in runs if not r["database"].endswith("-globals")) \
        == sorted(expected)
    assert all(r["status"] == "SUCCEEDED" for r in runs)
    (globals_run,) = [r for r in runs if r["database"] == "server1-globals"]
    text = Path(globals_run["file_path"]).read_text()
    assert Path(globals_run["file_path"]).name.startswith("globals_server1_")
    assert "CREATE ROLE postgres" in text

    # A database created later is picked up by the next run, without a restart.
    pg.psql("DROP DATABASE IF EXISTS newcomer")
    pg.create_database("newcomer")
    try:
        runs = stack.rest("POST", "/api/v1/backup/create")[1]["backups"]
        assert "newcomer" in {r["database"] for r in runs}
    finally:
        pg.psql("DROP DATABASE IF EXISTS newcomer WITH (FORCE)")


@pytest.mark.parametrize(("raw", "needle"), [
    ({"databases": []}, "databases: expected a non-empty list"),
    ({"databases": [{"name": "a"}]}, "databases[0].url: required"),
    ({"databases": [{"url": "postgresql://h/x", "name": "a"},
                    {"url": "postgresql://h/y", "name": "a"}]}, 'databases[1].name: "a" is used'),
    ({"databases": [{"url": "postgresql://h/x"}], "schedules": []},
     "put each schedule under databases[i].schedules"),
    ({"databases": [{"url": "postgresql://h/x", "retentionDays": 0}]},
     "databases[0].retentionDays: expected an integer >= 1"),
    ({"databases": [{"url": "postgresql://h/x", "schedules": [{"cron": "bad",
                                                              "job": "DatabaseBackup"}]}]},
     "databases[0].schedules[0].cron: invalid cron expression"),
    ({"database": {"url": "postgresql://h/x"}, "databases": [{"url": "postgresql://h/y"}]},
     "use either database: (one) or databases:"),
])
def test_databases_config_errors(raw, needle, tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config(raw, base=tmp_path, env={})
    assert needle in info.value.message
