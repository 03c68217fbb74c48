"""File safety: private modes whatever the umask, no following planted
symlinks, orphan cleanup limited to the service's own names, and retention
that never eats the last good backups."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import ManualClock


def test_modes_whatever_the_umask(start_app):
    old = os.umask(0)
    try:
        stack = start_app()
        backup = stack.client().create_backup().backup
    finally:
        os.umask(old)
    path = Path(backup.file_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = stack.app.settings.server.data_directory
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_directory_backups_are_private_inside_too(start_app):
    stack = start_app(backup={"format": "directory"})
    backup = Path(stack.client().create_backup().backup.file_path)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in backup.iterdir()}
    assert "toc.dat" in modes and len(modes) > 1  # the toc and the tables' data
    assert set(modes.values()) == {0o600}, modes


def test_planted_symlinks_are_never_followed(start_app, tmp_path):
    clock = ManualClock()
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    stamp = clock.now.strftime("%Y-%m-%d_%H-%M-%S")
    # The final name of the next backup already exists as a symlink.
    (backups / f"backup_shop_{stamp}.sql").symlink_to(victim)
    stack = start_app(clock=clock, scheduler={"timezone": "UTC"})
    backup = stack.client().create_backup().backup
    assert backup.status == "SUCCEEDED"
    assert Path(backup.file_path).name == f"backup_shop_{stamp}_2.sql"
    assert victim.read_text() == "precious"
    # The temporary name of the next run is a planted symlink: the run takes another
    # name and succeeds; the symlink and its target are untouched.
    planted = backups / f".backup_shop_{stamp}.sql.run2.partial"
    planted.symlink_to(victim)
    second = stack.client().create_backup().backup
    assert second.status == "SUCCEEDED"
    assert Path(second.file_path).name == f"backup_shop_{stamp}_3.sql"
    assert planted.is_symlink() and victim.read_text() == "precious"


def test_cleanup_never_deletes_through_a_symlink(start_app, tmp_path):
    clock = ManualClock()
    stack = start_app(clock=clock, backup={"retentionDays": 1})
    client = stack.client()
    first = client.create_backup().backup
    clock.advance(days=3)
    client.create_backup()
    victim = tmp_path / "victim.sql"
    victim.write_text("not a backup of ours")
    # Someone replaced the expired backup with a symlink to another file.
    os.unlink(first.file_path)
    os.symlink(victim, first.file_path)
    result = client.cleanup()
    assert result.deleted_files == 0
    assert victim.read_text() == "not a backup of ours"
    assert os.path.islink(first.file_path)
    assert client.get_backup(first.id).file_missing


def test_orphans_removed_at_start_only_with_our_names(start_app, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    ours = backups / ".backup_shop_2026-01-01_00-00-00.sql.run7.partial"
    theirs = [backups / "notes.partial", backups / ".other.partial",
              backups / "backup_shop_2026-01-01_00-00-00.sql"]
    for p in [ours, *theirs]:
        p.write_text("x")
    start_app()
    assert not ours.exists()
    assert all(p.exists() for p in theirs)


def test_failing_runs_never_eat_the_last_good_backups(pg, start_app):
    pg.psql("DROP ROLE IF EXISTS flaky; CREATE ROLE flaky LOGIN PASSWORD 'before'; "
            "GRANT pg_read_all_data TO flaky")
    clock = ManualClock()
    stack = start_app(clock=clock, backup={"retentionDays": 1, "retentionMinKeep": 2},
                      database={"url": pg.url("shop", user="flaky", password="before")})
    good = [stack.client().create_backup().backup for _ in range(3)]
    clock.advance(days=10)
    assert stack.client().cleanup(dry_run=True).files == (good[0].file_path,)
    # Now every run fails (the password changed): nothing is pruned, however old.
    pg.psql("ALTER ROLE flaky PASSWORD 'after'")
    for _ in range(3):
        try:
            stack.client().create_backup()
        except Exception:  # noqa: BLE001 - the failure is the point
            pass
    clock.advance(days=100)
    result = stack.client().cleanup()
    assert result.deleted_files == 0
    assert all(Path(b.file_path).exists() for b in good)
