"""The dashboard's pages in chromium: the token wall, the overview, schedules,
filters and paging, hostile values, a phone in dark mode, the keyboard."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

from conftest import DB
from playwright.sync_api import expect
from ui_support import TZ, XSS, run_row

TOKEN = "ui-token-" + "z" * 32
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()


def test_token_wall_shows_only_the_login_until_a_token_works(start_app, open_page):
    stack = start_app(auth={"tokenSha256": [DIGEST]})
    w = open_page(stack)
    page = w.open("#/backups")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    for route in ("#/", "#/schedules", "#/backups/1", "#/restores", "#/cleanup"):
        page.goto(f"{stack.http}/{route}")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        assert page.locator("main table, #nav a").count() == 0
    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("That token was refused.")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    # The page asked for, once the token works.
    expect(page.get_by_role("heading", name="Cleanup")).to_be_visible()
    # Kept for this browser session only, never in localStorage or a cookie.
    assert page.evaluate("sessionStorage.getItem('pgbackup.token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("cell", name=DB, exact=True)).to_be_visible()
    # Another browser session starts at the wall again.
    other = open_page(stack).open("#/")
    expect(other.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_overview_alerts_schedules_and_local_times(start_app, open_page, pg):
    stack = start_app(
        databases=[{"name": DB, "url": pg.url(DB), "schedules": [
            {"name": "nightly", "cron": "0 2 * * *", "job": "DatabaseBackup"},
            {"name": "mondays", "cron": "30 4 * * 1", "job": "DatabaseBackup"}]},
            {"name": "spare", "url": pg.url(DB)}],
        database=None, schedules=None, scheduler={"timezone": TZ})
    # 120 days of nightly history (files long gone), 88 of them within the chart's 90 days.
    now = datetime.now(UTC)
    stack.app.store.runs.bulk_insert([run_row(
        stack, at=now - timedelta(days=d, hours=3), size_bytes=300_000 + (120 - d) * 900,
        finished_at=now - timedelta(days=d, hours=3) + timedelta(seconds=0.2 + d % 7 / 10))
        for d in [*range(120, 90, -1), *range(89, 1, -1)]])
    ok = [stack.rest("POST", "/api/v1/backup/create", {"database": DB})[1]["backup"]
          for _ in range(2)]
    # A damaged newest backup: its verification fails and the alert fires.
    with open(ok[1]["file_path"], "ab") as f:
        f.write(b"tampered")
    assert stack.rest("POST", f"/api/v1/backups/{ok[1]['id']}:verify", {})[1][
        "verification"] == "FAILED"
    stack.app.service.run_scheduled("nightly", DB)
    w = open_page(stack)
    page = w.open("#/")
    alerts = page.get_by_role("region", name="Open alerts")
    expect(alerts).to_contain_text("Verification failed: shop")
    expect(alerts).to_contain_text(f"Backup {ok[1]['id']} of shop failed verification")
    # Alerts come first, in red.
    box = page.locator("section.alerts")
    assert box.evaluate("e => getComputedStyle(e).borderTopColor") == "rgb(179, 38, 30)"
    assert page.evaluate("""() => {
        const a = document.querySelector('section.alerts'), t = document.querySelector('table');
        return !!(a.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING); }""")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    shop, spare = rows.nth(0), rows.nth(1)
    expect(shop).to_contain_text("Succeeded")
    expect(shop).to_contain_text("local ✓")
    expect(shop.locator("svg[role=img] rect.bar")).to_have_count(88 + 3)
    expect(shop.locator("svg[role=img]")).to_have_attribute(
        "aria-label", re.compile(r"^91 backups in 90 days; size \d+ KB–\d+ KB; duration "))
    expect(spare).to_contain_text("never")
    expect(spare).to_contain_text("not scheduled")
    # Next run in the browser's timezone (Jakarta, UTC+7), UTC on hover.
    nxt = shop.locator("td").nth(2).locator("time")
    when = datetime.fromisoformat(nxt.get_attribute("datetime").replace("Z", "+00:00"))
    local = when + timedelta(hours=7)
    assert local.hour in (2, 4) and local.minute in (0, 30)
    assert nxt.get_attribute("title") == when.strftime("%Y-%m-%d %H:%M:%S UTC")
    expect(nxt).to_contain_text(f"{local.hour:02d}:{local.minute:02d}")
    w.shot("dashboard-overview.png")

    page.get_by_role("link", name="Schedules").click()
    nightly = page.locator("tr", has_text="nightly")
    expect(nightly).to_contain_text(f"every day at 02:00 {TZ}")
    expect(nightly).to_contain_text("Succeeded")
    expect(page.locator("tr", has_text="mondays")).to_contain_text(
        f"every Monday at 04:30 {TZ}")
    expect(page.locator("tr", has_text="mondays")).to_contain_text("never ran")


def test_filters_and_paging(start_app, open_page):
    stack = start_app()
    t0 = datetime.now(UTC) - timedelta(days=1)
    stack.app.store.runs.bulk_insert([run_row(
        stack, at=t0 + timedelta(minutes=i), trigger="MANUAL" if i % 2 else "SCHEDULE",
        schedule="" if i % 2 else "nightly", status="FAILED" if i % 3 == 0 else "SUCCEEDED",
        error="boom" if i % 3 == 0 else "") for i in range(360)])
    page = open_page(stack).open("#/backups")
    expect(page.locator("tbody tr")).to_have_count(50)
    page.get_by_label("Trigger").select_option("MANUAL")
    page.get_by_label("State").select_option("SUCCEEDED")
    seen: list[str] = []
    for n in range(1, 4):
        expect(page.get_by_text(f"Page {n}", exact=True)).to_be_visible()
        rows = page.locator("tbody tr")
        expect(rows.first).to_contain_text("manual")
        for text in rows.all_inner_texts():
            assert "manual" in text and "Succeeded" in text and "schedule" not in text
            seen.append(text.split()[0])
        if n < 3:
            page.get_by_role("button", name="Older →").click()
    # 360 runs: 180 manual, 120 of them succeeded: 50 + 50 + 20, no 4th page.
    assert len(seen) == len(set(seen))
    assert "Older →" not in page.locator("nav.pager").inner_text()
    page.get_by_role("button", name="← Newer").click()
    expect(page.get_by_text("Page 2", exact=True)).to_be_visible()
    assert "trigger=MANUAL" in page.url and "status=SUCCEEDED" in page.url


def test_hostile_values_are_shown_as_text(start_app, open_page, pg):
    pg.psql('DROP DATABASE IF EXISTS ui_xss WITH (FORCE)')
    pg.create_database("ui_xss")
    pg.psql(f'CREATE TABLE "{XSS}" (id int); INSERT INTO "{XSS}" VALUES (1)', "ui_xss")
    try:
        stack = start_app(databases=[{"name": "xss", "url": pg.url("ui_xss")}],
                          database=None, schedules=None)
        backup = stack.rest("POST", "/api/v1/backup/create", {})[1]["backup"]
        stack.app.store.runs.bulk_insert([run_row(stack, database=XSS, target="xss",
                                                  status="FAILED", error=f"pg_dump: {XSS}")])
        w = open_page(stack)
        page = w.open("#/backups")
        expect(page.get_by_role("cell", name=XSS, exact=True)).to_be_visible()
        expect(page.get_by_text(f"pg_dump: {XSS}")).to_be_visible()
        page.get_by_role("link", name="Overview").click()
        expect(page.get_by_role("link", name=XSS)).to_be_visible()
        page.goto(f"{stack.http}/#/backups/{int(backup['id']) + 1}")
        expect(page.locator("pre.log")).to_have_text(f"pg_dump: {XSS}")
        page.goto(f"{stack.http}/#/backups/{backup['id']}")
        expect(page.get_by_role("cell", name=f"public.{XSS}")).to_be_visible()
        expect(page.get_by_text(f"public.{XSS}").first).to_be_visible()
        # Never markup: no image was made from the text, no script ran.
        assert page.locator("img[src=x]").count() == 0
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        assert w.dialogs == []
    finally:
        pg.psql('DROP DATABASE IF EXISTS ui_xss WITH (FORCE)')


def test_phone_dark_mode_and_keyboard(start_app, open_page):
    stack = start_app()
    backup = stack.rest("POST", "/api/v1/backup/create", {})[1]["backup"]
    w = open_page(stack, viewport={"width": 375, "height": 760}, color_scheme="dark",
                  is_mobile=True, has_touch=True, device_scale_factor=2)
    page = w.open("#/")
    expect(page.get_by_role("link", name=DB, exact=True)).to_be_visible()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(16, 19, 23)"  # the dark palette
    for route, title in (("#/", "Overview"), (f"#/backups/{backup['id']}", "Backup #"),
                         ("#/backups", "Backups"), ("#/schedules", "Schedules")):
        page.goto(f"{stack.http}/{route}")
        expect(page.locator("h1")).to_contain_text(title)  # drawn at once with its data
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (route, width)
        if route == "#/":
            w.shot("dashboard-phone-dark.png", full_page=False)

    # Keyboard only: skip link, then the menu, then a backup, then its actions.
    page = open_page(stack).open("#/")
    expect(page.get_by_role("cell", name=DB, exact=True)).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(3):
        page.keyboard.press("Tab")  # brand, Overview, Backups
    assert page.evaluate("document.activeElement.textContent") == "Backups"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Backups")).to_be_visible()
    assert page.evaluate("document.activeElement.tagName") == "H1"
    link = page.get_by_role("link", name=f"#{backup['id']}")
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Backup #{backup['id']}")).to_be_visible()
    page.get_by_role("button", name="Verify (quick)").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".verify-state")).to_contain_text("Verified")


def test_copies_and_physical_backups_render_when_the_api_has_them(start_app, open_page):
    """Destinations and physical backups add fields to Backup: the page shows them
    as soon as the API sends them (here the real response, with those fields added)."""
    stack = start_app()
    backup = stack.rest("POST", "/api/v1/backup/create", {})[1]["backup"]
    w = open_page(stack)

    def extend(route):
        body = route.fetch().json()
        body.update(kind="PHYSICAL_INCREMENTAL", parent_id="7", copies=[
            {"destination": "local", "state": "SUCCEEDED", "location": "a.tar",
             "size_bytes": "10", "sha256": "ab" * 32},
            {"destination": "offsite-s3", "state": "FAILED", "location": "",
             "size_bytes": "0", "error": f"AccessDenied {XSS}"}])
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    w.page.route(f"**/api/v1/backups/{backup['id']}", extend)
    page = w.open(f"#/backups/{backup['id']}")
    copies = page.locator("section", has=page.get_by_role("heading", name="Copies"))
    expect(copies.locator("tbody tr")).to_have_count(2)
    expect(copies).to_contain_text("offsite-s3")
    expect(copies).to_contain_text(f"AccessDenied {XSS}")
    expect(page.locator("dl.facts")).to_contain_text("Physical incremental")
    expect(page.get_by_role("link", name="#7")).to_be_visible()
