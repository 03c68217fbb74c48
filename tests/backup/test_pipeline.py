"""The dump pipeline: sinks, stages, the copy loop and the fast path, with real
pg_dump, real files and the zstd CLI reading what the pipeline wrote."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import DB, PASSWORD

from pgbackup_server.backup.dump import DumpProcess
from pgbackup_server.backup.pipeline import (
    Extras,
    Fanout,
    HashStage,
    LocalFileSink,
    ZstdStage,
)
from pgbackup_server.backup.plan import plan_dump
from pgbackup_server.domain.errors import BackupFailed
from pgbackup_server.domain.models import Compression, CompressionMethod, DumpFormat, Stored
from pgbackup_server.postgres.binaries import discover
from pgbackup_server.postgres.conninfo import ConnInfo
from pgbackup_server.restore.plain import Decoder


def _sink(directory: Path, stem: str = "backup_x", ext: str = ".sql") -> LocalFileSink:
    directory.mkdir(mode=0o700, exist_ok=True)
    return LocalFileSink(directory / f".{stem}{ext}.run1.partial", directory, stem, ext)


def _dump(pg, tmp_path: Path, fmt: DumpFormat, compression: Compression | None = None,
          ) -> DumpProcess:
    binary = next(b for b in discover(None) if b.major >= 18)
    plan = plan_dump(binary, format=fmt, compression=compression, compress_backup=False,
                     supports=lambda *_: False)
    conninfo = ConnInfo.of({"host": "127.0.0.1", "port": str(pg.port), "user": "postgres",
                            "password": PASSWORD, "dbname": DB})
    return DumpProcess(plan, conninfo, str(tmp_path))


class _Failing:
    """A destination that breaks: on write after ``after`` bytes, or on finish."""

    def __init__(self, after: int | None = None) -> None:
        self.after = after
        self.seen = 0
        self.aborted = ""

    def write(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        if self.after is not None and self.seen > self.after:
            raise BackupFailed("upload refused")

    def finish(self) -> list[Stored]:
        raise BackupFailed("upload refused at the end")

    def abort(self, reason: str) -> None:
        self.aborted = reason


def test_zstd_stage_writes_frames_that_zstd_and_the_restore_decoder_read(tmp_path):
    data = b"".join(b"row %d {\"k\": \"v%d\"}\n" % (i, i * 7) for i in range(60_000))
    sink = _sink(tmp_path / "out", ext=".sql.zst")
    stage = ZstdStage(sink, 1, frame_bytes=256 * 1024)
    for i in range(0, len(data), 100_000):
        stage.write(data[i:i + 100_000])
    (stored,) = stage.finish()
    path = Path(stored.location)
    raw = path.read_bytes()
    assert raw.count(b"\x28\xb5\x2f\xfd") >= len(data) // (256 * 1024)  # one frame per 256 KiB
    assert stored.sha256 == hashlib.sha256(raw).hexdigest() and stored.size == len(raw)
    assert subprocess.run(["zstd", "-dc", str(path)], capture_output=True,
                          check=True).stdout == data
    decoder = Decoder("zstd")
    assert decoder.feed(raw) == data
    decoder.finish()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_fanout_failing_copy_leaves_no_file_anywhere(tmp_path):
    first, broken = _sink(tmp_path / "a"), _Failing()
    fan = Fanout([first, broken])
    fan.write(b"SELECT 1;\n")
    with pytest.raises(BackupFailed, match="at the end"):
        fan.finish()
    assert list((tmp_path / "a").iterdir()) == []  # published, then removed
    assert "another copy failed" in broken.aborted


def test_streaming_path_feeds_extra_sinks_and_stages_the_same_bytes(pg, tmp_path):
    dump = _dump(pg, tmp_path, DumpFormat.PLAIN,
                 Compression(CompressionMethod.ZSTD, 1))
    other = _sink(tmp_path / "copy", "backup_shop_x", ".sql.zst")
    hashes: list[HashStage] = []

    def plaintext(sink):
        hashes.append(HashStage(sink))
        return hashes[-1]

    (tmp_path / "out").mkdir(mode=0o700)
    out = dump.run(tmp_path / "out", "backup_shop_x", 1, 60,
                   extras=Extras(sinks=(other,), stages=(plaintext,)))
    local, copy = out.stored
    assert Path(local.location) == out.path and out.path.name == "backup_shop_x.sql.zst"
    assert out.path.read_bytes() == Path(copy.location).read_bytes()
    assert (local.sha256, local.size) == (copy.sha256, copy.size) == (out.sha256,
                                                                        out.size_bytes)
    sql = subprocess.run(["zstd", "-dc", str(out.path)], capture_output=True,
                         check=True).stdout
    # Stages sit after in-process zstd: they see what the files get (compress, then
    # encrypt), so an encrypting stage's input hash is the unencrypted file's.
    assert hashes[0].hash.hexdigest() == out.sha256
    assert out.bytes_in == len(sql) and b"dump complete" in sql[-4000:]


def test_a_sink_failing_mid_dump_stops_pg_dump_and_leaves_nothing(pg, tmp_path):
    dump = _dump(pg, tmp_path, DumpFormat.PLAIN)
    broken = _Failing(after=1000)
    (tmp_path / "out").mkdir(mode=0o700)
    with pytest.raises(BackupFailed, match="upload refused"):
        dump.run(tmp_path / "out", "backup_shop_x", 1, 60, extras=Extras(sinks=(broken,)))
    assert list((tmp_path / "out").iterdir()) == []
    assert broken.aborted
    assert dump._proc is not None and dump._proc.returncode is not None


@pytest.mark.parametrize("fmt", [DumpFormat.PLAIN, DumpFormat.CUSTOM])
def test_fast_path_file_is_hashed_as_written_and_private(pg, tmp_path, fmt):
    dump = _dump(pg, tmp_path, fmt)
    assert dump.fast_path()
    seen: list[int] = []
    (tmp_path / "out").mkdir(mode=0o700)
    out = dump.run(tmp_path / "out", "backup_shop_x", 1, 60, on_progress=seen.append)
    raw = out.path.read_bytes()
    assert out.sha256 == hashlib.sha256(raw).hexdigest() and out.size_bytes == len(raw)
    assert seen and seen[-1] == len(raw)
    assert os.stat(out.path).st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "out").iterdir()] == [out.path.name]
    if fmt is DumpFormat.PLAIN:
        assert b"dump complete" in raw[-4000:]
    else:
        assert raw.startswith(b"PGDMP")
