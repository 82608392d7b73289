"""The fast paths of the pickle stream and of many small buffers (issue 12 items 3 and 5): on
save, a buffer under ``policy.SMALL`` is judged by one sample's ratio alone and its whole frame
must confirm it, and chunks under ``codec.POOL_MIN`` are encoded inline, bigger ones on the
pool, in one ordered stream of results; on restore, a whole raw stream chunk that a big bytes
object spans is read straight into it. Every case checks what a user sees: the values
restored, damage refused, and which buffers the entry file stores compressed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import Project
from test_redteam import HEAD, fresh

from statecache._errors import EntryError
from statecache.entry.codec import MIN_COMPRESS, POOL_MIN, encode
from statecache.entry.format import CHUNK, RAW, ZSTD, xxh
from statecache.entry.policy import FAR_SMALLER, MODES, SMALL, choose, needs_speeds
from statecache.entry.progress import NoProgress
from statecache.entry.rawstream import RawStream
from statecache.entry.reader import Reader, read_entry
from statecache.entry.writer import write_entry


def _codecs(path) -> list[set[int]]:
    """The codecs of each buffer section's chunks, in the order the pickler produced them."""
    with Reader(str(path)) as r:
        r.read_table()
        return [{c[0] for c in sec.chunks} for sec in r.sections[1:]]


def _assert_same(restored: dict, state: dict) -> None:
    assert list(restored) == list(state)
    for name, value in state.items():
        got = restored[name]
        assert type(got) is type(value), name
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape, name
            if value.dtype == object:
                assert got.tolist() == value.tolist(), name
            else:
                assert got.tobytes() == value.tobytes(), name
            assert got.flags.writeable, name
        else:
            assert got == value, name


@pytest.mark.parametrize("nbytes", [0, 1, SMALL - 1])
def test_a_small_buffer_is_judged_without_timing_its_decode(nbytes):
    for ratio in (0.0, 0.01, FAR_SMALLER, 0.2, 0.5, 0.97, 1.0):
        for mode in MODES:
            assert not needs_speeds(ratio, mode, nbytes)
            # its decision is the one made with no speeds, whatever the speeds would be
            assert choose(ratio, 0.0, 0.0, mode) == (
                ratio <= FAR_SMALLER if mode == "auto" else mode == "size" and ratio <= 0.97
            )


def test_a_big_buffer_still_has_its_decode_timed():
    assert needs_speeds(0.2, "auto", SMALL) and needs_speeds(0.2, "speed", SMALL)
    assert needs_speeds(0.2, "auto") and not needs_speeds(0.2, "size", SMALL)


def test_a_misleading_sample_is_overruled_by_the_whole_frame():
    """The middle (the one sample of a small buffer) is zeros, the rest is random: the sample
    says far smaller, the whole frame about half; so raw under auto, compressed under size."""
    rng = np.random.default_rng(1)
    raw = bytearray(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    raw[95_000:105_000] = bytes(10_000)
    chunk = memoryview(bytes(raw))
    assert encode(chunk, None, "auto")[0] == RAW
    assert encode(chunk, None, "speed")[0] == RAW
    codec, stored, _ = encode(chunk, None, "size")
    assert codec == ZSTD and len(stored) < len(raw)


def _many_small_buffers(n: int) -> dict:
    """n out-of-band arrays of 16 KiB to 1 MiB (some under MIN_COMPRESS, never compressed): random floats, zeros, small ints, bools,
    complex, a Fortran-ordered matrix, plus an object array and an empty array in band."""
    rng = np.random.default_rng(7)
    state: dict = {}
    for i in range(n):
        size = 2048 + (i * 977) % 100_000  # elements
        kind = i % 6
        if kind == 0:
            state[f"f{i}"] = rng.random(size)
        elif kind == 1:
            state[f"z{i}"] = np.zeros(size, dtype=np.int64)
        elif kind == 2:
            state[f"i{i}"] = rng.integers(0, 4, size, dtype=np.int32)
        elif kind == 3:
            state[f"b{i}"] = rng.random(size * 8) < 0.5
        elif kind == 4:
            state[f"c{i}"] = (rng.random(size // 2) + 1j * rng.random(size // 2)).astype(np.complex128)
        else:
            state[f"m{i}"] = np.asfortranarray(rng.random((64, size // 64)))
    state["objects"] = np.array([f"s{i}" for i in range(5000)], dtype=object)
    state["empty"] = np.zeros(0, dtype=np.float32)
    state["tail"] = {"n": n, "label": "done"}
    return state


@pytest.mark.parametrize("mode", MODES)
def test_hundreds_of_small_buffers_round_trip_and_only_far_smaller_ones_are_compressed(
    tmp_path, mode
):
    state = _many_small_buffers(120)
    path = tmp_path / f"{mode}.sc"
    write_entry(path, state, {"name": "t"}, compress=mode)
    _assert_same(read_entry(path)[1], state)
    _assert_same(read_entry(path, mmap=True)[1], state)
    buffers = [v for v in state.values() if isinstance(v, np.ndarray) and v.nbytes >= 16 << 10
               and v.dtype != object]
    codecs = _codecs(path)
    assert len(codecs) == len(buffers)
    for array, used in zip(buffers, codecs, strict=True):
        zeros = not array.any()
        if mode == "speed" or array.nbytes < MIN_COMPRESS:
            assert used == {RAW}
        elif mode == "auto":
            assert used == ({ZSTD} if zeros else {RAW}), (array.dtype, array.nbytes)
        elif zeros or array.dtype in (np.bool_, np.int32):
            assert used == {ZSTD}, (array.dtype, array.nbytes)


def test_small_and_big_buffers_interleaved_keep_their_order(tmp_path):
    """Enough bytes for the pool: big chunks go to threads, small ones are encoded inline, and
    the file holds every buffer where the stream refers to it."""
    rng = np.random.default_rng(3)
    state = {}
    for i in range(12):
        state[f"small{i}"] = rng.random(3000 + i)  # ~24 KB each, inline
        if i % 4 == 0:
            state[f"big{i}"] = rng.random((POOL_MIN * 3) // 8 + i)  # 3 MiB, on the pool
        if i % 4 == 1:
            state[f"zeros{i}"] = np.zeros(POOL_MIN // 4, dtype=np.int32)  # 1 MiB of zeros
    assert sum(a.nbytes for a in state.values()) >= 8 << 20
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    _assert_same(read_entry(path)[1], state)
    codecs = _codecs(path)
    kinds = [name.rstrip("0123456789") for name in state]
    assert [c for c, k in zip(codecs, kinds, strict=True) if k == "zeros"] == [{ZSTD}] * 3
    assert all(c == {RAW} for c, k in zip(codecs, kinds, strict=True) if k != "zeros")


SCRIPT = HEAD + """
import numpy as np

with sc.checkpoint("bufs"):
    rng = np.random.default_rng(11)
    arrays = [rng.random(2048 + 97 * i) if i % 3 else np.zeros(16384 + i, dtype=np.int16)
              for i in range(150)]
    arrays.append(np.arange(200_000, dtype=np.int64))  # 1.6 MB: judged with its decode timed
    table = {"first": arrays[0], "again": arrays[0]}  # one buffer, two names

arrays[5][0] = -1.0  # writable after a hit
print(len(arrays), [round(float(a.sum()), 6) for a in arrays[:8]], int(arrays[-1].sum()))
print(sum(a.nbytes for a in arrays), table["first"] is table["again"] is arrays[0])
"""


def test_a_checkpoint_of_many_small_arrays_hits_with_the_computed_values(project: Project):
    project.write("script.py", SCRIPT)
    first = project.run("script.py")
    assert first.computed("bufs"), first.stderr
    hit = project.run("script.py")
    assert hit.hit("bufs"), hit.stderr
    assert hit.stdout == first.stdout == fresh(project, "script.py")
    [entry] = project.entries("bufs")
    codecs = _codecs(entry)
    assert {ZSTD} in codecs and {RAW} in codecs  # the zeros compressed, the floats raw


# -- a big bytes object in a raw stream is read straight into it ----------------------------


def _raw_stream(data: bytes, chunk: int) -> RawStream:
    chunks = [(RAW, len(data[i : i + chunk]), xxh(data[i : i + chunk]))
              for i in range(0, len(data), chunk)]

    def read_into(view: memoryview, offset: int) -> None:
        view[:] = data[offset : offset + view.nbytes]

    return RawStream(read_into, chunks, 0, EntryError, NoProgress())


@pytest.mark.parametrize("chunk", [5, 64, 4096])
def test_readinto_targets_spanning_whole_chunks_give_what_a_bytes_file_gives(chunk):
    data = bytes(np.random.default_rng(2).integers(0, 256, 50_000, dtype=np.uint8))
    ours, ref = _raw_stream(data, chunk), io.BytesIO(data)
    for size in [3, chunk, chunk * 3 + 1, 1, chunk * 2, 7, 10_000, chunk - 1, 40_000]:
        a, b = bytearray(size), bytearray(size)
        assert ours.readinto(a) == ref.readinto(b) and a == b
        assert ours.tell() == ref.tell()
        assert ours.readline() == ref.readline() and ours.read(2) == ref.read(2)
    assert ours.read() == ref.read() and ours.tell() == len(data)


def test_a_whole_chunk_read_straight_into_the_target_is_checked_first():
    f = _raw_stream(b"abcdefghijkl", 4)
    f.chunks[1] = (RAW, 4, f.chunks[1][2] ^ 1)
    with pytest.raises(EntryError, match="checksum"):
        f.readinto(bytearray(12))


def _big_bytes_state() -> dict:
    rng = np.random.default_rng(4)
    return {
        "head": [f"row {i}" for i in range(2000)],
        "blob": bytes(rng.integers(0, 256, (CHUNK * 5) // 2, dtype=np.uint8)),  # in band, 10 MiB
        "tail": {"n": 3, "more": bytes(range(256)) * 100},
    }


def test_a_big_bytes_object_in_the_stream_round_trips_and_damage_in_it_is_an_error(tmp_path):
    path = tmp_path / "e.sc"
    state = _big_bytes_state()
    write_entry(path, state, {"name": "t"})
    with Reader(str(path)) as r:
        r.read_table()
        stream = r.sections[0]
    assert len(r.sections) == 1 and stream.all_raw and len(stream.chunks) >= 3
    assert read_entry(path)[1] == state
    data = bytearray(path.read_bytes())
    data[stream.offset + CHUNK + CHUNK // 2] ^= 1  # in the chunk that the blob spans whole
    damaged = tmp_path / "d.sc"
    damaged.write_bytes(bytes(data))
    with pytest.raises(EntryError, match="damaged pickle stream"):
        read_entry(damaged)
