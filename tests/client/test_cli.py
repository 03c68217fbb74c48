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
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out
    # Into a pipe: plain text, one line a run however long (no wrapping at 80
    # columns), no colour codes, no trailing blanks.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ID  "))
    assert lines[header].split() == ["ID", "STATUS", "TRIGGER", "DATABASE", "STARTED",
                                     "DURATION", "SIZE", "FILE"]
    path = stack.client().get_backup(1).file_path
    assert len(lines[header + 1]) > 80 and lines[header + 1].endswith(path)
    assert "\x1b" not in out and all(line == line.rstrip() for line in lines)


def test_show_prints_every_field(stack, capsys):
    stack.client().create_backup()
    assert backupctl(["--address", stack.grpc_address, "show", "1"]) == 0
    out = capsys.readouterr().out
    # Fields without a row of their own are printed too, after the known ones.
    assert "bytes written:" in out and "estimated total bytes:" in out
    assert out.index("server version:") < out.index("bytes written:")


def test_list_piped_into_head_exits_quietly(stack):
    """`backupctl list --all | head -1`: the closed pipe is not a server error."""
    import subprocess
    import sys
    from datetime import UTC, datetime

    t = datetime.now(UTC)
    # Enough rows that the output overflows the pipe buffer after head has gone.
    stack.app.store.runs.bulk_insert([dict(
        database="shop", target="shop", status="FAILED", trigger="MANUAL", schedule="",
        backup_dir=str(stack.backup_dir), file_path="", temp_path="", size_bytes=0, sha256="",
        queued_at=t, started_at=t, finished_at=t, error="x" * 100, format="plain",
        compression="none", pg_dump_version="", server_version="", file_state="NONE",
        present=False, bytes_written=0, estimated_total_bytes=0, verification="",
        verification_reason="", verified_at=None) for _ in range(3000)])
    script = (f"set -o pipefail; {sys.executable} -m pgbackup_client.cli --address "
              f"{stack.grpc_address} list --all | head -1")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ID") and out.stderr == ""


def test_tls_ca_that_is_not_pem_is_refused_before_connecting(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    out = subprocess.run([sys.executable, "-m", "pgbackup_client.cli", "--address",
                          "127.0.0.1:1", "--tls-ca", str(bad), "stats"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "is not a PEM certificate bundle" in out.stderr
    assert "E1" not in out.stderr and "ssl_transport_security" not in out.stderr


def test_cluster_on_a_backupd_that_runs_alone(stack, capsys):
    assert backupctl(["--address", stack.grpc_address, "cluster"]) == 0
    assert "not a cluster: this backupd runs alone" in capsys.readouterr().out
    assert backupctl(["--address", stack.grpc_address, "--json", "cluster"]) == 0
    text = capsys.readouterr().out
    assert json.loads(text[text.index("{"):])["enabled"] is False
