"""Acting from the dashboard in chromium: run a backup and watch it, verify it,
restore one table into a new database, replace a database only after typing its
name, and clean up after a dry run."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import DB, ManualClock, drop_database
from playwright.sync_api import expect
from procs import lock_orders

TARGET = "ui_restored_customers"


def test_run_watch_verify_and_restore_one_table(start_app, open_page, pg):
    stack = start_app()
    w = open_page(stack)
    page = w.open("#/")
    expect(page.get_by_role("cell", name=DB, exact=True)).to_be_visible()
    held = lock_orders(pg.admin_conninfo(DB))  # pg_dump waits: the run is seen running
    try:
        page.get_by_role("button", name="Back up now").click()
        expect(page.get_by_role("heading", name="In progress")).to_be_visible()
        expect(page.locator("h1")).to_contain_text("Running")
        expect(page.locator(".progress p")).to_contain_text("Running:")
        expect(page.locator(".progress p")).to_contain_text("of about")
    finally:
        held.close()
    expect(page.locator("h1")).to_contain_text("Succeeded", timeout=30_000)
    run_id = int(page.url.rsplit("/", 1)[1])
    run = stack.client().get_backup(run_id)
    assert run.trigger == "MANUAL" and run.status == "SUCCEEDED"
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(hashlib.sha256(Path(run.file_path).read_bytes()).hexdigest())
    expect(facts).to_contain_text(run.file_path)
    expect(facts).to_contain_text(f"pg_dump{run.pg_dump_version}")
    expect(page.get_by_role("cell", name="public.orders")).to_be_visible()

    page.get_by_role("button", name="Verify (quick)").click()
    expect(page.locator(".verify-state")).to_contain_text("Verified")
    page.get_by_role("button", name="Verify (deep)").click()
    rows = page.get_by_role("table", name="Rows restored")
    customers = int(pg.psql("SELECT count(*) FROM customers", DB))
    expect(rows.locator("tr", has_text="public.customers")).to_contain_text(
        f"{customers:,}")
    assert stack.client().get_backup(run_id).verification == "OK"
    w.shot("dashboard-backup.png")

    drop_database(pg, TARGET)
    try:
        page.get_by_label("Into database").fill(TARGET)
        page.get_by_role("checkbox", name="public.customers").check()
        page.get_by_role("button", name="Restore 1 table").click()
        expect(page.get_by_text(f"Restored into {TARGET}")).to_be_visible(timeout=30_000)
        assert int(pg.psql("SELECT count(*) FROM customers", TARGET)) == customers > 0
        assert pg.psql("SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = "
                       "'public'", TARGET).strip() == "customers"
        page.reload()
        restores = page.locator("section", has=page.get_by_role("heading", name="Restores"))
        expect(restores.locator("tbody tr")).to_have_count(1)
        expect(restores).to_contain_text(TARGET)
        expect(restores).to_contain_text("public.customers")

        # Over an existing database: only once its name is typed.
        page.get_by_label("Into database").fill(TARGET)
        page.get_by_role("checkbox", name="Replace an existing database").check()
        button = page.get_by_role("button", name=f"Replace {TARGET}")
        expect(button).to_be_disabled()
        page.get_by_label("Type the name of the database to replace").fill(TARGET[:-1])
        expect(button).to_be_disabled()
        page.get_by_label("Type the name of the database to replace").fill(TARGET)
        expect(button).to_be_enabled()
        button.click()
        expect(page.get_by_text(f"Restored into {TARGET}")).to_be_visible(timeout=30_000)
        assert pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                       TARGET).strip() == "2"
        page.goto(f"{stack.http}/#/restores")
        expect(page.locator("tbody tr")).to_have_count(2)
    finally:
        drop_database(pg, TARGET)


def test_cleanup_dry_run_then_apply(start_app, open_page):
    clock = ManualClock(datetime.now(UTC) - timedelta(days=40))
    stack = start_app(clock=clock)
    old = stack.rest("POST", "/api/v1/backup/create", {})[1]["backup"]
    clock.advance(days=40)
    new = stack.rest("POST", "/api/v1/backup/create", {})[1]["backup"]
    page = open_page(stack).open("#/cleanup")
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.get_by_text("1 file would be deleted")).to_be_visible()
    expect(page.locator("ul.files")).to_have_text(old["file_path"])
    assert Path(old["file_path"]).exists()  # a dry run deletes nothing
    page.get_by_role("button", name="Delete 1 file").click()
    expect(page.get_by_text("Deleted 1 file")).to_be_visible()
    assert not Path(old["file_path"]).exists() and Path(new["file_path"]).exists()
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.get_by_text("Nothing to delete")).to_be_visible()
