"""What backupd says when it starts or refuses to: which config file it used (or that
there was none), YAML errors that name the file, and a refusal that comes alone.
Real backupd processes; their output is what an operator reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import base_config
from procs import wait_for

from pgbackup_server.postgres.embedded import free_port


def backupd(*args: str, cwd: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "pgbackup_server", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_no_config_file_is_said_not_ignored(pg, tmp_path):
    # No ./config.yaml and no --config: the error says so, then what is missing.
    out = backupd(cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"no config file ({tmp_path / 'config.yaml'} not found and no --config given)" \
        in out.stderr
    assert "database.url: required" in out.stderr and "DATABASE_URL" in out.stderr
    assert "Traceback" not in out.stderr
    # Defaults plus DATABASE_URL are a valid configuration, and --check-config says whence.
    out = backupd("--check-config", cwd=tmp_path, env={"DATABASE_URL": pg.url("shop")})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (f"config file: none ({tmp_path / 'config.yaml'} not found and no "
                        "--config given; defaults apply)")
    assert lines[1].startswith("configuration OK; pg_dump: ")


def test_check_config_names_the_file_used(pg, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_config(pg, tmp_path)))
    out = backupd("--check-config", cwd=tmp_path)  # found in the working directory
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"config file: {tmp_path / 'config.yaml'}"
    other = tmp_path / "sub" / "other.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump(base_config(pg, tmp_path)))
    out = backupd("--check-config", "--config", "sub/other.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"config file: {other}"


def test_backupd_logs_the_config_file_at_start(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["server"].update(grpcAddress=f"127.0.0.1:{free_port()}", envoy=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "backupd.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pgbackup_server"], cwd=tmp_path,
                                stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "backupd started" in log.read_text() or proc.poll() is not None)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = log.read_text().splitlines()[0]
    assert "Configuration loaded" in first
    assert f"config_file={tmp_path / 'config.yaml'}" in first


def test_yaml_error_names_the_file_line_and_column(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "database:\n  url: postgresql://u@h/db\nbackup:\n  directory: b\n  retentionDays: 7\n"
        "  cleanupOld: true\n  compressBackup: false\nserver:\n  grpcAddress: x: y\n")
    out = backupd(cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("backupd: config.yaml, line 9, column 17: invalid YAML: "
                                 "mapping values are not allowed here")
    assert "grpcAddress: x: y" in out.stderr  # the offending line, with a caret
    assert "<unicode string>" not in out.stderr and "Traceback" not in out.stderr


def test_exposure_refusal_comes_first_and_alone(pg, tmp_path):
    cfg = base_config(pg, tmp_path)
    cfg["server"]["grpcAddress"] = "0.0.0.0:0"
    path = tmp_path / "exposed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for args in (("--config", str(path)), ("--config", str(path), "--check-config")):
        out = backupd(*args, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert out.stdout == ""
        # No "backupd shutting down / stopped" for a start that never happened.
        assert out.stderr.splitlines() == [
            "backupd: server.grpcAddress: refusing to listen on 0.0.0.0:0 without "
            "authentication; add token digests to auth.tokenSha256 (backupctl token new "
            "prints one), listen on 127.0.0.1, or set auth.allowUnauthenticated: true to "
            "accept unauthenticated access explicitly"], out.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "backups").exists()
