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
from .zstdframes import BlockCutter

PIECE = 1 << 20
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
        self._cutter = BlockCutter()  # one for the whole stream: frames follow each other
        self._new()

    def _new(self) -> None:
        if self.method == "zstd":
            import zstandard

            self._obj = zstandard.ZstdDecompressor().decompressobj()
        elif self.method == "gzip":
            self._obj = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        """All the output for ``data`` at once (small inputs; see :meth:`pieces`)."""
        return b"".join(self.pieces(data))

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The output for ``data`` in pieces of about :data:`PIECE` bytes at most, so
        memory stays flat whatever the compression ratio (pgbench's filler: 120x)."""
        if self.method == "none":
            if data:
                yield data
            return
        view = memoryview(data)
        more = False  # zlib may hold output back when it stops at the limit
        while view or more:
            self._pending = True
            if self.method == "gzip":
                try:
                    out = self._obj.decompress(view, PIECE)
                except zlib.error as exc:
                    raise Corrupt(f"gzip data is corrupt: {exc}") from None
                view = memoryview(self._obj.unconsumed_tail)
                more = len(out) == PIECE
            else:
                # zstandard has no output limit per call: feed it one block at a time
                # (a block yields at most 128 KiB), so memory stays flat.
                step = next(self._cutter.cut(view))
                try:
                    out = self._obj.decompress(step)
                except Exception as exc:  # zstandard.ZstdError, not imported eagerly
                    raise Corrupt(f"zstd data is corrupt: {exc}") from None
                view = view[len(step):]
            if out:
                yield out
            if not self._obj.eof:
                continue
            # One frame (zstd) or member (gzip) ended; anything after it is another one.
            self._members += 1
            self._pending, more = False, False
            # zlib leaves the rest in unused_data (and, with a limit, unconsumed_tail
            # too); zstd saw only the step.
            rest = b"" if self.method == "gzip" else bytes(view)
            view = memoryview(self._obj.unused_data + rest)
            self._new()

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
        yield from decoder.pieces(chunk)
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
