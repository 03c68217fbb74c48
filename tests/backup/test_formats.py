"""Formats and compression: the extension tells the format, each restores, and
the format and compression are recorded on the run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import zstandard
from conftest import DB, drop_database, restore_plain, table_fingerprint


def _restore_archive(pg, path: Path, target: str) -> None:
    pg.create_database(target)
    out = subprocess.run([str(pg.bin / "pg_restore"), "--exit-on-error", "-j", "2", "-d",
                          pg.admin_conninfo(target), str(path)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("backup", "ext", "fmt", "compression"), [
    ({"compressBackup": True}, ".sql.zst", "plain", "zstd:1"),
    ({"compression": "gzip:1"}, ".sql.gz", "plain", "gzip:1"),
    ({"format": "custom"}, ".dump", "custom", "none"),
    ({"format": "custom", "compression": "gzip"}, ".dump", "custom", "gzip:6"),
    ({"format": "directory", "jobs": 2}, ".dir", "directory", "none"),
    ({"format": "directory", "compressBackup": True}, ".dir", "directory", "gzip:1"),
])
def test_format_round_trip(pg, start_app, backup, ext, fmt, compression):
    stack = start_app(backup=backup)
    run = stack.client().create_backup().backup
    path = Path(run.file_path)
    assert re.match(rf"^backup_shop_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d{re.escape(ext)}$",
                    path.name)
    assert (run.format, run.compression) == (fmt, compression)
    assert run.size_bytes > 0 and len(run.sha256) == 64
    listed = stack.rest("GET", f"/api/v1/backups/{run.id}")[1]
    assert (listed["format"], listed["compression"]) == (fmt, compression)
    target = "restored_fmt"
    drop_database(pg, target)
    try:
        if ext == ".sql.zst":
            plain = path.with_suffix("")  # .sql
            with open(path, "rb") as src, open(plain, "wb") as dst:
                zstandard.ZstdDecompressor().copy_stream(src, dst)
            restore_plain(pg, plain, target)
            plain.unlink()
        elif ext == ".sql.gz":
            import gzip

            plain = path.with_suffix("")
            plain.write_bytes(gzip.decompress(path.read_bytes()))
            restore_plain(pg, plain, target)
            plain.unlink()
        else:
            _restore_archive(pg, path, target)
        assert table_fingerprint(pg, target) == table_fingerprint(pg, DB)
    finally:
        drop_database(pg, target)


def test_directory_backups_are_private_counted_and_cleaned(start_app):
    from conftest import ManualClock

    clock = ManualClock()
    stack = start_app(clock=clock, backup={"format": "directory", "retentionDays": 1})
    client = stack.client()
    first = client.create_backup().backup
    path = Path(first.file_path)
    assert path.is_dir() and oct(path.stat().st_mode & 0o777) == oct(0o700)
    on_disk = sum(p.stat().st_size for p in path.iterdir())
    assert first.size_bytes == on_disk
    assert client.get_stats().total_size_bytes == on_disk
    clock.advance(days=3)
    client.create_backup()
    result = client.cleanup()
    assert result.deleted_files == 1 and result.freed_bytes == on_disk
    assert not path.exists()
