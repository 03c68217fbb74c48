"""Logs: the seed-like console format by default, JSON lines on request, and every
line of a run carries run_id and database."""

from __future__ import annotations

import io
import json

from conftest import DB

from pgbackup_server import logs


def _run_logged(start_app, fmt: str) -> str:
    buf = io.StringIO()
    logs.configure("info", fmt, stream=buf)
    try:
        stack = start_app(backup={"cleanupOld": True})
        stack.client().create_backup()
    finally:
        logs.configure("debug", "console")
    return buf.getvalue()


def test_console_lines_look_like_the_seed(start_app):
    text = _run_logged(start_app, "console")
    (line,) = [ln for ln in text.splitlines() if "completed successfully" in ln]
    assert "INFO    Database backup completed successfully    " in line
    for field in ("file_path=", "size_bytes=", "duration_seconds=", f"database={DB}",
                  "run_id="):
        assert field in line
    assert "Cleanup completed" in text and "deleted_files=0" in text


def test_json_lines_carry_run_id_and_database(start_app):
    text = _run_logged(start_app, "json")
    records = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    run_lines = [r for r in records if r["event"].startswith("Database backup")]
    assert {r["event"] for r in run_lines} >= {"Database backup job queued",
                                              "Database backup job started",
                                              "Database backup completed successfully"}
    assert all(r["run_id"] == run_lines[0]["run_id"] and r["database"] == DB
               for r in run_lines)
    assert all(r["level"] in {"info", "warning", "error", "debug"} for r in records)
