"""The API additions the dashboard reads, through Envoy: alerts, restores, the trigger
filter, schedules with their target and last run, and every target in the stats."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pgbackup_client import BackupClient


def _row(stack, **values):
    t = values.pop("at", datetime.now(UTC))
    row = dict(database="shop", target="shop", status="SUCCEEDED", trigger="SCHEDULE",
               schedule="nightly", backup_dir=str(stack.backup_dir), file_path="", temp_path="",
               size_bytes=10, sha256="", queued_at=t, started_at=t, finished_at=t, error="",
               format="plain", compression="none", pg_dump_version="", server_version="",
               file_state="DELETED", present=False, bytes_written=0, estimated_total_bytes=0,
               verification="", verification_reason="", verified_at=None)
    row.update(values)
    return row


def test_list_backups_filters_by_trigger_and_pages(start_app):
    stack = start_app()
    stack.app.store.runs.bulk_insert(
        [_row(stack, trigger="MANUAL" if i % 10 == 0 else "SCHEDULE",
              schedule="" if i % 10 == 0 else "nightly") for i in range(120)])
    code, page = stack.rest("GET", "/api/v1/backups?trigger=MANUAL&page_size=5")
    assert code == 200, page
    assert len(page["backups"]) == 5 and {b["trigger"] for b in page["backups"]} == {"MANUAL"}
    seen = [int(b["id"]) for b in page["backups"]]
    while page["next_page_token"]:
        code, page = stack.rest("GET", "/api/v1/backups?trigger=MANUAL&page_size=5&page_token="
                                + page["next_page_token"])
        seen += [int(b["id"]) for b in page["backups"]]
    assert len(seen) == 12 == len(set(seen)) and seen == sorted(seen, reverse=True)
    code, page = stack.rest("GET", "/api/v1/backups?trigger=SCHEDULE&status=FAILED")
    assert code == 200 and page["backups"] == []
    code, err = stack.rest("GET", "/api/v1/backups?trigger=SOMETIMES")
    assert code == 400 and "trigger" in err["message"]
    with BackupClient(stack.grpc_address) as client:
        assert len(client.list_backups(trigger="manual", page_size=100).backups) == 12


def test_alerts_restores_schedules_and_targets(start_app, pg, tmp_path):
    stack = start_app(
        databases=[{"name": "shop", "url": pg.url("shop"), "schedules": [
                       {"name": "nightly", "cron": "0 2 * * *", "job": "DatabaseBackup"}]},
                   {"name": "never", "url": pg.url("shop")}],
        database=None, schedules=None,
        scheduler={"timezone": "Asia/Jakarta"})
    code, alerts = stack.rest("GET", "/api/v1/alerts")
    assert code == 200 and alerts == {"alerts": []}

    code, body = stack.rest("POST", "/api/v1/backup/create", {"database": "shop"})
    assert code == 200, body
    backup = body["backup"]
    # A damaged file fails verification: the alert is listed with what it said.
    Path(backup["file_path"]).write_bytes(b"damaged")
    code, verify = stack.rest("POST", f"/api/v1/backups/{backup['id']}:verify", {})
    assert code == 200 and verify["verification"] == "FAILED"
    code, alerts = stack.rest("GET", "/api/v1/alerts")
    assert code == 200
    [alert] = alerts["alerts"]
    assert alert["kind"] == "VERIFICATION_FAILED" and alert["database"] == "shop"
    assert alert["run_id"] == backup["id"] and "failed verification" in alert["message"]

    # Restores: listed newest first, by backup, paged.
    code, other = stack.rest("POST", "/api/v1/backup/create", {"database": "shop"})
    good = int(other["backup"]["id"])
    restored = []
    for name in ("ui_api_r1", "ui_api_r2"):
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        code, run = stack.rest("POST", f"/api/v1/backups/{good}:restore",
                               {"target_database": name, "tables": ["customers"]})
        assert code == 200 and run["status"] == "SUCCEEDED", run
        restored.append(run["id"])
    try:
        code, page = stack.rest("GET", "/api/v1/restores?page_size=1")
        assert code == 200 and [r["id"] for r in page["restores"]] == [restored[1]]
        assert page["restores"][0]["tables"] == ["customers"]
        code, page = stack.rest("GET", "/api/v1/restores?page_size=1&page_token="
                                + page["next_page_token"])
        assert [r["id"] for r in page["restores"]] == [restored[0]]
        assert page["next_page_token"] == ""
        code, page = stack.rest("GET", f"/api/v1/restores?backup_id={backup['id']}")
        assert code == 200 and page["restores"] == []
        assert stack.rest("GET", "/api/v1/restores?backup_id=999999")[0] == 404
        code, err = stack.rest("GET", "/api/v1/restores?page_token=bogus")
        assert code == 400 and "ListRestores" in err["message"]
        assert stack.rest("GET", "/api/v1/restores?page_size=5000")[0] == 400
        with BackupClient(stack.grpc_address) as client:
            assert [r.id for r in client.list_restores(backup_id=good).restores] == \
                [int(i) for i in restored[::-1]]
            assert client.list_alerts()[0].kind == "VERIFICATION_FAILED"
    finally:
        for name in ("ui_api_r1", "ui_api_r2"):
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # Schedules: their target, and their last run once they ran.
    code, schedules = stack.rest("GET", "/api/v1/schedules")
    [nightly] = schedules["schedules"]
    assert nightly["target"] == "shop" and "last_run" not in nightly
    stack.app.service.run_scheduled("nightly", "shop")
    code, schedules = stack.rest("GET", "/api/v1/schedules")
    [nightly] = schedules["schedules"]
    assert nightly["last_run"]["status"] == "SUCCEEDED"
    assert nightly["last_run"]["schedule"] == "nightly"

    # Stats: every target, the one that never ran too.
    code, stats = stack.rest("GET", "/api/v1/backup/stats")
    assert {t["name"]: t["databases"] for t in stats["targets"]} == {
        "shop": ["shop"], "never": []}
