"""Retention per destination: each destination keeps what its own rules keep, deletes
only the copies the service recorded (with their manifests), and keeps a copy under
S3 Object Lock without calling that a failure."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import ManualClock

from .helpers import copies_of, s3_entry


def test_each_destination_keeps_by_its_own_rules(start_with, s3, tmp_path):
    local = tmp_path / "local"
    bucket = s3.make_bucket()
    vault = s3.make_bucket(lock=True)
    clock = ManualClock(datetime(2026, 1, 10, 2, 0, tzinfo=UTC))
    app = start_with([
        {"name": "local", "url": local.as_uri(), "retention": {"days": 1}},
        s3_entry(s3, "offsite", f"{bucket}/pg", retention={"days": 0, "keepLast": 3}),
        s3_entry(s3, "vault", vault, retention={"days": 0, "keepLast": 1},
                 objectLock={"mode": "GOVERNANCE", "days": 1}),
    ], clock=clock)
    client = app.client()
    ids = []
    for _ in range(4):
        ids.append(client.create_backup().backup.id)
        clock.advance(days=2)
    foreign = "pg/backup_shop_2025-01-01_00-00-00.sql"  # not made by the service
    s3.client().put_object(Bucket=bucket, Key=foreign, Body=b"someone else's")
    (local / "backup_shop_2025-01-01_00-00-00.sql").write_bytes(b"someone else's")

    preview = client.cleanup(dry_run=True)
    assert preview.dry_run and len(s3.keys(bucket)) == 9  # nothing deleted yet

    result = client.cleanup()
    by = {(d.backup_id, d.destination): d for d in result.decisions}
    assert [by[(i, "local")].keep for i in ids] == [False, False, False, True]
    assert [by[(i, "offsite")].keep for i in ids] == [False, True, True, True]
    assert "keepLast 3" in by[(ids[1], "offsite")].reasons
    # The vault's rule would let three go, but Object Lock holds them: kept, no failure.
    assert all(by[(i, "vault")].keep for i in ids)
    assert any("locked" in r for r in by[(ids[0], "vault")].reasons)

    names = sorted(p.name for p in local.iterdir())
    assert [n for n in names if not n.endswith(".manifest.json")] == [
        "backup_shop_2025-01-01_00-00-00.sql", copies_of(client.get_backup(ids[3]))[
            "local"].location]
    assert len([n for n in names if n.endswith(".manifest.json")]) == 1
    keys = s3.keys(bucket)
    assert foreign in keys and len(keys) == 1 + 3 * 2  # three backups with manifests
    assert len(s3.keys(vault)) == 8

    oldest = client.get_backup(ids[0])
    states = {c.destination: c.deleted for c in oldest.copies}
    assert states == {"local": True, "offsite": True, "vault": False}
    assert not oldest.file_deleted and oldest.file_path.startswith(f"s3://{vault}/")
    second = client.get_backup(ids[1])
    assert second.file_path.startswith(f"s3://{bucket}/pg/")  # its local file went
    stats = {d.name: d for d in client.get_stats().destinations}
    assert (stats["local"].copies, stats["offsite"].copies, stats["vault"].copies) == (1, 3, 4)
