"""Several targets: per-database schedules and retention, allDatabases with
the globals, and statistics per database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import DB, ManualClock

from pgbackup_server.domain.errors import ConfigError
from pgbackup_server.domain.models import Trigger
from pgbackup_server.settings import build_settings


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
    # The target's name is the run's database, in the API and in the file name.
    status, body = stack.rest("POST", "/api/v1/backup/create", {"database": "inv"})
    assert status == 200 and body["backup"]["database"] == "inv"
    assert Path(body["backup"]["file_path"]).name.startswith("backup_inv_")
    # The PostgreSQL name of exactly one single-database target means that target.
    status, body = stack.rest("POST", "/api/v1/backup/create", {"database": inventory})
    assert status == 200 and body["backup"]["database"] == "inv"
    status, body = stack.rest("POST", "/api/v1/backup/create", {"database": "nope"})
    assert status == 400 and "unknown target 'nope'" in body["message"]
    assert "configured: shop, inv" in body["message"]

    schedules = {s.name: s for s in client.list_schedules()}
    assert set(schedules) == {"shop-nightly", "inv-hourly"}
    stack.app.scheduler.run_now("inv-hourly")
    from procs import wait_for

    scheduled = wait_for(lambda: [b for b in client.list_backups(database="inv").backups
                                  if b.trigger == "SCHEDULE" and b.status == "SUCCEEDED"])
    assert scheduled[0].schedule == "inv-hourly" and scheduled[0].database == "inv"

    stats = stack.rest("GET", "/api/v1/backup/stats")[1]
    per_db = {d["database"]: d for d in stats["databases"]}
    assert set(per_db) == {DB, "inv"}
    assert int(per_db[DB]["total_backups"]) == 1
    assert int(per_db["inv"]["total_backups"]) == 3
    only = stack.rest("GET", "/api/v1/backup/stats?database=inv")[1]
    assert int(only["total_backups"]) == 3 and int(only["succeeded_runs"]) == 3
    listed = stack.rest("GET", "/api/v1/backups?database=inv")[1]["backups"]
    assert len(listed) == 3 and {b["database"] for b in listed} == {"inv"}
    # A name that is neither a target nor in the store: 404, never silent zeros.
    for path in ("/api/v1/backup/stats?database=inventory", "/api/v1/backups?database=nope"):
        status, body = stack.rest("GET", path)
        assert status == 404, (path, body)
        assert "database: no backups or target named" in body["message"]
        assert "configured: shop, inv" in body["message"]

    # The inventory target keeps 2 days, the shop target the global 30.
    clock.advance(days=5)
    client.create_backup(database="inv")
    client.create_backup()
    result = client.cleanup()
    assert result.deleted_files == 3
    assert all(Path(f).name.startswith("backup_inv_") for f in result.files)
    assert Path(shop.file_path).exists()

    from probes import scrape, value

    m = scrape(stack.app.metrics_port)
    assert value(m, "backup_runs_total", database="inv", status="succeeded",
                 trigger="manual") == 3
    assert value(m, "backup_runs_total", database="inv", status="succeeded",
                 trigger="schedule") == 1
    assert not [k for k in m if ("database", inventory) in k[1]]


def test_runs_recorded_under_the_database_name_are_found_by_their_target(pg, inventory,
                                                                         start_app):
    """Runs recorded before targets named the runs keep their stored database; the
    target filter still finds them."""
    stack = start_app(database=None, schedules=None, databases=[
        {"url": pg.url(DB)}, {"name": "inv", "url": pg.url(inventory)}])
    store = stack.app.store.runs
    old = store.create_run(database=inventory, target="inv", trigger=Trigger.MANUAL,
                           backup_dir=str(stack.backup_dir), queued_at=datetime.now(UTC))
    store.mark_failed(old.id, finished_at=datetime.now(UTC), error="old failure")
    new = stack.client().create_backup(database="inv").backup
    listed = stack.rest("GET", "/api/v1/backups?database=inv")[1]["backups"]
    assert [(int(b["id"]), b["database"]) for b in listed] == [(new.id, "inv"),
                                                               (old.id, inventory)]
    stats = stack.rest("GET", "/api/v1/backup/stats?database=inv")[1]
    assert (int(stats["succeeded_runs"]), int(stats["failed_runs"])) == (1, 1)
    assert int(stats["total_backups"]) == 1
    # The stored value still selects exactly those runs.
    only_old = stack.rest("GET", f"/api/v1/backups?database={inventory}")[1]["backups"]
    assert [int(b["id"]) for b in only_old] == [old.id]
    shop = stack.rest("GET", f"/api/v1/backup/stats?database={DB}")[1]
    assert int(shop.get("failed_runs", 0)) == 0 and int(shop.get("total_backups", 0)) == 0


def test_all_databases_and_globals(pg, inventory, start_app):
    stack = start_app(database=None, schedules=None, databases=[{"name": "server1",
                                                                  "url": pg.url(DB),
                                                 "allDatabases": True}])
    expected = pg.psql("SELECT datname FROM pg_database WHERE NOT datistemplate AND "
                       "datallowconn ORDER BY 1").split()
    status, body = stack.rest("POST", "/api/v1/backup/create")
    assert status == 200, body
    runs = body["backups"]
    # Each database found is <target>.<database>, in the API and in the file name.
    assert sorted(r["database"] for r in runs if not r["database"].endswith("-globals")) \
        == sorted(f"server1.{db}" for db in expected)
    assert all(Path(r["file_path"]).name.startswith(f"backup_{r['database']}_")
               for r in runs if not r["database"].endswith("-globals"))
    assert all(r["status"] == "SUCCEEDED" for r in runs)
    (globals_run,) = [r for r in runs if r["database"] == "server1-globals"]
    text = Path(globals_run["file_path"]).read_text()
    assert Path(globals_run["file_path"]).name.startswith("globals_server1_")
    assert "CREATE ROLE postgres" in text
    # The target's name selects every run of the request; one database its own runs.
    listed = stack.rest("GET", "/api/v1/backups?database=server1")[1]["backups"]
    assert len(listed) == len(runs)
    stats = stack.rest("GET", "/api/v1/backup/stats?database=server1")[1]
    assert int(stats["total_backups"]) == len(runs)
    one = stack.rest("GET", f"/api/v1/backups?database=server1.{inventory}")[1]["backups"]
    assert [b["database"] for b in one] == [f"server1.{inventory}"]
    status, _ = stack.rest("GET", f"/api/v1/backups?database={inventory}")
    assert status == 404

    # A database created later is picked up by the next run, without a restart.
    pg.psql("DROP DATABASE IF EXISTS newcomer")
    pg.create_database("newcomer")
    try:
        runs = stack.rest("POST", "/api/v1/backup/create")[1]["backups"]
        assert "server1.newcomer" in {r["database"] for r in runs}
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
        build_settings(raw, base=tmp_path, env={})
    assert needle in info.value.message
