"""The entry file format: round trips of every storage path, damage detection, signing, and
the atomic write (temp file, mode 0600, clean-up on failure)."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import xxhash

from statecache._errors import EntryError, UnpicklableError
from statecache.entry import progress as _progress
from statecache.entry.format import FORMAT_VERSION
from statecache.entry.reader import Reader, read_entry, read_meta, verify_entry
from statecache.entry.writer import WrittenEntry, write_entry
from statecache.store.layout import ENTRY_SUFFIX, is_temp_file

MB = 1 << 20


def roundtrip(tmp_path, state, *, mmap=False, meta=None, **kw):
    path = tmp_path / f"e{ENTRY_SUFFIX}"
    written = write_entry(path, state, meta or {"name": "t"}, **kw)
    got_meta, got = read_entry(path, mmap=mmap, secret=kw.get("secret"))
    return written, got_meta, got


def assert_same_array(a, b):
    assert type(b) is type(a)
    assert b.dtype == a.dtype and b.shape == a.shape
    if a.dtype.hasobject:
        assert np.array_equal(a, b)
    else:  # bit for bit, NaN payloads included
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def is_mapped(array):
    """Whether ``array``'s memory is a memory map of a file (the entry), not anonymous memory
    (which small buffers share as one anonymous map: entry/memory.py)."""
    import mmap as mmap_module

    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    mapping = getattr(base, "obj", None)
    if not isinstance(mapping, mmap_module.mmap):
        return False
    try:
        mapping.size()  # the size of the mapped file; an anonymous map has no file
    except OSError:
        return False
    return True


def entry_regions(path):
    """Byte ranges of the file that checksums cover, from the file's own table."""
    with Reader(path) as r:
        r.read_table()
        meta_len = len(r.meta_bytes)
        regions = [(0, 64), (64, 64 + meta_len)]
        regions += [(s.offset, s.offset + s.stored_len) for s in r.sections]
        table_offset = r.size - 64 - len(r.table_bytes)
        regions += [(table_offset, r.size - 64), (r.size - 64, r.size - 40), (r.size - 8, r.size)]
        return regions, r.sections


def covered(offset, regions):
    return any(lo <= offset < hi for lo, hi in regions)


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


# ---------------------------------------------------------------- round trips


def test_meta_keeps_caller_fields_and_adds_writer_fields(tmp_path):
    written, meta, state = roundtrip(
        tmp_path, {"x": 1, "y": "two"}, meta={"name": "feat", "key": "abc"}
    )
    assert state == {"x": 1, "y": "two"}
    assert isinstance(written, WrittenEntry)
    assert written.size == os.path.getsize(written.path)
    assert written.pickler == "pickle" and written.seconds >= 0
    assert meta["name"] == "feat" and meta["key"] == "abc"
    assert meta["format"] == FORMAT_VERSION
    assert meta["pickler"] == "pickle"
    assert meta["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert meta["signed"] is False
    assert list(meta["variables"]) == ["x", "y"]
    assert meta["variables"]["y"]["type"] == "str"
    assert read_meta(written.path) == meta
    assert verify_entry(written.path) == meta


def test_empty_state(tmp_path):
    _, meta, state = roundtrip(tmp_path, {})
    assert state == {} and meta["variables"] == {}


def test_variable_order_is_kept(tmp_path):
    names = [f"v{i}" for i in range(50)][::-1]
    _, _, state = roundtrip(tmp_path, {n: i for i, n in enumerate(names)})
    assert list(state) == names


@pytest.mark.parametrize(
    "dtype",
    [
        "float64",
        "float32",
        "int8",
        "uint16",
        "int64",
        "complex128",
        "bool",
        "datetime64[ns]",
        "<U5",
    ],
)
@pytest.mark.parametrize("kind", ["random", "constant"])
@pytest.mark.parametrize("mmap", [False, True])
def test_numpy_dtypes(tmp_path, dtype, kind, mmap):
    rng = np.random.default_rng(1)
    n = 300_000
    if kind == "random":
        raw = rng.integers(0, 255, n * 16, dtype=np.uint8)
        a = raw.view(np.uint8)[: n * np.dtype(dtype).itemsize].view(dtype)
        if dtype == "bool":
            a = raw[:n].astype(bool)
        if dtype == "<U5":
            a = rng.integers(0, 0x10000, n * 5, dtype=np.uint32).view("<U5")
    else:
        a = np.zeros(n, dtype=dtype)
    w, _, state = roundtrip(tmp_path, {"a": a}, mmap=mmap)
    assert_same_array(a, state["a"])
    assert state["a"].flags.writeable
    # random bytes are stored raw (mapped when mmap=True), constant ones compressed; random
    # bools (nearly all True) are far smaller compressed too, while UCS-4 text below U+10000
    # (zstd halves it) stays raw under the default policy: decoding it is slower than a copy
    stored_raw = kind == "random" and dtype != "bool"
    assert (w.size >= a.nbytes) == stored_raw
    # numpy pickles datetime64 arrays in-band (in the stream), so they are never mapped
    assert is_mapped(state["a"]) == (mmap and stored_raw and dtype != "datetime64[ns]")


def test_incompressible_buffer_stored_raw_and_compressible_one_compressed(tmp_path):
    rng = np.random.default_rng(2)
    noise = rng.random(3 * MB // 8 * 4)  # 12 MB of random floats: several chunks, raw
    zeros = np.zeros(12 * MB // 8)
    (tmp_path / "n").mkdir()
    w1, _, s1 = roundtrip(tmp_path / "n", {"a": noise})
    assert_same_array(noise, s1["a"])
    assert noise.nbytes <= w1.size < noise.nbytes * 1.01
    w2, _, s2 = roundtrip(tmp_path, {"a": zeros})
    assert_same_array(zeros, s2["a"])
    assert w2.size < zeros.nbytes / 100


@pytest.mark.parametrize("mode", ["auto", "size"])
def test_integers_with_small_values_compress_when_size_is_asked_for(tmp_path, mode):
    """zstd shrinks them about 10x but decodes them at a fraction of a copy's speed: "auto"
    keeps them raw for the restore's sake (issue 12), "size" compresses them."""
    a = np.random.default_rng(3).integers(0, 10, 2 * MB, dtype=np.int64)
    w, _, s = roundtrip(tmp_path, {"a": a}, compress=mode)
    assert_same_array(a, s["a"])
    if mode == "size":
        assert w.size < a.nbytes / 4
    else:
        assert a.nbytes <= w.size < a.nbytes * 1.01


@pytest.mark.parametrize("mmap", [False, True])
def test_array_layouts(tmp_path, mmap):
    base = np.arange(600_000, dtype=np.float64).reshape(600, 1000)
    state = {
        "fortran": np.asfortranarray(base),
        "strided": base[::3, ::2],
        "transposed": base.T,
        "empty": np.empty((0, 7), dtype=np.int32),
        "empty_f": np.empty((5, 0), dtype=np.float32, order="F"),
        "scalar": np.float32(3.5),
        "zero_d": np.array(7),
        "objects": np.array([{"a": 1}, "text", None, [1, 2]], dtype=object),
        "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("i", "i4"), ("f", "f8")]),
        "readonly": np.frombuffer(bytes(range(256)) * 1000, dtype=np.uint8),
    }
    _, _, got = roundtrip(tmp_path, state, mmap=mmap)
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            assert_same_array(value, got[name])
        else:
            assert got[name] == value and type(got[name]) is type(value)
    assert got["fortran"].flags.f_contiguous and not got["fortran"].flags.c_contiguous
    assert got["objects"][0] == {"a": 1} and got["objects"][3] == [1, 2]
    assert not got["readonly"].flags.writeable
    assert got["strided"].flags.writeable


@pytest.mark.parametrize("mmap", [False, True])
def test_bytes_bytearray_memoryview(tmp_path, mmap):
    rng = np.random.default_rng(4)
    state = {
        "small_bytes": b"abc",
        "big_random_bytes": rng.bytes(9 * MB),
        "big_zero_bytes": bytes(9 * MB),
        "bytearray": bytearray(rng.bytes(5 * MB)),
        "small_bytearray": bytearray(b"xyz"),
        "memoryview": memoryview(b"hello world"),
    }
    # "size": the stream chunks that are half zeros are compressed too (under "auto" they stay
    # raw, as decoding them is slower than a copy; only the all-zero chunk is compressed)
    w, meta, got = roundtrip(tmp_path, state, mmap=mmap, compress="size")
    before = (tmp_path / f"e{ENTRY_SUFFIX}").read_bytes()
    assert got["small_bytes"] == b"abc"
    assert got["big_random_bytes"] == state["big_random_bytes"]
    assert got["big_zero_bytes"] == state["big_zero_bytes"]
    assert type(got["bytearray"]) is bytearray and got["bytearray"] == state["bytearray"]
    assert got["small_bytearray"] == bytearray(b"xyz")
    assert bytes(got["memoryview"]) == b"hello world"
    assert meta["pickler"] == "cloudpickle"  # plain pickle refuses memoryview
    assert w.size < 15 * MB  # the zero bytes were compressed
    got["bytearray"][:4] = b"\0\0\0\0"  # a restored bytearray is the caller's own memory
    got["bytearray"] += b"more"
    assert (tmp_path / f"e{ENTRY_SUFFIX}").read_bytes() == before
    _, again = read_entry(tmp_path / f"e{ENTRY_SUFFIX}", mmap=mmap)
    assert again["bytearray"] == state["bytearray"]


def test_many_small_objects_stream_over_several_chunks(tmp_path):
    data = {i: (str(i), i * 1.5, (i, "x" * (i % 7))) for i in range(300_000)}
    w, meta, got = roundtrip(tmp_path, {"data": data, "n": len(data)}, compress="size")
    assert got["data"] == data and got["n"] == 300_000
    assert meta["state_size"] > 8 * MB
    assert w.size < meta["state_size"] / 2
    assert meta["variables"]["data"]["size"] > 8 * MB


def test_variable_sizes_count_out_of_band_buffers(tmp_path):
    a = np.ones(1000, dtype=np.float64)
    w, meta, _ = roundtrip(tmp_path, {"a": a, "s": "x"})
    assert meta["variables"]["a"] == {"type": "numpy.ndarray", "size": w.variables["a"]["size"]}
    assert 8000 <= meta["variables"]["a"]["size"] < 8000 + 400
    assert meta["state_size"] >= 8000


@pytest.mark.parametrize("mmap", [False, True])
def test_shared_references_between_variables_survive(tmp_path, mmap):
    shared_list = [1, 2, 3]
    arr = np.arange(100_000.0)
    state = {"a": shared_list, "b": {"inner": shared_list}, "c": arr, "d": [arr, arr]}
    _, _, got = roundtrip(tmp_path, state, mmap=mmap)
    assert got["b"]["inner"] is got["a"]
    assert got["c"] is got["d"][0] is got["d"][1]
    got["a"].append(4)
    assert got["b"]["inner"] == [1, 2, 3, 4]


def test_lambdas_closures_and_local_classes_use_cloudpickle(tmp_path):
    k = 10

    class Local:
        def __init__(self, v):
            self.v = v

        def double(self):
            return self.v * 2

    state = {"f": lambda x: x + k, "obj": Local(21), "cls": Local, "plain": [1, 2]}
    _, meta, got = roundtrip(tmp_path, state)
    assert meta["pickler"] == "cloudpickle"
    assert got["f"](1) == 11
    assert got["obj"].double() == 42
    assert isinstance(got["obj"], got["cls"])
    assert got["plain"] == [1, 2]


def test_what_only_dill_pickles_uses_dill(tmp_path):
    state = {
        "lock": threading.Lock(),
        "arr": np.arange(50_000, dtype=np.int32),
        "x": 5,
        "big": bytes(range(256)) * 40_000,  # 10 MB: a compressed stream of several chunks
    }
    w, meta, got = roundtrip(tmp_path, state, compress="size")
    assert meta["pickler"] == "dill"
    assert got["big"] == state["big"] and w.size < 2 * MB
    assert got["lock"].acquire(blocking=False)
    assert_same_array(state["arr"], got["arr"])
    assert got["x"] == 5


def test_unpicklable_variable_is_named_and_nothing_is_written(tmp_path):
    gen = (i for i in range(3))
    path = tmp_path / "e.sc"
    with pytest.raises(UnpicklableError) as info:
        write_entry(path, {"okvar": [1, 2], "gen": gen, "arr": np.zeros(10)}, {"name": "t"})
    assert info.value.names == ["gen"]
    message = str(info.value)
    assert "'gen'" in message and "generator" in message
    assert "del gen" in message and "del" in message
    assert "okvar" not in message
    assert os.listdir(tmp_path) == []


def test_two_unpicklable_variables_are_both_named(tmp_path):
    def g():
        yield 1

    with pytest.raises(UnpicklableError) as info:
        write_entry(tmp_path / "e.sc", {"a": g(), "ok": 1, "b": (i for i in [])}, {})
    assert info.value.names == ["a", "b"]
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- mmap


def test_mmap_restore_shares_file_pages_but_writes_stay_private(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.random(2 * MB)  # 16 MB incompressible: mapped
    packed = np.zeros(MB, dtype=np.int32)  # compressible: decompressed as usual
    path = tmp_path / "e.sc"
    write_entry(path, {"raw": raw, "packed": packed}, {"name": "t"})
    before = path.read_bytes()
    _, got = read_entry(path, mmap=True)
    assert_same_array(raw, got["raw"])
    assert_same_array(packed, got["packed"])
    assert got["raw"].flags.writeable and got["packed"].flags.writeable
    got["raw"][:] = -1.0
    got["packed"][:] = 9
    assert path.read_bytes() == before
    _, again = read_entry(path, mmap=True)
    assert_same_array(raw, again["raw"])
    _, again = read_entry(path)
    assert_same_array(raw, again["raw"])
    assert (got["raw"] == -1.0).all()


def test_mapped_arrays_survive_the_entry_being_replaced_or_removed(tmp_path):
    raw = np.random.default_rng(6).random(MB)
    path = tmp_path / "e.sc"
    write_entry(path, {"raw": raw}, {})
    _, got = read_entry(path, mmap=True)
    write_entry(path, {"raw": np.zeros(MB)}, {})
    assert_same_array(raw, got["raw"])
    os.unlink(path)
    assert_same_array(raw, got["raw"])


# ---------------------------------------------------------------- damage


def damage_cases_state():
    rng = np.random.default_rng(7)
    return {
        "raw": rng.random(5000),  # 40 KB, stored raw
        "zeros": np.zeros(20_000),  # 160 KB, compressed
        "objs": {i: str(i) * 3 for i in range(4000)},  # pickle stream over 32 KB: compressed
        "tiny": 1,
    }


def test_every_flipped_checksummed_byte_is_detected(tmp_path):
    state = damage_cases_state()
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"}, compress="size")  # compressed stream and buffer
    regions, sections = entry_regions(path)
    assert len(sections) == 3 and sections[0].chunks[0][0] == 1 and sections[2].chunks[0][0] == 1
    original = path.read_bytes()
    size = len(original)
    loaded_fine = 0
    # every byte of the header, metadata, table and trailer; a sample of the sections
    offsets = sorted({*range(0, 600), *range(600, size - 1200, 41), *range(size - 1200, size)})
    for offset in offsets:
        flip(path, offset)
        try:
            _, got = read_entry(path)
        except EntryError as exc:
            assert str(path) in str(exc)
        else:
            assert not covered(offset, regions), f"flipped byte at {offset} went unnoticed"
            assert got["objs"] == state["objs"] and np.array_equal(got["raw"], state["raw"])
            loaded_fine += 1
        if covered(offset, regions):
            with pytest.raises(EntryError):
                verify_entry(path)
        path.write_bytes(original)
    assert loaded_fine < len(offsets) // 20  # only padding and the unused signature field


def _reader_threads():
    return [t for t in threading.enumerate() if t.name == "statecache-read"]


def test_many_small_buffers_read_ahead_of_the_unpickler_come_back_in_order(tmp_path):
    """A model's worth of sub-MiB buffers (12 MB in all: read on threads while unpickling goes
    on); every one restored where it belongs, and a damaged one is an error, with no reader
    thread left behind either way."""
    rng = np.random.default_rng(11)
    arrays = [rng.integers(0, 2**62, 40_000 + 97 * i, dtype=np.int64) for i in range(40)]
    state = {"trees": [{"nodes": a, "n": i} for i, a in enumerate(arrays)], "first": arrays[0]}
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    _, sections = entry_regions(path)
    assert len(sections) == 41 and all(s.all_raw for s in sections[1:])
    got = read_entry(path)[1]
    for i, a in enumerate(arrays):
        assert got["trees"][i]["n"] == i
        assert_same_array(a, got["trees"][i]["nodes"])
    assert got["first"] is got["trees"][0]["nodes"]  # one buffer, shared as it was
    assert _reader_threads() == []
    for index in (1, 20, 40):  # the first, a middle and the last buffer
        original = path.read_bytes()
        flip(path, sections[index].offset + 5)
        with pytest.raises(EntryError, match="damaged buffer section"):
            read_entry(path)
        assert _reader_threads() == []
        path.write_bytes(original)


def test_a_feed_error_reaches_the_buffer_that_waits_for_it():
    from statecache.entry.feed import BufferFeed

    buffers = [bytearray(4) for _ in range(6)]

    def read(job):
        index, value = job
        if index == 3:
            raise OSError("injected")
        buffers[index][:] = bytes([value]) * 4

    for workers in (0, 2):
        jobs = [[(i, i + 1)] for i in range(6)]
        feed = BufferFeed(buffers, jobs, read, workers)
        got = []
        with pytest.raises(OSError, match="injected"):
            for buffer in feed:
                got.append(bytes(buffer))
        feed.close()
        # every buffer handed over is complete; with threads, one still being read when the
        # error came may be refused too
        assert got == [bytes([v]) * 4 for v in (1, 2, 3)][: len(got)]
        assert len(got) == 3 if not workers else len(got) <= 3
        assert not feed.exhausted and _reader_threads() == []


@pytest.mark.parametrize("enabled", [True, False])
def test_a_restore_leaves_the_garbage_collector_as_it_found_it(tmp_path, enabled):
    import gc

    path = tmp_path / "e.sc"
    write_entry(path, {"objs": [[i] for i in range(50_000)]}, {"name": "t"})
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        assert read_entry(path)[1]["objs"][49_999] == [49_999]
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()


def test_a_restore_collects_as_it_goes_like_pickle_load(tmp_path):
    """The collector is not paused while unpickling: a paused one leaves every restored
    object in the youngest generation, and the one collection of all of them afterwards (a
    1M-object state: 1 s, three times what pickle.load's small collections cost) lands on
    the user. Seen as the young generation's size when each collection starts, against
    pickle.load of the same state in the same process (from 3.12 on, a collection waits for
    the eval loop, so pickle.load itself collects once, at the end)."""
    import gc
    import pickle

    state = {"objs": [[i] for i in range(50_000)]}
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    pickled = pickle.dumps(state, protocol=5)

    def young_at_collections(load):
        young: list[int] = []

        def seen(phase: str, info: dict) -> None:
            if phase == "start":
                young.append(gc.get_count()[0])

        was = gc.isenabled()
        gc.enable()
        gc.collect()
        gc.callbacks.append(seen)
        try:
            loaded = load()
        finally:
            gc.callbacks.remove(seen)
            gc.enable() if was else gc.disable()
        assert loaded["objs"][49_999] == [49_999]
        return max(young, default=0)

    by_pickle = young_at_collections(lambda: pickle.loads(pickled))
    by_statecache = young_at_collections(lambda: read_entry(path)[1])
    assert by_statecache <= by_pickle + 2 * gc.get_threshold()[0]


@pytest.mark.parametrize("mmap", [False, True])
def test_flipped_byte_in_each_section_of_a_big_entry(tmp_path, mmap):
    rng = np.random.default_rng(8)
    state = {
        "raw": rng.random(MB),  # 8 MB raw, two chunks
        "packed": np.repeat(np.arange(MB // 8, dtype=np.int64), 8),  # compressed, two chunks
        "objs": {i: (str(i), float(i)) for i in range(200_000)},
    }
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    regions, sections = entry_regions(path)
    original = path.read_bytes()
    for index, sec in enumerate(sections):
        for offset in (
            sec.offset,
            sec.offset + sec.stored_len // 2,
            sec.offset + sec.stored_len - 1,
        ):
            flip(path, offset)
            mapped_raw = mmap and index > 0 and all(c[0] == 0 for c in sec.chunks)
            if mapped_raw:
                _, got = read_entry(
                    path, mmap=True
                )  # documented: mapped raw buffers are not checksummed
                assert got["objs"] == state["objs"]
            else:
                with pytest.raises(EntryError, match="damaged|checksum"):
                    read_entry(path, mmap=mmap)
            with pytest.raises(EntryError):
                verify_entry(path)
            path.write_bytes(original)
    _, got = read_entry(path, mmap=mmap)
    assert_same_array(state["packed"], got["packed"])


def test_truncation_at_any_offset_is_detected(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, damage_cases_state(), {"name": "t"})
    original = path.read_bytes()
    for cut in list(range(0, 200)) + list(range(200, len(original), 97)) + [len(original) - 1]:
        path.write_bytes(original[:cut])
        with pytest.raises(EntryError):
            read_entry(path)
        with pytest.raises(EntryError):
            verify_entry(path)
        if cut < 64 + 20:
            with pytest.raises(EntryError):
                read_meta(path)


def test_truncated_big_entry_and_zeroed_pages(tmp_path):
    state = {"raw": np.random.default_rng(9).random(MB), "zeros": np.zeros(MB)}
    path = tmp_path / "e.sc"
    write_entry(path, state, {})
    original = path.read_bytes()
    for cut in (len(original) // 3, len(original) - 64, len(original) - 65, 70_000):
        path.write_bytes(original[:cut])
        with pytest.raises(EntryError, match="truncated"):
            read_entry(path)
    for page in range(0, len(original), 4096 * 37):
        damaged = bytearray(original)
        damaged[page : page + 4096] = bytes(4096)
        path.write_bytes(bytes(damaged))
        with pytest.raises(EntryError):
            read_entry(path)


def test_foreign_files_are_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "e.sc"
    cases = {
        "empty": b"",
        "pickle": pickle.dumps({"a": 1}, protocol=5),
        "text": b"hello, this is not an entry\n" * 10,
        "png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "magic only": b"\x89SCACHE\n",
    }
    for label, content in cases.items():
        path.write_bytes(content)
        for fn in (read_entry, read_meta, verify_entry):
            with pytest.raises(EntryError) as info:
                fn(path)
            assert str(path) in str(info.value), label
    path.write_bytes(b"")
    with pytest.raises(EntryError, match="not a statecache entry"):
        read_entry(path)


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, 2**32 - 1])
def test_other_format_versions_are_refused(tmp_path, version):
    path = tmp_path / "e.sc"
    write_entry(path, {"x": 1}, {})
    data = bytearray(path.read_bytes())
    data[8:12] = struct.pack("<I", version)
    path.write_bytes(bytes(data))
    for fn in (read_entry, read_meta, verify_entry):
        with pytest.raises(EntryError, match=f"format version {version}"):
            fn(path)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "d.sc").mkdir()
    with pytest.raises(EntryError):
        read_entry(tmp_path / "d.sc")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_entry(tmp_path / "nope.sc")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown")
def test_entry_owned_by_someone_else_is_refused(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, {"x": 1}, {})
    os.chown(path, 12345, -1)
    for fn in (read_entry, read_meta, verify_entry):
        with pytest.raises(EntryError, match="owned by uid 12345"):
            fn(path)


def test_class_gone_at_load_time_names_the_variable(tmp_path, monkeypatch):
    module = tmp_path / "sc_test_vanishing_mod.py"
    module.write_text("class Thing:\n    def __init__(self):\n        self.v = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sc_test_vanishing_mod

    path = tmp_path / "e.sc"
    write_entry(path, {"ok": 1, "thing": sc_test_vanishing_mod.Thing()}, {})
    assert read_entry(path)[1]["thing"].v == 1
    del sc_test_vanishing_mod.Thing
    with pytest.raises(EntryError, match="'thing'.*AttributeError"):
        read_entry(path)
    monkeypatch.delitem(sys.modules, "sc_test_vanishing_mod")
    module.unlink()
    with pytest.raises(EntryError, match="'thing'.*ModuleNotFoundError"):
        read_entry(path)


def test_read_meta_reads_only_the_start(tmp_path):
    state = {"raw": np.random.default_rng(10).random(MB)}
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "listing"})
    _, sections = entry_regions(path)
    flip(path, sections[1].offset + 100)
    assert read_meta(path)["name"] == "listing"
    with pytest.raises(EntryError):
        read_entry(path)


# ---------------------------------------------------------------- signing


def test_signed_entry_needs_the_right_secret(tmp_path):
    path = tmp_path / "e.sc"
    state = {"x": [1, 2], "a": np.arange(20_000)}
    write_entry(path, state, {"name": "t"}, secret=b"s3cret")
    meta, got = read_entry(path, secret=b"s3cret")
    assert meta["signed"] is True and got["x"] == [1, 2]
    assert verify_entry(path, secret=b"s3cret")["signed"] is True
    _, got = read_entry(path)  # no secret: the signature is not checked
    assert got["x"] == [1, 2]
    for fn in (read_entry, verify_entry):
        with pytest.raises(EntryError, match="signature"):
            fn(path, secret=b"other")


def test_unsigned_entry_refused_when_a_secret_is_set(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, {"x": 1}, {})
    for fn in (read_entry, verify_entry):
        with pytest.raises(EntryError, match="not signed"):
            fn(path, secret=b"s3cret")


def rewrite_meta(path, old: bytes, new: bytes):
    """Change the metadata and fix every checksum, as a forger without the secret could."""
    data = bytearray(path.read_bytes())
    (meta_len,) = struct.unpack_from("<Q", data, 16)
    meta = bytes(data[64 : 64 + meta_len])
    assert old in meta and len(old) == len(new)
    meta = meta.replace(old, new)
    data[64 : 64 + meta_len] = meta
    struct.pack_into("<Q", data, 24, xxhash.xxh3_64_intdigest(meta))
    struct.pack_into("<Q", data, 56, xxhash.xxh3_64_intdigest(bytes(data[:56])))
    path.write_bytes(bytes(data))


def test_forged_entry_with_fixed_checksums_is_refused_with_the_secret(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, {"x": 1}, {"name": "aaaa"}, secret=b"k")
    rewrite_meta(path, b'"aaaa"', b'"bbbb"')
    assert read_meta(path)["name"] == "bbbb"  # checksums are consistent again
    with pytest.raises(EntryError, match="signature"):
        read_entry(path, secret=b"k")
    with pytest.raises(EntryError, match="signature"):
        verify_entry(path, secret=b"k")


def test_forged_pickle_stream_is_refused_with_the_secret(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, {"x": "AAAA"}, {}, secret=b"k")
    data = bytearray(path.read_bytes())
    with Reader(path) as r:
        r.read_table()
        sec = r.sections[0]
        table_offset = r.size - 64 - len(r.table_bytes)
    stream = bytes(data[sec.offset : sec.offset + sec.stored_len])
    data[sec.offset : sec.offset + sec.stored_len] = stream.replace(b"AAAA", b"BBBB")
    # fix the chunk checksum in the table, then the table checksum in the trailer
    chunk_at = table_offset + 16 + 32
    struct.pack_into(
        "<Q",
        data,
        chunk_at + 8,
        xxhash.xxh3_64_intdigest(bytes(data[sec.offset : sec.offset + sec.stored_len])),
    )
    table = bytes(data[table_offset : r.size - 64])
    struct.pack_into("<Q", data, r.size - 64 + 16, xxhash.xxh3_64_intdigest(table))
    path.write_bytes(bytes(data))
    assert read_entry(path)[1]["x"] == "BBBB"  # the forgery is self-consistent
    with pytest.raises(EntryError, match="signature"):
        read_entry(path, secret=b"k")


# ---------------------------------------------------------------- writing


def test_entry_file_mode_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        w = write_entry(tmp_path / "e.sc", {"x": 1}, {})
    finally:
        os.umask(old)
    assert os.stat(w.path).st_mode & 0o777 == 0o600


def test_overwrite_replaces_the_entry(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, {"x": 1}, {"v": 1})
    write_entry(path, {"x": 2}, {"v": 2})
    meta, state = read_entry(path)
    assert state == {"x": 2} and meta["v"] == 2
    assert os.listdir(tmp_path) == ["e.sc"]


def test_write_into_a_missing_directory_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_entry(tmp_path / "gone" / "e.sc", {"x": 1}, {})
    assert os.listdir(tmp_path) == []


def run_limited_writer(tmp_path, ignore_sigxfsz: bool) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import errno, resource, signal, sys
        import numpy as np
        from statecache.entry.writer import write_entry
        # Python ignores SIGXFSZ at start-up; the default action kills the writer mid-write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN if {ignore_sigxfsz} else signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            write_entry({str(tmp_path / "e.sc")!r}, {{"a": np.random.default_rng(0).random(1 << 20)}}, {{}})
        except OSError as exc:
            print("OSError", errno.errorcode[exc.errno])
            sys.exit(3)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=os.getcwd()
    )


def test_failed_write_removes_the_temp_file_and_reraises(tmp_path):
    proc = run_limited_writer(tmp_path, ignore_sigxfsz=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "OSError EFBIG"
    assert os.listdir(tmp_path) == []


def test_killed_writer_leaves_a_temp_file_that_names_its_pid(tmp_path):
    proc = run_limited_writer(tmp_path, ignore_sigxfsz=False)
    assert proc.returncode == -signal.SIGXFSZ
    (leftover,) = os.listdir(tmp_path)
    assert not leftover.endswith(ENTRY_SUFFIX)
    pid = is_temp_file(leftover)
    assert isinstance(pid, int) and pid > 0
    assert is_temp_file(str(tmp_path / leftover)) == pid


def test_is_temp_file_ignores_entries_and_other_names(tmp_path):
    assert is_temp_file("0123abcd.sc") is None
    assert is_temp_file(".gitignore") is None
    assert is_temp_file("CACHEDIR.TAG") is None
    assert is_temp_file(".x.sc.12.zzzzzzzz.tmp") is None


def test_json_metadata_is_plain_json(tmp_path):
    record = {"path": "/d/a.csv", "kind": "file", "size": 3, "mtime_ns": 15, "digest": "00"}
    w = write_entry(tmp_path / "e.sc", {"x": 1}, {"name": "ü-name", "files": [record]})
    with open(w.path, "rb") as f:
        data = f.read()
    (meta_len,) = struct.unpack_from("<Q", data, 16)
    meta = json.loads(data[64 : 64 + meta_len])
    assert meta["name"] == "ü-name" and meta["files"] == [record]
    assert data[:8] == b"\x89SCACHE\n"


@pytest.mark.parametrize("mmap", [False, True])
def test_many_small_arrays_round_trip(tmp_path, mmap):
    rng = np.random.default_rng(11)
    arrays = [rng.random(rng.integers(0, 5000)).astype(dt) for dt in ("f8", "f4", "i2", "u1") * 250]
    state = {"arrays": arrays, "big": rng.random(200_000)}
    w, meta, got = roundtrip(tmp_path, state, mmap=mmap)
    assert len(got["arrays"]) == 1000
    for a, b in zip(arrays, got["arrays"], strict=True):
        assert_same_array(a, b)
        assert b.flags.writeable
    assert_same_array(state["big"], got["big"])
    got["arrays"][0][...] = 0  # restored small arrays are independent, writable memory
    assert_same_array(arrays[1], got["arrays"][1])


def test_fifo_under_an_entry_name_is_refused_without_hanging(tmp_path):
    path = tmp_path / "e.sc"
    os.mkfifo(path)
    with pytest.raises(EntryError, match="not a regular file"):
        read_entry(path)


# ---------------------------------------------------------------- progress bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def progress_state():
    rng = np.random.default_rng(12)
    return {
        "raw": rng.random(MB),  # 8 MB raw: two chunks
        "zeros": np.zeros(MB),  # compressed
        "objs": {i: (str(i), float(i)) for i in range(100_000)},  # stream over a chunk
    }


@pytest.mark.parametrize("mmap", [False, True])
def test_progress_bar_on_a_terminal_once_past_the_delay_then_erased(tmp_path, monkeypatch, mmap):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(_progress.Progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress.Progress, "INTERVAL", 0.0)
    path = tmp_path / "e.sc"
    write_entry(path, progress_state(), {"name": "features"})
    out = term.getvalue()
    assert "\rstatecache: saving 'features' [" in out
    assert "100% " in out and "MB / " in out and "(syncing to disk)" in out
    assert out.endswith("\r\x1b[K")  # the line is erased for the status line
    assert "\n" not in out
    term.seek(0)
    term.truncate()
    _, got = read_entry(path, mmap=mmap)
    assert got["objs"][5] == ("5", 5.0)
    out = term.getvalue()
    assert "\rstatecache: restoring 'features' [" in out and "100% " in out
    assert out.endswith("\r\x1b[K") and "\n" not in out


def test_no_progress_bar_for_quick_work_pipes_quiet_or_when_disabled(tmp_path, monkeypatch):
    path = tmp_path / "e.sc"
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    # work shorter than the delay draws nothing (the delay made long rather than the work
    # short: an 18 MB save can take past a second on a loaded machine)
    monkeypatch.setattr(_progress.Progress, "DELAY", 3600.0)
    write_entry(path, progress_state(), {"name": "t"})
    read_entry(path)
    assert term.getvalue() == ""

    monkeypatch.setattr(_progress.Progress, "DELAY", 0.0)
    write_entry(path, progress_state(), {"name": "t"}, progress=False)
    read_entry(path, progress=False)
    assert term.getvalue() == ""
    monkeypatch.setenv("STATECACHE_QUIET", "1")
    write_entry(path, progress_state(), {"name": "t"})
    assert term.getvalue() == ""
    monkeypatch.delenv("STATECACHE_QUIET")

    pipe = io.StringIO()  # not a terminal: captured output, logs, CI
    monkeypatch.setattr(sys, "stderr", pipe)
    write_entry(path, progress_state(), {"name": "t"})
    read_entry(path)
    assert pipe.getvalue() == ""


def test_progress_bar_on_a_broken_stderr_does_not_break_the_save(tmp_path, monkeypatch):
    class Broken(FakeTerminal):
        def write(self, text):
            raise OSError(5, "I/O error")

    monkeypatch.setattr(sys, "stderr", Broken())
    monkeypatch.setattr(_progress.Progress, "DELAY", 0.0)
    path = tmp_path / "e.sc"
    write_entry(path, progress_state(), {"name": "t"})
    _, got = read_entry(path)
    assert got["objs"][7] == ("7", 7.0)


# ---------------------------------------------------------------- through checkpoint


MMAP_SCRIPT = """
    import mmap
    import numpy as np
    import statecache as sc

    def mapped(a):  # a map of the entry file, not the anonymous one small buffers share
        while getattr(a, "base", None) is not None:
            a = a.base
        if not isinstance(getattr(a, "obj", None), mmap.mmap):
            return False
        try:
            return a.obj.size() > 0
        except OSError:
            return False

    with sc.checkpoint("weights", mmap={mmap}):
        rng = np.random.default_rng(0)
        w = rng.standard_normal(2_000_000).reshape(1000, 2000)  # 16 MB incompressible: raw
        wf = np.asfortranarray(w[:, :500])
        counts = np.zeros(1_000_000, dtype=np.int64)  # compressible
        counts[::7] = 3
    print("SUM", repr(float(w.sum())), repr(float(wf.sum())), int(counts.sum()))
    print("MAPPED", mapped(w), mapped(wf), mapped(counts))
    w[:] = 0.0  # a user writing into the restored arrays
    wf[:] = 1.0
    counts += 1
    print("AFTER", float(w.sum()), float(wf.sum()))
"""


def _lines(run, tag):
    return [line for line in run.stdout.splitlines() if line.startswith(tag)]


def test_checkpoint_mmap_true_run_twice_maps_and_never_alters_the_entry(project):
    project.write("job.py", MMAP_SCRIPT.replace("{mmap}", "True"))
    first = project.run("job.py")
    assert first.computed("weights")
    [entry] = project.entries("weights")
    before = entry.read_bytes()
    (expected,) = _lines(first, "SUM")
    assert _lines(first, "MAPPED") == ["MAPPED False False False"]  # computed: plain memory
    for _ in range(2):
        again = project.run("job.py")
        assert again.hit("weights"), again.stderr
        assert _lines(again, "SUM") == [expected]  # the writes of the run before did not stick
        assert _lines(again, "MAPPED") == ["MAPPED True True False"]
        assert _lines(again, "AFTER") == ["AFTER 0.0 500000.0"]
        assert entry.read_bytes() == before
    plain = project.run("job.py", env={"STATECACHE_MMAP": "0"})  # argument wins over the env
    assert _lines(plain, "MAPPED") == ["MAPPED True True False"]


def test_env_mmap_and_a_damaged_raw_section_is_a_miss_without_mmap(project):
    project.write("job.py", MMAP_SCRIPT.replace("{mmap}", "None"))
    first = project.run("job.py")
    (expected,) = _lines(first, "SUM")
    [entry] = project.entries("weights")
    mapped = project.run("job.py", env={"STATECACHE_MMAP": "1"})
    assert mapped.hit("weights") and _lines(mapped, "MAPPED") == ["MAPPED True True False"]
    plain = project.run("job.py")
    assert plain.hit("weights") and _lines(plain, "MAPPED") == ["MAPPED False False False"]
    assert _lines(plain, "SUM") == [expected]

    with Reader(entry) as reader:  # flip one byte in the middle of the biggest raw section
        reader.read_table()
        raw = max(
            (s for s in reader.sections[1:] if s.all_raw), key=lambda s: s.raw_len
        )
    flip(entry, raw.offset + raw.stored_len // 2)
    damaged = project.run("job.py")
    assert damaged.computed("weights") and not damaged.hit("weights")
    assert "checksum" in damaged.stderr and "ignoring the cache entry" in damaged.stderr
    assert _lines(damaged, "SUM") == [expected]
    assert project.run("job.py").hit("weights")  # the recomputed entry replaced it


# ---------------------------------------------------------------- the metadata schema


def _written_meta(**fields):
    base = {"format": 1, "pickler": "pickle", "variables": {"x": {"type": "int", "size": 5}},
            "state_size": 5, "python": "3.11", "statecache_version": "0", "signed": False}
    return {**base, **fields}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": 3}, "'name'"),
        ({"created": True}, "'created'"),
        ({"source": {"file": "a.py"}}, "'line'"),
        ({"source": {"file": "a.py", "line": 2.5}}, "'source.line'"),
        ({"files": [{"path": "/a", "kind": "file", "size": 1, "mtime_ns": 2}]}, "'digest'"),
        ({"files": [{"path": "/a", "kind": "socket"}]}, "'files[0].kind'"),
        ({"files": [{"path": "/a", "kind": "missing", "racy": "no"}]}, "'files[0].racy'"),
        ({"variables": {"x": {"type": "int", "size": "5"}}}, "\"variables['x'].size\""),
        ({"unbound": "x"}, "'unbound'"),
        ({"rng": {"random": {"after": 1}}}, "'before'"),
        ({"cell_outputs": [1]}, "'cell_outputs[0]'"),
        ({"signed": 0}, "'signed'"),
    ],
)
def test_parse_meta_names_the_field_of_a_wrong_type(fields, named):
    from statecache.entry.meta import parse_meta

    with pytest.raises(EntryError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_meta(_written_meta(**fields))


def test_parse_meta_keeps_the_dict_and_unknown_fields():
    from statecache.entry.meta import parse_meta

    raw = _written_meta(name="a", files=[{"path": "/a", "kind": "dir", "digest": "00"}],
                        added_by_a_newer_writer={"x": 1})
    assert parse_meta(raw) is raw and raw["added_by_a_newer_writer"] == {"x": 1}
    with pytest.raises(EntryError, match="no 'pickler'"):
        parse_meta({k: v for k, v in raw.items() if k != "pickler"})
    with pytest.raises(EntryError, match="expected object"):
        parse_meta([raw])


def test_writer_refuses_metadata_no_reader_would_accept(tmp_path):
    path = tmp_path / "e.sc"
    with pytest.raises(EntryError, match="'source.line'"):
        write_entry(path, {"x": 1}, {"source": {"file": "a.py", "line": "3"}})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left


def test_a_small_read_imports_neither_codec_nor_stream_nor_pickling(tmp_path):
    """The hit path of a small entry (pickle stream of raw chunks, no buffer sections) loads
    only the reader, format and meta (not even the buffer feed, whose import cost a small
    hit 0.2-0.3 ms); a big one loads the codec and the feed when it needs them."""
    small, big = tmp_path / f"s{ENTRY_SUFFIX}", tmp_path / f"b{ENTRY_SUFFIX}"
    write_entry(small, {"x": list(range(10))}, {"name": "s"})
    write_entry(big, {"a": np.random.default_rng(0).random(1 << 16)}, {"name": "b"})
    code = textwrap.dedent(
        f"""
        import sys
        from statecache.entry.reader import read_entry
        lazy = ("statecache.entry.codec", "statecache.entry.stream", "statecache.entry.pickling",
                "statecache.entry.feed")
        assert read_entry({str(small)!r})[1] == {{"x": list(range(10))}}
        assert [m for m in lazy if m in sys.modules] == [], sys.modules.keys()
        assert read_entry({str(big)!r})[1]["a"].shape == (1 << 16,)
        assert "statecache.entry.codec" in sys.modules and "statecache.entry.feed" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(not hasattr(os, "writev"), reason="writev is POSIX")
@pytest.mark.parametrize("limit", [1, 7, 4096, 70_000, 300_000])
def test_short_writevs_anywhere_in_the_pieces_still_write_every_byte_in_order(tmp_path, monkeypatch, limit):
    # The fault test cuts a writev inside its first piece; a kernel may stop anywhere: on a
    # piece's boundary, or inside a later piece. Each writev here writes at most ``limit`` bytes.
    real = os.writev
    calls = []

    def short_writev(fd, buffers):
        out, left = [], limit
        for b in buffers:
            b = memoryview(b).cast("B")
            if left <= 0:
                break
            out.append(b[:left])
            left -= len(out[-1])
        calls.append(sum(len(b) for b in out))
        return real(fd, out)

    monkeypatch.setattr(os, "writev", short_writev)
    rng = np.random.default_rng(7)
    state = {  # many small pieces (buffer sections of 17-200 KB and their pads) per writev
        "small": [rng.integers(0, 255, int(n), dtype=np.uint8) for n in rng.integers(17_000, 200_000, 12)],
        "arr": rng.random(5000),
        "n": 3,
    }
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    assert len(calls) > 3 and min(calls) <= limit
    verify_entry(path)
    _, got = read_entry(path)
    assert got["n"] == 3 and len(got["small"]) == len(state["small"])
    for a, b in zip(state["small"], got["small"], strict=True):
        assert_same_array(a, b)
    assert_same_array(state["arr"], got["arr"])
