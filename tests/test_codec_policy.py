"""The codec policy (issue 12 item 2): which buffers are stored compressed, chosen for restore
time. ``choose`` is a pure function of a measured ratio and two speeds, so its decisions are
pinned here on fixed inputs; the writer tests check what a user sees in the entry file."""

from __future__ import annotations

import numpy as np
import pytest

from statecache.entry.format import RAW, ZSTD
from statecache.entry.policy import FAR_SMALLER, MODES, check_mode, choose, needs_speeds
from statecache.entry.reader import Reader, read_entry
from statecache.entry.writer import write_entry

GB = 1e9

# (ratio, decode speed, read speed) -> decision per mode
TABLE = [
    # uniform float32: zstd saves 11 %, decodes at 0.8 GB/s; a warm copy runs at 5 GB/s
    ((0.89, 0.8 * GB, 5 * GB), {"auto": False, "speed": False, "size": True}),
    # weight-like floats: 7 % saved
    ((0.93, 0.5 * GB, 5 * GB), {"auto": False, "speed": False, "size": True}),
    # an arange or a DataFrame's string offsets: 7x smaller, but decoding at a tenth of a
    # copy's speed would make the restore 2x slower than pickle.load (issue 12): raw
    ((0.14, 0.6 * GB, 5 * GB), {"auto": False, "speed": False, "size": True}),
    # a column of repeated strings, 1000x smaller, decoding at a copy's speed
    ((0.001, 5 * GB, 5 * GB), {"auto": True, "speed": False, "size": True}),
    # 20x smaller is far smaller whatever the speed; a little less is not
    ((0.051, 0.1 * GB, 5 * GB), {"auto": False, "speed": False, "size": True}),
    # halved, decoding 4x faster than reading (a slow disk): no slower to restore compressed
    ((0.5, 4 * GB, 1 * GB), {"auto": True, "speed": True, "size": True}),
    # halved, decoding only 1.5x faster than reading: the restore would be slower
    ((0.5, 1.5 * GB, 1 * GB), {"auto": False, "speed": False, "size": True}),
    # exactly at the far-smaller line
    ((FAR_SMALLER, 0.1 * GB, 5 * GB), {"auto": True, "speed": False, "size": True}),
    # nothing saved
    ((1.0, 10 * GB, 1 * GB), {"auto": False, "speed": False, "size": False}),
    ((0.98, 100 * GB, 1 * GB), {"auto": True, "speed": True, "size": False}),
    # a decode speed that could not be measured never compresses for speed
    ((0.5, 0.0, 1 * GB), {"auto": False, "speed": False, "size": True}),
]


@pytest.mark.parametrize(("inputs", "decisions"), TABLE)
def test_policy_decision_on_fixed_inputs(inputs, decisions):
    ratio, decode, read = inputs
    assert {mode: choose(ratio, decode, read, mode) for mode in MODES} == decisions


@pytest.mark.parametrize(("inputs", "decisions"), TABLE)
def test_speeds_are_needed_only_where_they_change_the_decision(inputs, decisions):
    ratio, decode, read = inputs
    for mode in MODES:
        if not needs_speeds(ratio, mode):
            assert choose(ratio, 0.0, 0.0, mode) == choose(ratio, 1e12, 1.0, mode) == decisions[mode]


def test_an_unknown_mode_is_refused_naming_the_choices(tmp_path):
    assert check_mode("speed") == "speed"
    with pytest.raises(ValueError, match="'auto', 'speed', 'size'"):
        write_entry(tmp_path / "e.sc", {"a": 1}, {"name": "t"}, compress="fast")
    assert not list(tmp_path.iterdir())  # nothing written


def _codecs(path):
    with Reader(str(path)) as r:
        r.read_table()
        return [[c[0] for c in sec.chunks] for sec in r.sections[1:]]


@pytest.mark.parametrize("mode", MODES)
def test_uniform_floats_stay_raw_unless_size_is_asked_for(tmp_path, mode):
    """The issue's case: 8 MiB of uniform float32, which zstd shrinks by about 11 %."""
    a = np.random.default_rng(3).random(2 << 20, dtype=np.float32)
    path = tmp_path / f"{mode}.sc"
    w = write_entry(path, {"a": a}, {"name": "t"}, compress=mode)
    [codecs] = _codecs(path)
    assert codecs == ([ZSTD] * 2 if mode == "size" else [RAW] * 2)
    assert (w.size < a.nbytes) == (mode == "size")
    for mmap in (False, True):
        assert read_entry(path, mmap=mmap)[1]["a"].tobytes() == a.tobytes()


@pytest.mark.parametrize("mode", MODES)
def test_a_buffer_of_zeros_is_compressed_in_every_mode_but_speed_decides_by_speed(tmp_path, mode):
    a = np.zeros(1 << 20)
    path = tmp_path / "e.sc"
    w = write_entry(path, {"a": a}, {"name": "t"}, compress=mode)
    [codecs] = _codecs(path)
    if mode != "speed":  # far smaller / saves: compressed
        assert codecs == [ZSTD, ZSTD] and w.size < 64 << 10
    assert read_entry(path)[1]["a"].tobytes() == a.tobytes()
