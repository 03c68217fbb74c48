"""Walking a zstd file's frames and blocks without decompressing them (RFC 8878).

The service writes ``.sql.zst`` backups as one frame per 16 MiB of SQL
(``backup.pipeline.ZstdStage``), so a reader can check the whole file's
structure by reading only its 3-byte block headers, and the end of the SQL by
decompressing only the last frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .models import Corrupt

MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # 0x184D2A50..0x184D2A5F
_MAX_BLOCK = 128 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    start: int  # offset of the frame's magic number
    end: int  # offset just past the frame (its checksum included)
    skippable: bool = False


class _Reader:
    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.size, self.name = fd, size, name

    def read(self, offset: int, n: int) -> bytes:
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise Corrupt(f"{self.name}: zstd stream is truncated: the last frame is "
                          "incomplete")
        return data


def walk_frames(fd: int, name: str = "file") -> list[Frame]:
    """Every frame of the zstd file open at ``fd``; Corrupt when the file is not a
    sequence of complete zstd frames."""
    size = os.fstat(fd).st_size
    reader = _Reader(fd, size, name)
    frames: list[Frame] = []
    pos = 0
    if size == 0:
        raise Corrupt(f"{name}: empty file, no zstd frame")
    while pos < size:
        magic = int.from_bytes(reader.read(pos, 4), "little")
        if magic & 0xFFFFFFF0 == _SKIPPABLE:
            length = int.from_bytes(reader.read(pos + 4, 4), "little")
            end = pos + 8 + length
            if end > size:
                reader.read(size, 1)  # raises: truncated
            frames.append(Frame(pos, end, skippable=True))
            pos = end
            continue
        if magic != MAGIC:
            raise Corrupt(f"{name}: zstd data is corrupt: no frame starts at byte {pos}")
        end = _frame_end(reader, pos)
        frames.append(Frame(pos, end))
        pos = end
    return frames


def _frame_end(reader: _Reader, start: int) -> int:
    descriptor = reader.read(start + 4, 1)[0]
    fcs_flag, single_segment = descriptor >> 6, bool(descriptor & 0x20)
    if descriptor & 0x08:
        raise Corrupt(f"{reader.name}: zstd data is corrupt: reserved bit set in the frame "
                      f"header at byte {start}")
    checksum = 4 if descriptor & 0x04 else 0
    dict_bytes = (0, 1, 2, 4)[descriptor & 0x03]
    fcs_bytes = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    pos = start + 5 + (0 if single_segment else 1) + dict_bytes + fcs_bytes
    while True:
        header = int.from_bytes(reader.read(pos, 3), "little")
        last, kind, block_size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            raise Corrupt(f"{reader.name}: zstd data is corrupt: reserved block type at "
                          f"byte {pos}")
        if kind == 1:  # RLE: one byte, repeated block_size times
            stored = 1
        else:
            if block_size > _MAX_BLOCK:
                raise Corrupt(f"{reader.name}: zstd data is corrupt: a {block_size}-byte "
                              f"block at byte {pos}")
            stored = block_size
        pos += 3 + stored
        if pos > reader.size:
            reader.read(reader.size, 1)  # raises: truncated
        if last:
            break
    if pos + checksum > reader.size:
        reader.read(reader.size, 1)
    return pos + checksum


def tail_frames(frames: list[Frame], count: int = 2) -> list[Frame]:
    """The last ``count`` data frames (skippable ones left out)."""
    return [f for f in frames if not f.skippable][-count:]


class BlockCutter:
    """Cuts a zstd stream, pushed in chunks of any size, so that each piece holds at
    most one block's payload: decompressing a piece then yields at most 128 KiB,
    whatever the ratio. Structure errors are left to the decompressor."""

    def __init__(self) -> None:
        self._state = "magic"
        self._head = bytearray()  # header bytes collected so far
        self._left = 0  # payload bytes still to pass in the current state
        self._last = False
        self._checksum = 0

    def cut(self, data: bytes | memoryview) -> Iterator[memoryview]:
        view = memoryview(data)
        pos = start = 0
        n = len(view)
        while pos < n:
            if self._left:  # inside a block, a frame header's tail, a checksum...
                take = min(self._left, n - pos)
                pos += take
                self._left -= take
                if not self._left:
                    self._after_payload()
                    if self._state in ("block", "magic"):
                        yield view[start:pos]
                        start = pos
                continue
            self._head.append(view[pos])
            pos += 1
            self._parse_head()
        if start < n:
            yield view[start:]

    def _parse_head(self) -> None:
        head = self._head
        if self._state == "magic" and len(head) == 4:
            magic = int.from_bytes(head, "little")
            self._state = "skip_size" if magic & 0xFFFFFFF0 == _SKIPPABLE else "descriptor"
            head.clear()
        elif self._state == "skip_size" and len(head) == 4:
            self._state, self._left = "skip", int.from_bytes(head, "little")
            head.clear()
            if not self._left:
                self._after_payload()
        elif self._state == "descriptor":
            d = head[0]
            head.clear()
            single = bool(d & 0x20)
            self._checksum = 4 if d & 0x04 else 0
            self._state = "header"
            self._left = ((0 if single else 1) + (0, 1, 2, 4)[d & 0x03]
                          + (1 if single else 0, 2, 4, 8)[d >> 6])
            if not self._left:
                self._after_payload()
        elif self._state == "block" and len(head) == 3:
            header = int.from_bytes(head, "little")
            head.clear()
            self._last = bool(header & 1)
            self._state = "payload"
            self._left = 1 if (header >> 1) & 3 == 1 else header >> 3
            if not self._left:
                self._after_payload()

    def _after_payload(self) -> None:
        """A state's bytes are through: move to what follows."""
        if self._state == "header":
            self._state = "block"
        elif self._state == "payload":
            if not self._last:
                self._state = "block"
            elif self._checksum:
                self._state, self._left = "checksum", self._checksum
            else:
                self._state = "magic"
        else:  # checksum or skippable frame done
            self._state = "magic"
