"""backupctl against a real backupd: create --wait with progress, stats, list."""

from __future__ import annotations

import json
from pathlib import Path

from pgbackup_client.cli import main as backupctl


def test_create_wait_prints_a_summary_line(stack, capsys):
    assert backupctl(["--address", stack.grpc_address, "create", "--wait"]) == 0
    # (server log lines share stdout in-process; the CLI's own lines start "backup #")
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("backup #")]
    assert len(out) == 1 and "SUCCEEDED in" in out[0] and "backup_shop_" in out[0]
    path = out[0].rsplit("-> ", 1)[1]
    assert Path(path).exists()

    assert backupctl(["--address", stack.grpc_address, "--json", "create", "--wait"]) == 0
    text = capsys.readouterr().out
    data = json.loads(text[text.index('{\n  "backups"'):])
    assert data["backups"][0]["status"] == "SUCCEEDED"
    assert data["backups"][0]["bytes_written"] > 0


def test_create_wait_reports_a_failure(pg, start_app, capsys):
    stack = start_app(database={"url": pg.url("shop", password="wrong")})
    code = backupctl(["--address", stack.grpc_address, "create", "--wait"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.out and "password authentication failed" in captured.out


def test_stats_and_list_tables(stack, capsys):
    stack.client().create_backup()
    assert backupctl(["--address", stack.grpc_address, "stats"]) == 0
    text = capsys.readouterr().out
    assert "total backups" in text and "1" in text
    assert backupctl(["--address", stack.grpc_address, "--json", "stats",
                      "--database", "shop"]) == 0
    assert json.loads(capsys.readouterr().out)["total_backups"] == 1
    assert backupctl(["--address", stack.grpc_address, "list"]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
