"""A local directory as a destination: private files, atomic publish, never overwrite."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from pgbackup_server.domain.errors import InvalidArgument, StorageExists
from pgbackup_server.storage.local import LocalDestination


def test_round_trip_private_and_published_whole(tmp_path: Path) -> None:
    dest = LocalDestination("local", tmp_path / "root")
    sink = dest.upload("shop/backup_shop_2026-01-01_00-00-00.sql.zst")
    sink.write(b"abc" * 1000)
    # Not visible under its name (nor listed) before finish.
    assert dest.head("shop/backup_shop_2026-01-01_00-00-00.sql.zst") is None
    assert list(dest.list()) == []
    sink.write(b"def")
    [stored] = sink.finish()
    data = b"abc" * 1000 + b"def"
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(dest.read(stored.location)) == data
    path = tmp_path / "root" / stored.location
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [i.location for i in dest.list("shop/")] == [stored.location]
    assert os.listdir(path.parent) == [path.name]  # no temp file left
    assert dest.location_of(stored.location) == path.as_uri()


def test_never_overwrites(tmp_path: Path) -> None:
    dest = LocalDestination("local", tmp_path)
    dest.put_small("a.manifest.json", b"first")
    with pytest.raises(StorageExists, match="never overwritten"):
        dest.put_small("a.manifest.json", b"second")
    racing = dest.upload("b.sql")  # another writer takes the name before finish
    dest.put_small("b.sql", b"theirs")
    racing.write(b"mine")
    with pytest.raises(StorageExists):
        racing.finish()
    racing.abort("lost the race")
    assert b"".join(dest.read("a.manifest.json")) == b"first"
    assert b"".join(dest.read("b.sql")) == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["a.manifest.json", "b.sql"]


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    dest = LocalDestination("local", tmp_path)
    sink = dest.upload("db/x.dump")
    sink.write(b"partial")
    sink.abort("pg_dump failed")
    assert os.listdir(tmp_path / "db") == []
    assert dest.head("db/x.dump") is None


def test_names_cannot_escape(tmp_path: Path) -> None:
    dest = LocalDestination("local", tmp_path / "root")
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", ""):
        with pytest.raises(InvalidArgument):
            dest.upload(bad)
    assert not (tmp_path / "x").exists()


def test_sweep_removes_dead_uploads_never_a_live_one(tmp_path: Path) -> None:
    """A crash leaves hidden temp files; the sweep at start removes them, but never the
    upload another replica sharing the folder is writing (it holds its file's lock)."""
    dest = LocalDestination("local", tmp_path / "root")
    live = dest.upload("shop/backup_shop_2026-01-01_00-00-00.sql.zst")
    live.write(b"in progress")
    (tmp_path / "root" / "shop" / "old").mkdir()
    dead = tmp_path / "root" / "shop" / "old" / ".backupd-upload-backup_shop_x.sql.0badcafe.partial"
    dead.write_bytes(b"half a dump")
    fresh = tmp_path / "root" / ".backupd-upload-backup_shop_y.sql.12345678.partial"
    fresh.write_bytes(b"just created")
    unrelated = tmp_path / "root" / "shop" / "notes.partial"
    unrelated.write_bytes(b"not ours")
    an_hour_ago = time.time() - 3600
    for path in (dead, unrelated, *(tmp_path / "root" / "shop").glob(".backupd-upload-*")):
        os.utime(path, (an_hour_ago, an_hour_ago))

    assert dest.sweep_unfinished() == [str(dead)]
    assert not dead.exists() and fresh.exists() and unrelated.exists()
    live.write(b" and done")
    [stored] = live.finish()  # the live upload was not disturbed
    assert b"".join(dest.read(stored.location)) == b"in progress and done"
