"""Where the parts of an entry file are (read with the entry module's own reader), so that damage
can be aimed at each part and the bytes the format does not check (alignment padding, the unused
signature field of an unsigned entry) can be told apart."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from statecache.entry.format import FLAG_SIGNED, HEADER, TRAILER
from statecache.entry.reader import Reader


@dataclass
class Layout:
    size: int
    regions: dict[str, tuple[int, int]]  # name -> [start, end)
    unchecked: list[tuple[int, int]]  # byte ranges no check covers
    buffer_sections: list[tuple[int, int]]
    signed: bool


def layout_of(path: Path) -> Layout:
    with Reader(path) as reader:
        reader.read_table()
        size = reader.size
        meta_end = HEADER.size + len(reader.meta_bytes)
        regions = {"header": (0, HEADER.size), "meta": (HEADER.size, meta_end)}
        unchecked = [(meta_end, reader.data_start)]
        end = reader.data_start
        buffers = []
        for i, sec in enumerate(reader.sections):
            if sec.offset > end:
                unchecked.append((end, sec.offset))
            regions["stream" if i == 0 else f"buffer{i}"] = (sec.offset, sec.offset + sec.stored_len)
            if i:
                buffers.append((sec.offset, sec.offset + sec.stored_len))
            end = sec.offset + sec.stored_len
        table_offset, table_len, _ = struct.unpack("<QQQ", reader.trailer_head)
        if table_offset > end:
            unchecked.append((end, table_offset))
        regions["table"] = (table_offset, table_offset + table_len)
        regions["trailer"] = (size - TRAILER.size, size)
        signed = bool(reader.flags & FLAG_SIGNED)
        if not signed:  # the 32-byte signature field, zero and unread without a secret
            unchecked.append((size - TRAILER.size + 24, size - TRAILER.size + 56))
        return Layout(size, regions, [r for r in unchecked if r[0] < r[1]], buffers, signed)


def changed_offsets(before: bytes, after: bytes) -> list[int]:
    import numpy as np

    n = min(len(before), len(after))
    a = np.frombuffer(before, dtype=np.uint8, count=n)
    b = np.frombuffer(after, dtype=np.uint8, count=n)
    return [int(i) for i in np.flatnonzero(a != b)]


def only_unchecked(layout: Layout, before: bytes, after: bytes) -> bool:
    """True when ``after`` differs from ``before`` only in bytes that no check covers."""
    if len(before) != len(after):
        return False
    return all(
        any(lo <= i < hi for lo, hi in layout.unchecked) for i in changed_offsets(before, after)
    )
