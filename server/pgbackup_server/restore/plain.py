"""Plain SQL backups as a stream: read without following links, decompressed on
the fly (zstd, gzip) with corruption and truncation detected, and checked for
the completion marker pg_dump ends a complete dump with."""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..backup.files import CHUNK
from ..domain.errors import FailedPrecondition
from ..domain.models import Run
from .models import Corrupt, unreadable

_MARKER = re.compile(rb"^-- PostgreSQL database (?:cluster )?dump complete\s*$", re.MULTILINE)


class Decoder:
    """Decompresses a plain backup incrementally, detecting corruption and truncation."""

    def __init__(self, method: str) -> None:
        if method not in ("none", "zstd", "gzip"):
            raise FailedPrecondition(f"{method}-compressed plain backups cannot be read "
                                     "in-process; decompress the file by hand")
        self.method = method
        self._obj: Any = None
        self._pending = False  # data went into a frame/member that has not ended yet
        self._members = 0
        self._new()

    def _new(self) -> None:
        if self.method == "zstd":
            import zstandard

            self._obj = zstandard.ZstdDecompressor().decompressobj()
        elif self.method == "gzip":
            self._obj = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        if self.method == "none":
            return data
        out: list[bytes] = []
        while data:
            self._pending = True
            try:
                out.append(self._obj.decompress(data))
            except zlib.error as exc:
                raise Corrupt(f"gzip data is corrupt: {exc}") from None
            except Exception as exc:  # zstandard.ZstdError, without importing it eagerly
                raise Corrupt(f"zstd data is corrupt: {exc}") from None
            if not self._obj.eof:
                break
            # One frame (zstd) or member (gzip) ended; anything after it is another one.
            self._members += 1
            self._pending = False
            data = self._obj.unused_data
            self._new()
        return b"".join(out)

    def finish(self) -> None:
        if self.method != "none" and (self._pending or not self._members):
            unit = "frame" if self.method == "zstd" else "member"
            raise Corrupt(f"{self.method} stream is truncated: the last {unit} is incomplete")


def compression_method(run: Run) -> str:
    return run.compression.method.value if run.compression else "none"


def raw_chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes as stored, never through a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise unreadable(path, exc) from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def plain_sql(run: Run, raw: Iterable[bytes] | None = None) -> Iterator[bytes]:
    """The SQL of a plain backup, decompressed on the fly (from ``raw``, the stored
    bytes already decrypted, when given; else from its file)."""
    decoder = Decoder(compression_method(run))
    for chunk in raw if raw is not None else raw_chunks(Path(run.file_path)):
        if out := decoder.feed(chunk):
            yield out
    decoder.finish()


def check_plain_end(head: bytes, tail: bytes) -> None:
    """pg_dump (and pg_dumpall) end a complete plain dump with a marker comment and,
    since 18, an ``\\unrestrict`` line matching the ``\\restrict`` key at the top."""
    found = list(_MARKER.finditer(tail))
    if not found:
        raise Corrupt('the SQL does not end with pg_dump\'s completion marker ("-- '
                      'PostgreSQL database dump complete"): the dump is incomplete')
    rest = tail[found[-1].end():]
    for line in rest.splitlines():
        text = line.strip()
        if text and not text.startswith((b"--", b"\\unrestrict ")):
            raise Corrupt("unexpected content after pg_dump's completion marker: "
                          f"{text[:80].decode('utf-8', 'replace')!r}")
    key = re.search(rb"^\\restrict (\S+)", head, re.MULTILINE)
    if key and b"\\unrestrict " + key.group(1) not in tail:
        raise Corrupt("the SQL lacks the closing \\unrestrict line matching its \\restrict "
                      "key: the dump is incomplete")
