"""Golden entry: tests/golden/entry_v1.sc is an entry written in format version 1 (first by
the writer as it was before entry/format.py was split by concern). Reading it must give back
every value and the metadata; writing the same state again must give the same format-defined
bytes. An accidental change of the format then fails here instead of every user's cache
silently missing (or, worse, being misread).

When a change of the format is deliberate, bump FORMAT_VERSION in statecache/entry/format.py,
keep this file's checks for the old version's refusal, add a golden file for the new version
and say so in CHANGELOG.md. Regenerate a golden file (only for a deliberate change):

    python tests/test_golden_entry.py --regen

The layout is parsed here with its own copy of the structs (not the library's), so a change
of a struct in statecache/entry/format.py is seen. What depends on the installed libraries is
not compared byte for byte: the pickle stream (numpy's reduce, pickle's framing), the zstd
frames (the zstd version) and the meta fields python/statecache_version/state_size/variables
sizes (which follow from the stream's length).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: import this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import xxhash

GOLDEN = Path(__file__).with_name("golden") / "entry_v1.sc"

HEADER = struct.Struct("<8sIIQQQ16xQ")
TRAILER = struct.Struct("<QQQ32s8s")
TABLE_HEAD = struct.Struct("<IIQ")
SECTION = struct.Struct("<QQQIB3x")
CHUNK = struct.Struct("<B3xIQ")

META = {
    "name": "golden",
    "key": "0123456789abcdef0123456789abcdef",
    "kind": "checkpoint",
    "source": {"file": "/golden/script.py", "line": 3},
    "created": 1767225600.0,
    "compute_seconds": 1.5,
    "files": [
        {"path": "/golden/data.csv", "kind": "file", "size": 12, "mtime_ns": 1767225500000000000,
         "digest": "00" * 16, "racy": False},
        {"path": "/golden/missing.csv", "kind": "missing"},
    ],
    "components": {"code": "c0de", "env": {"python": "3.x"}},
    "unbound": ["tmp"],
    "rng": {},
}


def incompressible(n: int) -> bytes:
    """``n`` bytes that zstd cannot shrink, the same on every machine (sha256 in counter mode)."""
    out = b"".join(hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(-(-n // 32)))
    return out[:n]


def golden_state() -> dict[str, Any]:
    return {
        "n": 42,
        "neg": -7,
        "big": 2**70,
        "s": "héllo, wörld",
        "words": ["alpha", "beta", "gamma"],
        "table": {"x": 1, "y": [1.5, None, True], "z": ("t", b"bytes")},
        # out of band (>= 16 KiB), stored raw: zstd cannot shrink it
        "raw": np.frombuffer(incompressible(32 << 10), dtype="<u8"),
        # out of band, stored zstd-compressed
        "packed": np.arange(8192, dtype="<i8"),
    }


def skeleton(data: bytes) -> dict[str, Any]:
    """The format-defined facts of an entry file, parsed with this test's own structs."""
    magic, version, flags, meta_len, meta_hash, data_start, header_hash = HEADER.unpack_from(data)
    assert data[40:56] == bytes(16)  # the reserved header bytes
    assert header_hash == xxhash.xxh3_64_intdigest(data[:56])
    meta_bytes = data[64 : 64 + meta_len]
    assert meta_hash == xxhash.xxh3_64_intdigest(meta_bytes)
    table_offset, table_len, table_hash, _mac, trailer_magic = TRAILER.unpack_from(
        data, len(data) - TRAILER.size
    )
    assert table_offset + table_len + TRAILER.size == len(data)
    table = data[table_offset : table_offset + table_len]
    assert table_hash == xxhash.xxh3_64_intdigest(table)
    count, chunk_size, zero = TABLE_HEAD.unpack_from(table)
    pos = TABLE_HEAD.size
    sections = []
    end = data_start
    for _ in range(count):
        offset, raw_len, stored_len, n_chunks, kind = SECTION.unpack_from(table, pos)
        pos += SECTION.size
        chunks = [CHUNK.unpack_from(table, pos + i * CHUNK.size) for i in range(n_chunks)]
        pos += n_chunks * CHUNK.size
        assert offset % 64 == 0 and offset == -(-end // 64) * 64  # aligned, contiguous
        assert sum(c[1] for c in chunks) == stored_len
        stored = data[offset : offset + stored_len]
        assert chunks[0][2] == xxhash.xxh3_64_intdigest(stored[: chunks[0][1]])
        codecs = [c[0] for c in chunks]
        section: dict[str, Any] = {"kind": kind, "codecs": codecs}
        if kind == 1:  # buffers: their length is the array's; raw ones are the array's bytes
            section["raw_len"] = raw_len
            if codecs == [0] * n_chunks:
                section["raw_sha256"] = hashlib.sha256(stored).hexdigest()
        sections.append(section)
        end = offset + stored_len
    assert pos == len(table)
    assert table_offset == -(-end // 64) * 64
    return {
        "magic": magic,
        "version": version,
        "flags": flags,
        "data_start": data_start - (-(-(64 + meta_len) // 64) * 64),  # 0: right after the meta
        "meta_keys": sorted(json.loads(meta_bytes)),
        "chunk_size": chunk_size,
        "table_zero": zero,
        "sections": sections,
        "trailer_magic": trailer_magic,
        "mac": _mac,
    }


def test_golden_entry_reads_back_every_value_and_the_metadata() -> None:
    from statecache.entry.reader import read_entry, read_meta, verify_entry

    expected = golden_state()
    for mmap in (False, True):
        meta, state = read_entry(GOLDEN, mmap=mmap)
        assert set(state) == set(expected)
        for name in ("n", "neg", "big", "s", "words", "table"):
            assert state[name] == expected[name] and type(state[name]) is type(expected[name])
        for name in ("raw", "packed"):
            assert state[name].dtype == expected[name].dtype
            assert state[name].tobytes() == expected[name].tobytes()
    assert read_meta(GOLDEN) == meta == verify_entry(GOLDEN)
    for field, value in META.items():
        assert meta[field] == value, field
    assert meta["format"] == 1 and meta["pickler"] == "pickle" and meta["signed"] is False
    assert list(meta["variables"]) == list(expected)
    assert meta["variables"]["raw"]["type"] == "numpy.ndarray"
    assert meta["variables"]["raw"]["size"] >= 32 << 10
    assert meta["variables"]["s"] == {"type": "str", "size": meta["variables"]["s"]["size"]}
    assert meta["state_size"] >= (32 << 10) + (64 << 10)


def test_golden_entry_layout_is_the_one_documented() -> None:
    """Pinned facts of format version 1 as written: raw buffer, compressed buffer, raw stream."""
    sk = skeleton(GOLDEN.read_bytes())
    assert sk["magic"] == b"\x89SCACHE\n" and sk["version"] == 1 and sk["flags"] == 0
    assert sk["trailer_magic"] == b"SCTABLE\n" and sk["mac"] == bytes(32)
    assert sk["data_start"] == 0 and sk["chunk_size"] == 4 << 20 and sk["table_zero"] == 0
    stream, raw, packed = sk["sections"]
    assert stream == {"kind": 0, "codecs": [0]}  # a small stream is stored raw
    assert raw["raw_len"] == 32 << 10 and raw["codecs"] == [0]
    assert raw["raw_sha256"] == hashlib.sha256(incompressible(32 << 10)).hexdigest()
    assert packed == {"kind": 1, "codecs": [1], "raw_len": 64 << 10}
    assert "format" in sk["meta_keys"] and "variables" in sk["meta_keys"]


def test_writing_the_same_state_again_gives_the_same_format_defined_bytes(tmp_path: Path) -> None:
    from statecache.entry.writer import write_entry

    fresh = tmp_path / "again.sc"
    # "size" takes the golden file's compress decisions (which buffer is compressed is the
    # writer's policy, not the format: "auto" keeps the 64 KiB arange raw since issue 12)
    write_entry(fresh, golden_state(), META, compress="size")
    new, old = fresh.read_bytes(), GOLDEN.read_bytes()
    assert skeleton(new) == skeleton(old)
    meta_len = struct.unpack_from("<Q", new, 16)[0]
    old_meta_len = struct.unpack_from("<Q", old, 16)[0]
    if new[64 : 64 + meta_len] == old[64 : 64 + old_meta_len]:
        # Same Python, numpy, zstd and statecache version as the golden file's writer: the
        # whole file is the same, byte for byte (the writer adds nothing random or dated).
        assert new == old


def test_a_copy_of_the_golden_entry_in_a_cache_is_a_hit_for_its_key(tmp_path: Path) -> None:
    """Through the store, as a run finds it: the golden entry in its place is found and read."""
    from statecache.entry.reader import read_entry
    from statecache.store.store import Store

    store = Store(str(tmp_path / "cache"))
    path = Path(store.entry_path(META["name"], META["key"]))
    path.parent.mkdir(mode=0o700)
    shutil.copyfile(GOLDEN, path)
    [(found, meta)] = store.versions(META["name"])
    assert found == str(path) and meta["key"] == META["key"]
    assert read_entry(path)[1]["words"] == ["alpha", "beta", "gamma"]


if __name__ == "__main__" and sys.argv[1:] == ["--regen"]:
    from statecache.entry.writer import write_entry

    GOLDEN.parent.mkdir(exist_ok=True)
    write_entry(GOLDEN, golden_state(), META, compress="size")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
