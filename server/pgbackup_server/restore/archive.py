"""Reading pg_dump's custom and directory archives in-process: the header and
table of contents, and the size of each entry's data."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..backup.files import CHUNK
from ..domain.errors import FailedPrecondition
from .models import Corrupt, unreadable

_ARCHIVE_FORMATS = {1: "custom", 3: "directory"}
_BLK_DATA, _BLK_BLOBS = 1, 3
_OFFSET_SET = 2  # K_OFFSET_POS_SET: pg_dump could seek back and record the offset


@dataclass(frozen=True, slots=True)
class TocEntry:
    dump_id: int
    desc: str  # "TABLE", "TABLE DATA", "INDEX", ...
    namespace: str
    tag: str
    deps: tuple[int, ...]
    has_data: bool = False  # pg_dump wrote a data block (or file) for it
    data_file: str = ""  # directory format: the entry's data file, without extension
    offset: int = -1  # custom format: where its data block starts, when pg_dump could seek


@dataclass(frozen=True, slots=True)
class Archive:
    version: tuple[int, int, int]
    format: str  # custom or directory ("plain": a plain dump's sections, see plaintoc)
    entries: tuple[TocEntry, ...]
    data_start: int  # custom format: offset of the first data block
    int_size: int

    def by_id(self) -> dict[int, TocEntry]:
        return {e.dump_id: e for e in self.entries}


class _TocReader:
    """Reads pg_dump's archive header and TOC (pg_backup_archiver.c ReadHead/ReadToc)."""

    def __init__(self, f: IO[bytes], name: str, int_size: int = 4,
                 where: str = "table of contents") -> None:
        self.f = f
        self.name = name
        self.int_size = int_size
        self.where = where

    def read_bytes(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise Corrupt(f"{self.name}: unexpected end of file in the archive's {self.where}")
        return data

    def read_byte(self) -> int:
        return self.read_bytes(1)[0]

    def read_int(self) -> int:
        sign = self.read_byte()
        value = int.from_bytes(self.read_bytes(self.int_size), "little")
        return -value if sign else value

    def read_str(self) -> str | None:
        n = self.read_int()
        if n < 0:
            return None
        if n > 1 << 30:
            raise Corrupt(f"{self.name}: corrupt {self.where} (a {n}-byte string)")
        return self.read_bytes(n).decode("utf-8", "replace")

    def read(self) -> Archive:
        if self.f.read(5) != b"PGDMP":
            raise Corrupt(f"{self.name}: not a pg_dump archive (no PGDMP header)")
        major, minor = self.read_byte(), self.read_byte()
        rev = self.read_byte() if (major, minor) > (1, 0) else 0
        version = (major, minor, rev)
        if not (1, 12, 0) <= version < (1, 17, 0):
            raise FailedPrecondition(f"{self.name}: archive version {major}.{minor} is not "
                                     "supported here (1.12 to 1.16: pg_dump 9.0 to 18)")
        self.int_size = self.read_byte()
        if not 1 <= self.int_size <= 8:
            raise Corrupt(f"{self.name}: corrupt header (integer size {self.int_size})")
        off_size = self.read_byte()
        fmt = _ARCHIVE_FORMATS.get(self.read_byte())
        if fmt is None:
            raise FailedPrecondition(f"{self.name}: only custom and directory archives can be "
                                     "read")
        if version >= (1, 15, 0):
            self.read_byte()  # compression algorithm
        else:
            self.read_int()  # compression level
        for _ in range(7):  # creation time
            self.read_int()
        self.read_str()  # database name
        if version >= (1, 10, 0):
            self.read_str()  # server version
            self.read_str()  # pg_dump version
        count = self.read_int()
        if count < 0:
            raise Corrupt(f"{self.name}: corrupt table of contents ({count} entries)")
        entries = [self._entry(version, fmt, off_size) for _ in range(count)]
        return Archive(version, fmt, tuple(entries), self.f.tell(), self.int_size)

    def _entry(self, version: tuple[int, int, int], fmt: str, off_size: int) -> TocEntry:
        dump_id = self.read_int()
        if dump_id <= 0:
            raise Corrupt(f"{self.name}: corrupt table of contents (entry id {dump_id})")
        has_data = self.read_int() != 0
        self.read_str()  # catalog table oid
        self.read_str()  # oid
        tag = self.read_str() or ""
        desc = self.read_str() or ""
        self.read_int()  # section
        for _ in range(3):  # definition, drop and copy statements
            self.read_str()
        namespace = self.read_str() or ""
        self.read_str()  # tablespace
        if version >= (1, 14, 0):
            self.read_str()  # table access method
        if version >= (1, 16, 0):
            self.read_int()  # relkind
        self.read_str()  # owner
        self.read_str()  # "false": WITH OIDS
        deps: list[int] = []
        while (dep := self.read_str()) is not None:
            with contextlib.suppress(ValueError):
                deps.append(int(dep))
        data_file, offset = "", -1
        if fmt == "custom":
            flag = self.read_byte()
            value = int.from_bytes(self.read_bytes(off_size), "little")
            if flag == _OFFSET_SET:
                offset = value
        else:
            data_file = self.read_str() or ""
        return TocEntry(dump_id, desc, namespace, tag, tuple(deps), has_data, data_file, offset)


def read_archive(path: Path) -> Archive:
    """The header and table of contents of a custom or directory archive."""
    toc = path / "toc.dat" if path.is_dir() else path
    try:
        with open(toc, "rb", buffering=CHUNK) as f:
            return _TocReader(f, path.name).read()
    except OSError as exc:
        raise unreadable(toc, exc) from None


def data_sizes(path: Path, archive: Archive) -> dict[int, int]:
    """Bytes of each entry's data as stored (compressed) in the archive."""
    sizes: dict[int, int] = {}
    if archive.format == "directory":
        for e in archive.entries:
            for ext in ("", ".gz", ".lz4", ".zst"):
                if e.data_file and (path / f"{e.data_file}{ext}").is_file():
                    sizes[e.dump_id] = (path / f"{e.data_file}{ext}").stat().st_size
                    break
        return sizes
    # Custom format: data blocks follow the TOC, each a sequence of length-prefixed
    # chunks ending with a zero length; skip through them by seeking.
    with open(path, "rb") as f:
        f.seek(archive.data_start)
        reader = _TocReader(f, path.name, archive.int_size, "data")
        while block := f.read(1):
            if block[0] not in (_BLK_DATA, _BLK_BLOBS):
                break  # not a data block: nothing more we know how to measure
            dump_id = reader.read_int()
            total = 0
            while True:
                if block[0] == _BLK_BLOBS and reader.read_int() == 0:
                    break  # end of the large objects
                while (n := reader.read_int()) != 0:
                    if n < 0:
                        raise Corrupt(f"{path.name}: corrupt data block {dump_id}")
                    f.seek(n, os.SEEK_CUR)
                    total += n
                if block[0] == _BLK_DATA:
                    break
            sizes[dump_id] = total
        if f.tell() > os.fstat(f.fileno()).st_size:
            raise Corrupt(f"{path.name}: the last data block is cut short")
    return sizes


def check_offsets(path: Path, archive: Archive) -> bool:
    """Quick structure check of a custom archive through its data offsets: one seek
    per entry (its block starts there, with its id) and the file ends with an
    end-of-data marker. False when the archive has no offsets (pg_dump wrote it to a
    pipe): walk it with :func:`data_sizes` instead."""
    entries = [e for e in archive.entries if e.has_data]
    if any(e.offset < 0 for e in entries):
        return False
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        reader = _TocReader(f, path.name, archive.int_size, "data")
        for e in entries:
            f.seek(e.offset)
            block = f.read(1)
            if not block:
                raise Corrupt(f"{path.name}: cut short: the data of {e.desc} "
                              f"{e.namespace}.{e.tag} is missing".replace(" .", " "))
            if block[0] not in (_BLK_DATA, _BLK_BLOBS) or reader.read_int() != e.dump_id:
                raise Corrupt(f"{path.name}: corrupt data block {e.dump_id}: not where the "
                              "table of contents says")
        if entries:
            # Every data block ends with a zero length (large objects with a zero oid).
            marker = archive.int_size + 1
            f.seek(max(0, size - marker))
            if f.read(marker) != bytes(marker):
                raise Corrupt(f"{path.name}: the last data block is cut short")
    return True
