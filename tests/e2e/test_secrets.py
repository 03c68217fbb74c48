"""The database password never appears in argv, logs, errors or run records."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import DB, PASSWORD
from procs import lock_orders, pg_dump_pids, wait_for

from pgbackup_client import BackupClientError
from pgbackup_server.observability import logs


def test_password_is_nowhere(pg, start_app):
    buf = io.StringIO()
    logs.configure("debug", "console", stream=buf)
    seen_cmdlines: list[str] = []
    seen_environ: list[bytes] = []
    try:
        stack = start_app(database={"url": pg.url(DB)}, backup={"timeout": "2s"})
        client = stack.client()
        ok = client.create_backup().backup
        assert ok.status == "SUCCEEDED"

        # Catch the pg_dump child while it runs, held by a lock, then let it time out.
        lock = lock_orders(pg.admin_conninfo(DB))
        try:
            run = client.create_backup(background=True).backup
            pids = wait_for(lambda: pg_dump_pids(f"port={pg.port}"))
            for pid in pids:
                seen_cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes()
                                     .replace(b"\0", b" ").decode())
                seen_environ.append(Path(f"/proc/{pid}/environ").read_bytes())
            failed = wait_for(lambda: (r := client.get_backup(run.id)).status == "FAILED" and r)
        finally:
            lock.close()

        # A wrong password: libpq's error travels back, without the password.
        bad = start_app(database={"url": pg.url(DB, password=PASSWORD + "-wrong")},
                        root=stack.root / "second")
        with pytest.raises(BackupClientError) as info:
            bad.client().create_backup()
        errors = [info.value.details, failed.error]
        records = [repr(b) for b in client.list_backups().backups]
        records += [repr(b) for b in bad.client().list_backups().backups]
        stats = repr(client.get_stats())
    finally:
        logs.configure("info", "console")

    assert seen_cmdlines and "pg_dump" in seen_cmdlines[0]
    for text in [buf.getvalue(), *seen_cmdlines, *errors, *records, stats]:
        assert PASSWORD not in text
        assert "Pa55" not in text  # not even a fragment
    for env in seen_environ:
        assert PASSWORD.encode() not in env  # a passfile, not PGPASSWORD
    assert "password authentication failed" in info.value.details
    # The passfiles are gone once the runs end.
    runtime = stack.app.settings.server.data_directory / "run"
    assert not [p for p in runtime.iterdir() if p.name.startswith("pgpass")]
