"""Logs: the seed-like console format by default, JSON lines on request, and every
line of a run carries run_id and database."""

from __future__ import annotations

import io
import json
import logging

import structlog
from conftest import DB

from pgbackup_server.observability import logs


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


def test_console_values_never_start_a_new_line():
    buf = io.StringIO()
    logs.configure("info", "console", stream=buf)
    try:
        structlog.get_logger("pgbackup").info("Message\nINFO    forged message",
                                              path="/srv/a\nINFO    forged",
                                              other="tab\there\rcr\x1besc\u2028ls")
        logging.getLogger("apscheduler").warning("stdlib\nINFO    forged too")
    finally:
        logs.configure("debug", "console")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert not any("forged" in ln.split("    ")[0] for ln in lines)
    assert "Message\\nINFO    forged message" in lines[0]
    assert 'path="/srv/a\\nINFO    forged"' in lines[0]
    assert r"other=tab\there\rcr\x1besc\u2028ls" in lines[0]
    assert "stdlib\\nINFO    forged too" in lines[1]


def test_json_lines_stay_one_line_per_record():
    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    try:
        structlog.get_logger("pgbackup").info("Message\nforged", path="/srv/a\nb\u2028c")
    finally:
        logs.configure("debug", "console")
    (line,) = buf.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "Message\nforged" and record["path"] == "/srv/a\nb\u2028c"
