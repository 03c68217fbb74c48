"""Quick verify checks every copy of a logical backup, a folder destination's too (a
mounted share is off this host as much as a bucket): a damaged copy fails it, named,
while the file here is intact."""

from __future__ import annotations

from pathlib import Path

from .helpers import copies_of


def test_a_damaged_copy_at_a_folder_destination_fails_quick_verify(start_with, tmp_path):
    local, share = tmp_path / "local", tmp_path / "share"
    app = start_with([{"name": "local", "url": local.as_uri()},
                      {"name": "share", "url": share.as_uri()}],
                     backup={"compressBackup": True})
    client = app.client()
    backup = client.create_backup().backup
    assert backup.status == "SUCCEEDED", backup.error
    assert client.verify_backup(backup.id).verification == "OK"

    stored = share / copies_of(backup)["share"].location
    original = stored.read_bytes()
    assert original == Path(backup.file_path).read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    stored.write_bytes(bytes(changed))
    result = client.verify_backup(backup.id)
    assert result.verification == "FAILED"
    assert str(stored) in result.reason and "SHA-256" in result.reason, result.reason

    stored.write_bytes(original[:-10])
    result = client.verify_backup(backup.id)
    assert result.verification == "FAILED" and "bytes" in result.reason, result.reason
    assert not client.get_backup(backup.id).file_missing  # the file here is intact

    stored.write_bytes(original)
    assert client.verify_backup(backup.id).verification == "OK"
