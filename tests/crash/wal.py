"""Just enough of SQLite's WAL file format (https://www.sqlite.org/fileformat.html#the_write_ahead_log)
to find the frames a recovery would keep, and so to tear the last one on purpose.

A WAL is a 32-byte header and frames of a 24-byte header plus one page. A frame is valid
when its salts match the header's and its checksum (cumulative over the header and every
frame before it) is right; a *commit* frame (non-zero ``db_size``) ends a transaction.
Recovery keeps every transaction up to the last valid commit frame before the first
invalid frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24
MAGIC_LE, MAGIC_BE = 0x377F0682, 0x377F0683
MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based
    offset: int  # of its header in the file
    page: int
    db_size: int  # non-zero: a commit frame

    @property
    def commit(self) -> bool:
        return self.db_size != 0


@dataclass(frozen=True)
class Wal:
    page_size: int
    salts: tuple[int, int]
    frames: list[Frame]  # the valid frames, in order, up to the last valid commit frame
    file_size: int

    def frame_size(self) -> int:
        return FRAME_HEADER + self.page_size

    def commits(self) -> list[Frame]:
        return [f for f in self.frames if f.commit]


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & MASK
        s1 = (s1 + words[i + 1] + s0) & MASK
    return s0, s1


def read_wal(path: Path) -> Wal:
    data = path.read_bytes()
    if len(data) < HEADER:
        raise ValueError(f"{path}: {len(data)} bytes, no WAL header")
    magic, _version, page_size, _ckpt, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:HEADER])
    if magic not in (MAGIC_LE, MAGIC_BE):
        raise ValueError(f"{path}: not a WAL (magic {magic:#x})")
    big = magic == MAGIC_BE
    s0, s1 = _checksum(data[:24], big, 0, 0)
    if (s0, s1) != (c0, c1):
        raise ValueError(f"{path}: the WAL header checksum is wrong")
    frames: list[Frame] = []
    kept = 0
    offset = HEADER
    size = FRAME_HEADER + page_size
    while offset + size <= len(data):
        page, db_size, fs1, fs2, fc0, fc1 = struct.unpack(">6I", data[offset : offset + FRAME_HEADER])
        if (fs1, fs2) != (salt1, salt2):
            break
        s0, s1 = _checksum(data[offset : offset + 8], big, s0, s1)
        s0, s1 = _checksum(data[offset + FRAME_HEADER : offset + size], big, s0, s1)
        if (s0, s1) != (fc0, fc1):
            break
        frames.append(Frame(len(frames), offset, page, db_size))
        if db_size:
            kept = len(frames)
        offset += size
    return Wal(page_size, (salt1, salt2), frames[:kept], len(data))
