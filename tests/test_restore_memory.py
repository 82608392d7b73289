"""Where restored buffers live (statecache/entry/memory.py): the small buffers of an entry
share one private anonymous map of huge pages; each still comes back as its own writable
array, independent of the others, of the entry file and of a forked child."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from statecache.entry.memory import ARENA_MAX, ARENA_MIN, arena
from statecache.entry.reader import read_entry
from statecache.entry.writer import write_entry


def _small_arrays(n: int = 120) -> dict[str, np.ndarray]:
    """n arrays of 24-80 KB (out of band, below ARENA_MAX), 6 MB in all, odd lengths."""
    rng = np.random.default_rng(5)
    return {f"a{i}": rng.random(3001 + 37 * i) for i in range(n)}


def test_arena_slices_are_disjoint_aligned_writable_and_exactly_sized():
    sizes = [1, 63, 64, 65, 100_000, 0, 3 << 20]
    pieces = arena(sizes)
    assert pieces is not None
    assert [p.nbytes for p in pieces] == sizes
    addresses = [np.frombuffer(p, np.uint8).ctypes.data if p.nbytes else None for p in pieces]
    for address in addresses:
        assert address is None or address % 64 == 0
    for i, p in enumerate(pieces):
        p[:] = bytes([i + 1]) * p.nbytes
    for i, p in enumerate(pieces):
        assert bytes(p) == bytes([i + 1]) * p.nbytes  # no slice overlaps another


def test_no_arena_for_nothing():
    assert arena([]) is None and arena([0, 0]) is None


def test_many_small_buffers_come_back_as_independent_writable_arrays(tmp_path):
    state = _small_arrays()
    assert sum(a.nbytes for a in state.values()) >= ARENA_MIN
    assert max(a.nbytes for a in state.values()) < ARENA_MAX
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    before = path.read_bytes()
    _, got = read_entry(path)
    for name, a in state.items():
        assert got[name].tobytes() == a.tobytes() and got[name].flags.writeable
    got["a0"][:] = -1.0  # writing one array touches no other, nor the file
    for name, a in state.items():
        if name != "a0":
            assert got[name].tobytes() == a.tobytes()
    assert (got["a0"] == -1.0).all()
    assert path.read_bytes() == before
    assert read_entry(path)[1]["a0"].tobytes() == state["a0"].tobytes()


def test_arrays_that_outlive_the_rest_keep_their_values(tmp_path):
    """The arena lives as long as any of its slices: one array kept after the others are
    dropped (and the collector ran) still holds its bytes."""
    import gc

    state = _small_arrays()
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    got = read_entry(path)[1]
    kept = got.pop("a77")
    del got
    gc.collect()
    np.ones(1 << 20).sum()  # reuse freed memory, if any was freed under the kept array
    assert kept.tobytes() == state["a77"].tobytes()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writing_restored_small_arrays_leaves_the_parent_alone(tmp_path):
    """The arena is a private map: after a fork (``branch()``), the child's writes are
    copy-on-write, as for any other memory of the parent."""
    state = _small_arrays()
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    got = read_entry(path)[1]
    pid = os.fork()
    if pid == 0:  # the child
        try:
            for a in got.values():
                a[:] = 7.0
            code = 0 if all((a == 7.0).all() for a in got.values()) else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    for name, a in state.items():
        assert got[name].tobytes() == a.tobytes()


def test_small_and_big_buffers_mixed_with_mmap(tmp_path):
    """With mmap=True the raw sections are the file's map and the compressed small ones come
    from the arena; every value is right either way."""
    state = _small_arrays(60)
    state.update(zeros=np.zeros(300_000), big=np.random.default_rng(1).random(1 << 20))
    path = tmp_path / "e.sc"
    write_entry(path, state, {"name": "t"})
    for mmap in (False, True):
        got = read_entry(path, mmap=mmap)[1]
        assert sorted(got) == sorted(state)
        for name, a in state.items():
            assert got[name].tobytes() == a.tobytes(), (mmap, name)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
