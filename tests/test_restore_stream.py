"""A big pickle stream of raw chunks is read chunk by chunk through one reused buffer
(statecache/entry/rawstream.py), each chunk checked before the Unpickler sees it: the same
values as before, damage in any chunk a clean error, no copy of the whole stream in memory,
and signed entries still checked whole before anything is unpickled."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from statecache._errors import EntryError
from statecache.entry.format import CHUNK
from statecache.entry.progress import NoProgress
from statecache.entry.rawstream import RawStream
from statecache.entry.reader import Reader, read_entry
from statecache.entry.writer import write_entry


def _objects(n: int = 400_000) -> dict:
    """About 13 MB of stream: four chunks, no buffer section, nothing zstd shrinks 20x."""
    return {
        "records": {f"doc{i}": (i, f"title {i}", i * 0.5) for i in range(n)},
        "tail": [str(i) for i in range(1000)],
        "blob": bytes(range(256)) * 300,  # in band, across a frame
    }


def _stream(path):
    with Reader(str(path)) as r:
        r.read_table()
        return r.sections[0]


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "e.sc"
    state = _objects()
    write_entry(path, state, {"name": "t"})
    sec = _stream(path)
    assert sec.all_raw and len(sec.chunks) >= 3, "the test needs a raw stream of several chunks"
    return path, state


def test_a_big_raw_stream_restores_every_variable(entry):
    path, state = entry
    _, got = read_entry(path)
    assert got == state and list(got) == list(state)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_a_flipped_byte_in_any_chunk_of_the_stream_is_an_entry_error(entry, tmp_path, where):
    path, _ = entry
    damaged = tmp_path / "d.sc"
    data = bytearray(path.read_bytes())
    sec = _stream(path)
    at = sec.offset + int(sec.stored_len * where)
    data[at] ^= 0x40
    damaged.write_bytes(bytes(data))
    with pytest.raises(EntryError, match="damaged pickle stream"):
        read_entry(damaged)


def test_a_stream_cut_short_is_an_entry_error(entry, tmp_path):
    path, _ = entry
    sec = _stream(path)
    cut = tmp_path / "c.sc"
    data = bytearray(path.read_bytes())
    data[sec.offset + sec.stored_len // 2 : sec.offset + sec.stored_len] = bytes(
        sec.stored_len - sec.stored_len // 2
    )  # zeroed pages: the length is right, the bytes are not
    cut.write_bytes(bytes(data))
    with pytest.raises(EntryError):
        read_entry(cut)


def _transient(load) -> tuple[object, int]:
    """What ``load()`` returns, and the memory it used at its peak beyond what it kept."""
    tracemalloc.start()
    try:
        got = load()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return got, peak - kept


def test_the_restore_holds_no_copy_of_the_whole_stream(entry, tmp_path):
    """Beyond what the restored state keeps, a restore uses about what pickle.load of the same
    state uses (a dict's growth, 64 KB frames) plus one chunk of stream, not the whole
    stream read first."""
    import pickle

    path, state = entry
    plain = tmp_path / "p.pkl"
    plain.write_bytes(pickle.dumps(state, protocol=5))
    sec = _stream(path)

    def pickle_load():
        with open(plain, "rb") as f:
            return pickle.load(f)

    got, ours = _transient(lambda: read_entry(path)[1])
    ref, theirs = _transient(pickle_load)
    assert got == ref == state
    assert sec.raw_len > 3 * CHUNK
    assert ours < theirs + 1.5 * CHUNK  # the whole stream would add 16 MB


def test_a_signed_big_stream_is_checked_whole_first(tmp_path):
    path = tmp_path / "s.sc"
    state = _objects(200_000)
    write_entry(path, state, {"name": "t"}, secret=b"k")
    assert read_entry(path, secret=b"k")[1] == state
    with pytest.raises(EntryError, match="signature"):
        read_entry(path, secret=b"other")


def _file(data: bytes, chunk: int) -> RawStream:
    chunks = [(0, len(data[i : i + chunk]), 0) for i in range(0, len(data), chunk)]
    from statecache.entry.format import xxh

    chunks = [(0, n, xxh(data[i * chunk : i * chunk + n])) for i, (_, n, _) in enumerate(chunks)]

    def read_into(view: memoryview, offset: int) -> None:
        view[:] = data[offset : offset + view.nbytes]

    return RawStream(read_into, chunks, 0, EntryError, NoProgress())


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1000])
def test_reads_across_chunks_give_what_a_bytes_file_gives(chunk):
    data = b"".join(b"line %d\n" % i + bytes([i % 256]) * (i % 11) for i in range(200))
    ours, ref = _file(data, chunk), io.BytesIO(data)
    target_a, target_b = bytearray(13), bytearray(13)
    for step in range(400):
        op = step % 4
        if op == 0:
            assert ours.read(step % 17) == ref.read(step % 17)
        elif op == 1:
            assert ours.readline() == ref.readline()
        elif op == 2:
            assert ours.readinto(target_a) == ref.readinto(target_b) and target_a == target_b
        else:
            assert ours.tell() == ref.tell()
    assert ours.read() == ref.read() and ours.read(5) == b"" and ours.readline() == b""
    assert ours.tell() == len(data)


def test_a_chunk_whose_checksum_does_not_match_is_refused_before_its_bytes_are_read():
    f = _file(b"abcdefgh", 4)
    f.chunks[1] = (0, 4, f.chunks[1][2] ^ 1)
    assert f.read(4) == b"abcd"
    with pytest.raises(EntryError, match="checksum"):
        f.read(1)
