"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a
real backupd, Envoy and the session's PostgreSQL. Fixtures (a plugin, listed in
tests/conftest.py) and helpers of tests/ui.

`playwright install` cannot download here: the browser is /usr/bin/chromium
(``.ci/run`` installs it with apt-get). Set PGBACKUP_SCREENSHOTS=docs to refresh the
screenshots in docs/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
TZ = "Asia/Jakarta"
XSS = "<img src=x onerror=alert(1)>"
SHOTS = os.environ.get("PGBACKUP_SCREENSHOTS", "")
DOCS = Path(__file__).resolve().parents[1] / "docs"


class Watched:
    """A page whose script errors, dialogs and CSP reports are recorded."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        text = msg.text
        # A failed API call (401 on the login wall, a refused request) is logged by the
        # browser as a resource error; that is the page working, not a fault.
        if msg.type == "error" and not re.search(r"status of (4\d\d)", text):
            self.problems.append(f"console: {text}")
        if "Content Security Policy" in text or "TrustedHTML" in text:
            self.problems.append(f"CSP: {text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, hash_: str = "#/") -> Any:
        self.page.goto(f"{self.base}/{hash_}")
        return self.page

    def shot(self, name: str, full_page: bool = True) -> None:
        if SHOTS == "docs":
            self.page.screenshot(path=str(DOCS / name), full_page=full_page)



def run_row(stack: Any, **values: Any) -> dict[str, Any]:
    """A recorded run (for paging and odd values) as the store keeps it."""
    t = values.pop("at", datetime.now(UTC))
    row = dict(database="shop", target="shop", status="SUCCEEDED", trigger="SCHEDULE",
               schedule="nightly", backup_dir=str(stack.backup_dir), file_path="",
               temp_path="", size_bytes=1000, sha256="", queued_at=t, started_at=t,
               finished_at=t, error="", format="plain", compression="none",
               pg_dump_version="18.6", server_version="18.6", file_state="DELETED",
               present=False, bytes_written=0, estimated_total_bytes=0, verification="",
               verification_reason="", verified_at=None)
    row.update(values)
    return row


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One chromium for the session."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=[*args, "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """``open_page(stack, **context options)``: a fresh browser session (its own
    sessionStorage) in Asia/Jakarta; fails the test on script errors or dialogs."""
    contexts: list[Any] = []
    pages: list[Watched] = []

    def open_(stack: Any, **options: Any) -> Watched:
        options = {"timezone_id": TZ, "viewport": {"width": 1280, "height": 900}, **options}
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)
        contexts.append(context)
        watched = Watched(context.new_page(), stack.http)
        pages.append(watched)
        return watched

    yield open_
    for context in contexts:
        context.close()
    for w in pages:
        assert w.problems == [] and w.dialogs == [], (w.problems, w.dialogs)
