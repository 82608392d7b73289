"""The binary layout of an entry file: constants, structs, and packing/parsing of the parts.

Layout (all integers little-endian; every section starts at a multiple of 64 bytes)::

    header   64 B   magic b"\\x89SCACHE\\n", u32 format version, u32 flags (bit 0: signed),
                    u64 meta length, u64 xxh3 of meta, u64 data start, 16 B zero,
                    u64 xxh3 of the 56 bytes before it
    meta            UTF-8 JSON: the caller's metadata plus format, pickler, variables,
                    state_size, python, statecache_version, signed
    sections        section 0: the pickle stream (protocol 5, one dump per variable, one
                    shared memo so that references between variables survive); then one
                    section per out-of-band buffer of 16 KiB or more, in the order the pickler
                    produced them (smaller buffers stay in the stream)
    table           u32 section count, u32 chunk size, u64 zero; per section u64 offset,
                    u64 raw length, u64 stored length, u32 chunk count, u8 kind, 3 B zero;
                    then per chunk u8 codec (0 raw, 1 zstd frame), 3 B zero, u32 stored
                    length, u64 xxh3 of the stored bytes
    trailer  64 B   u64 table offset, u64 table length, u64 xxh3 of the table,
                    32 B HMAC-SHA256 (zero when unsigned), magic b"SCTABLE\\n"

A section is cut into chunks of ``chunk size`` raw bytes (the last one shorter); each chunk
is stored raw or as one zstd frame, so big sections compress and decompress in parallel
threads and every stored byte is covered by a checksum. Which chunks are compressed is the
writer's policy (``policy``), not the format; raw sections are contiguous in the file, so a
reader can ``readinto`` them straight into their final memory or memory-map them.

The HMAC (with a secret) covers the header, the meta, the stored pickle stream, the table and
the first 24 bytes of the trailer: the code-bearing bytes are authenticated directly, the
buffers through their xxh3 checksums in the table (xxh3 detects damage, not a deliberate
forgery of numeric data).

The table sits at the end because compressed sizes are known only once a section is written;
``read_meta`` needs only the header and the meta, one read at the start of the file.

The other modules of this package: ``meta`` (the JSON schema), ``codec`` (chunks, zstd, threads),
``policy`` (which chunks are compressed),
``pickling`` (pickle, cloudpickle, dill), ``writer``, ``reader``, ``stream`` and ``progress``.
"""

from __future__ import annotations

import struct

import xxhash

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

FORMAT_VERSION = 1

MAGIC = b"\x89SCACHE\n"
TRAILER_MAGIC = b"SCTABLE\n"
ALIGN = 64
CHUNK = 4 << 20  # raw bytes per chunk: the unit of compression, checksumming and threading
FLAG_SIGNED = 1
RAW, ZSTD = 0, 1  # chunk codecs
KIND_STREAM, KIND_BUFFER = 0, 1  # section kinds

HEADER = struct.Struct("<8sIIQQQ16xQ")
TRAILER = struct.Struct("<QQQ32s8s")
TRAILER_HEAD = struct.Struct("<QQQ")  # the first 24 bytes of the trailer (signed)
TABLE_HEAD = struct.Struct("<IIQ")
SECTION = struct.Struct("<QQQIB3x")
CHUNK_RECORD = struct.Struct("<B3xIQ")

# One section as the writer produced it: (offset, raw length, stored length, kind, chunks)
# with chunks as (codec, stored length, xxh3 of the stored bytes).
SectionRecord = tuple[int, int, int, int, list[tuple[int, int, int]]]


def align(n: int) -> int:
    """``n`` rounded up to the next multiple of ALIGN."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


def xxh(data: Any) -> int:
    """The checksum of every part of the file: xxh3-64."""
    return xxhash.xxh3_64_intdigest(data)


def pack_header(meta_bytes: bytes, signed: bool) -> bytes:
    """The 64-byte header for an entry whose metadata is ``meta_bytes``."""
    head = HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        FLAG_SIGNED if signed else 0,
        len(meta_bytes),
        xxh(meta_bytes),
        align(HEADER.size + len(meta_bytes)),
        0,
    )
    return head[:-8] + struct.pack("<Q", xxh(head[:-8]))


def pack_trailer_head(table_offset: int, table_bytes: bytes) -> bytes:
    return TRAILER_HEAD.pack(table_offset, len(table_bytes), xxh(table_bytes))


class Section:
    """One section as the table describes it (read side)."""

    __slots__ = ("offset", "raw_len", "stored_len", "kind", "chunks")

    def __init__(
        self,
        offset: int,
        raw_len: int,
        stored_len: int,
        kind: int,
        chunks: list[tuple[int, int, int]],
    ):
        self.offset = offset
        self.raw_len = raw_len
        self.stored_len = stored_len
        self.kind = kind
        self.chunks = chunks  # (codec, stored length, xxh3)

    @property
    def all_raw(self) -> bool:
        return all(c[0] == RAW for c in self.chunks)


def pack_table(table: list[SectionRecord]) -> bytes:
    parts = [TABLE_HEAD.pack(len(table), CHUNK, 0)]
    for offset, raw_len, stored_len, kind, chunks in table:
        parts.append(SECTION.pack(offset, raw_len, stored_len, len(chunks), kind))
        parts.extend(CHUNK_RECORD.pack(*c) for c in chunks)
    return b"".join(parts)


def parse_table(table: bytes, data_start: int, table_offset: int) -> tuple[list[Section], int]:
    """The sections and chunk size of a table; ValueError or struct.error if it is malformed."""
    count, chunk_size, _ = TABLE_HEAD.unpack_from(table, 0)
    if not 4096 <= chunk_size <= (1 << 30):
        raise ValueError(f"chunk size {chunk_size}")
    pos = TABLE_HEAD.size
    end_of_previous = data_start
    sections = []
    for _ in range(count):
        offset, raw_len, stored_len, n_chunks, kind = SECTION.unpack_from(table, pos)
        pos += SECTION.size
        if kind not in (KIND_STREAM, KIND_BUFFER) or offset % ALIGN or offset < end_of_previous:
            raise ValueError("bad section entry")
        if offset + stored_len > table_offset:
            raise ValueError("section runs past the table")
        if n_chunks != -(-raw_len // chunk_size):
            raise ValueError("chunk count does not match the section length")
        chunks = []
        total = 0
        for i in range(n_chunks):
            codec, n, checksum = CHUNK_RECORD.unpack_from(table, pos)
            pos += CHUNK_RECORD.size
            raw = min(chunk_size, raw_len - i * chunk_size)
            if codec not in (RAW, ZSTD) or (codec == RAW and n != raw):
                raise ValueError("bad chunk entry")
            chunks.append((codec, n, checksum))
            total += n
        if total != stored_len:
            raise ValueError("chunk lengths do not add up")
        sections.append(Section(offset, raw_len, stored_len, kind, chunks))
        end_of_previous = offset + stored_len
    if pos != len(table):
        raise ValueError("trailing bytes")
    return sections, chunk_size
