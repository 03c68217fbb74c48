"""Where a dump's bytes go: sinks, stages, and the copy loop between a pipe and them.

The contract (``domain.ports.Sink``): ``write(chunk)`` pushes bytes in order,
``finish() -> list[Stored]`` publishes atomically and says what was stored,
``abort(reason)`` leaves nothing behind under a backup's name (it may follow a
failed ``finish``, and after a successful one it removes what was published:
a run that fails is never counted, so its files must not stay).

Building blocks here:

- :class:`LocalFileSink`: a private 0600 temporary file, hashed as written,
  fsynced and linked to its final name by ``finish``.
- :class:`ZstdStage`: zstd in-process (``zstandard`` releases the GIL), a new
  frame every :data:`FRAME_BYTES` of input so readers can check the end of a
  ``.sql.zst`` without decompressing all of it.
- :class:`HashStage`: passes bytes through, counting and hashing them (for the
  SHA-256 of what goes *into* a later stage, e.g. the plaintext before encryption).
- :class:`Fanout`: the same bytes to several sinks; ``finish`` returns all their
  ``Stored`` in order; if one fails, every one is aborted.
- :func:`pump`: the copy loop, from a pipe's read end into a sink.

**Plugging in** (destinations, encryption): the executor builds an :class:`Extras`
(see ``backup/fanout.py``) and passes it to :func:`build` or ``DumpProcess.run``:

- ``Extras.sinks``: more terminal sinks (e.g. ``Destination.upload(relative)``),
  fed exactly the bytes the local file gets; their ``Stored`` come back in
  ``DumpOutcome.stored`` after the local file's (which is always first).
- ``Extras.stages``: factories ``Callable[[Sink], Sink]``, each wrapping what is
  downstream of it; the first wraps the ``Fanout`` of local file + sinks, the
  next wraps that, and so on. In-process zstd, when the plan has it, is always
  outermost (compress, then encrypt, then store). An age stage goes here.
- ``Extras.suffix``: appended to the file's extension (``".age"``).

Anything in ``Extras`` forces the streaming path (pg_dump writes to a 1 MiB
pipe, :func:`pump` copies); without extras, plain and custom dumps take the
fast path: pg_dump writes the private temporary file itself (see ``dump.py``).
Note for destinations: a custom archive that went through a pipe has no data
offsets in its TOC (pg_dump cannot seek back), which makes parallel restore
and quick verification of that archive slower; uploading the finished file
(fast path) instead keeps them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..domain.models import Stored
from ..domain.ports import Sink
from .files import CHUNK, create_private_file, fsync_dir, publish, remove_quietly

FRAME_BYTES = 16 << 20  # input bytes per zstd frame
PIPE_BYTES = 1 << 20  # pipe buffer asked of the kernel for pg_dump's stdout
StageFactory = Callable[[Sink], Sink]

__all__ = ["CHUNK", "FRAME_BYTES", "PIPE_BYTES", "Extras", "Fanout", "HashStage",
           "LocalFileSink", "Sink", "StageFactory", "Stored", "ZstdStage", "build",
           "enlarge_pipe", "pump"]


@dataclass(frozen=True, slots=True)
class Extras:
    """What other features add to a run's pipeline (see the module docstring)."""

    sinks: tuple[Sink, ...] = ()
    stages: tuple[StageFactory, ...] = ()
    suffix: str = ""

    def __bool__(self) -> bool:
        return bool(self.sinks or self.stages or self.suffix)

    def abort(self, reason: str) -> None:
        """The run failed before its pipeline was built: abort the extra sinks."""
        if self.sinks:
            Fanout(self.sinks).abort(reason)


class LocalFileSink:
    """A backup file: written to the private ``temp`` (created here, 0600, never
    through a link), hashed on the way; ``finish`` fsyncs it and publishes it in
    ``directory`` as ``stem`` + ``ext`` (``_2``... when taken). ``Stored.location``
    is the published file's full path."""

    def __init__(self, temp: Path, directory: Path, stem: str, ext: str, *,
                 fd: int | None = None) -> None:
        self.temp = temp
        self.directory = directory
        self.stem = stem
        self.ext = ext
        self.fd = create_private_file(temp) if fd is None else fd
        self.size = 0
        self.hash = hashlib.sha256()
        self.final: Path | None = None
        self._digest: str | None = None
        self._closed = False

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        self.hash.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self.fd, view):]

    def finish(self) -> list[Stored]:
        os.fsync(self.fd)
        self._close()
        self.final = publish(self.temp, self.directory, self.stem, self.ext)
        return [Stored(str(self.final), self.size, self._digest or self.hash.hexdigest())]

    def adopt(self, size: int, sha256: str) -> None:
        """The file was written by someone else (pg_dump on the fast path): take its
        size and digest as computed by the caller."""
        self.size = size
        self._digest = sha256

    def abort(self, reason: str) -> None:
        self._close()
        # A directory that turned read-only keeps the file: the next start removes it.
        with contextlib.suppress(OSError):
            remove_quietly(self.temp)
            if self.final is not None:  # published, but the run failed after all
                remove_quietly(self.final)
                self.final = None
            fsync_dir(self.directory)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)


class HashStage:
    """Counts and hashes the bytes passing through to ``downstream``."""

    def __init__(self, downstream: Sink) -> None:
        self.downstream = downstream
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)
        self.downstream.write(chunk)

    def finish(self) -> list[Stored]:
        return self.downstream.finish()

    def abort(self, reason: str) -> None:
        self.downstream.abort(reason)


class ZstdStage:
    """Compresses with zstd into ``downstream``; one frame per ``frame_bytes`` of
    input, each with its checksum. threads=2 measured fastest with flat memory
    (~28 MB) on this 2-core class."""

    def __init__(self, downstream: Sink, level: int, *, threads: int = 2,
                 frame_bytes: int = FRAME_BYTES) -> None:
        import zstandard

        self.downstream = downstream
        self._cctx = zstandard.ZstdCompressor(level=level, threads=threads,
                                              write_checksum=True)
        self._finish_flag = zstandard.COMPRESSOBJ_FLUSH_FINISH
        self._obj = self._cctx.compressobj()
        self.frame_bytes = frame_bytes
        self._in_frame = 0
        self.size_in = 0

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            piece = view[:self.frame_bytes - self._in_frame]
            out = self._obj.compress(piece)
            if out:
                self.downstream.write(out)
            self._in_frame += len(piece)
            self.size_in += len(piece)
            view = view[len(piece):]
            if self._in_frame >= self.frame_bytes:
                self._end_frame()

    def _end_frame(self) -> None:
        self.downstream.write(self._obj.flush(self._finish_flag))
        self._obj = self._cctx.compressobj()
        self._in_frame = 0

    def finish(self) -> list[Stored]:
        if self._in_frame or not self.size_in:
            self._end_frame()  # an empty input still makes one (empty) frame
        return self.downstream.finish()

    def abort(self, reason: str) -> None:
        self.downstream.abort(reason)


class Fanout:
    """The same bytes to every sink, in order."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        if not sinks:
            raise ValueError("Fanout needs at least one sink")
        self.sinks = list(sinks)

    def write(self, chunk: bytes) -> None:
        for sink in self.sinks:
            sink.write(chunk)

    def finish(self) -> list[Stored]:
        stored: list[Stored] = []
        try:
            for sink in self.sinks:
                stored += sink.finish()
        except BaseException as exc:
            self.abort(f"another copy failed: {exc}")
            raise
        return stored

    def abort(self, reason: str) -> None:
        for sink in self.sinks:
            try:
                sink.abort(reason)
            except Exception:  # abort is best effort for each; the others still go
                continue


def build(primary: Sink, extras: Extras | None, zstd_level: int | None) -> Sink:
    """The pipeline of one run: [zstd →] [stages… →] Fanout(primary, extras.sinks)."""
    sink: Sink = primary
    if extras is not None and extras.sinks:
        sink = Fanout([primary, *extras.sinks])
    for stage in (extras.stages if extras is not None else ()):
        sink = stage(sink)
    if zstd_level is not None:
        sink = ZstdStage(sink, zstd_level)
    return sink


def enlarge_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """Ask for a bigger pipe buffer: pg_dump writes ~10 KB at a time and blocks on
    a full 64 KiB pipe whenever the copier is busy. Best effort (the limit is
    /proc/sys/fs/pipe-max-size)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


def pump(read_fd: int, sink: Sink, on_progress: Callable[[int], None] | None = None,
         chunk: int = CHUNK) -> int:
    """Copy everything from ``read_fd`` into ``sink`` (one read(2) per step, so a
    slow producer is never waited on for a full chunk); return the bytes read.
    ``on_progress`` gets the running total; its errors only turn it off."""
    seen = 0
    write = sink.write
    read = os.read
    while True:
        data = read(read_fd, chunk)
        if not data:
            return seen
        write(data)
        seen += len(data)
        if on_progress is not None:
            try:
                on_progress(seen)
            except Exception:  # progress is a nicety; never let it stop a backup
                on_progress = None
