"""Unpacking a backup's tars for a restore (child processes, tarfile's data filter):
a member that would land outside the scratch directory is refused, naming the
archive, and nothing of it is written outside."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pgbackup_server.physical import tablespaces
from pgbackup_server.physical.combine import CombineFailed, unpack


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unpack_takes_only_the_last_wal_and_refuses_escaping_members(tmp_path):
    full, incr = tmp_path / "full", tmp_path / "incr"
    for folder in (full, incr):
        folder.mkdir()
        (folder / "backup_manifest").write_text("{}")
        _tar(folder / "pg_wal.tar.gz", {"000000010000000000000002": b"w" * 10})
    _tar(full / "base.tar.gz", {"PG_VERSION": b"18\n", "base/1/123": b"x" * 100})
    _tar(incr / "base.tar.gz", {"base/1/INCREMENTAL.123": b"i"})
    parts = [tmp_path / "s0", tmp_path / "s1"]
    unpack([full, incr], parts)
    assert (parts[0] / "base" / "1" / "123").read_bytes() == b"x" * 100
    assert not any((parts[0] / "pg_wal").iterdir())  # the full's WAL is not needed
    assert (parts[1] / "pg_wal" / "000000010000000000000002").is_file()
    assert (parts[1] / "backup_manifest").read_text() == "{}"

    _tar(incr / "base.tar.gz", {"../escaped": b"bad"})
    with pytest.raises(CombineFailed, match=r"incr/base\.tar\.gz cannot be unpacked"):
        unpack([full, incr], [tmp_path / "t0", tmp_path / "t1"])
    assert not (tmp_path / "escaped").exists()


def test_unpack_links_each_tablespace_to_its_unpacked_directory(tmp_path):
    """pg_basebackup -Ft: <oid>.tar.gz beside base.tar.gz, whose tablespace_map says where
    it was (a backslash escapes a newline or backslash in the path)."""
    backup = tmp_path / "full"
    backup.mkdir()
    (backup / "backup_manifest").write_text("{}")
    where = "/srv/odd\\\nname"
    _tar(backup / "base.tar.gz", {"backup_label": b"label",
                                  "tablespace_map": f"16385 {where}\n".encode(),
                                  "PG_VERSION": b"18\n"})
    _tar(backup / "16385.tar.gz", {"PG_18_202506291/5/16386": b"rows"})
    assert tablespaces.read_map(backup) == (tablespaces.Tablespace("16385", "/srv/odd\nname"),)
    part = tmp_path / "s0"
    unpack([backup], [part])
    link = part / "pg_tblspc" / "16385"
    assert os.readlink(link) == str(tmp_path / "s0.tblspc" / "16385")
    assert (link / "PG_18_202506291" / "5" / "16386").read_bytes() == b"rows"
    assert tablespaces.format_map({"16385": Path("/srv/odd\nname")}) == f"16385 {where}\n"

    (backup / "16399.tar.gz").write_bytes((backup / "16385.tar.gz").read_bytes())
    with pytest.raises(CombineFailed, match=r"tablespaces cannot be read: .*16385.*16399"):
        unpack([backup], [tmp_path / "t0"])
