"""The fixed costs of restoring a small entry (issue 12, the small state): the whole file is
read by one ``pread`` (header, metadata, stream and table from the first read), and a stream
that cannot name numpy's array rebuild is unpickled by the plain Unpickler class. Each case
checks what a user sees: the values restored, damage still refused, arrays that ride in the
stream still owning their data, and the unpickled classes still heard by the audit hook."""

from __future__ import annotations

import fractions
import os
import sys

import numpy as np
import pytest

from statecache._errors import EntryError
from statecache.entry import reader as reader_module
from statecache.entry.reader import Reader, names_no_array, read_entry
from statecache.entry.writer import write_entry

SMALL_STATE = {"small": {i: i * 7 for i in range(100)}, "word": "x" * 50}


@pytest.fixture
def preads(monkeypatch):
    """The ``os.pread`` calls the reader makes (passed through to the real one)."""
    calls: list[tuple[int, int]] = []
    real = os.pread

    def counting(fd, n, offset):
        calls.append((n, offset))
        return real(fd, n, offset)

    monkeypatch.setattr(reader_module.os, "pread", counting)
    return calls


def test_a_small_entry_is_read_by_one_pread(tmp_path, preads):
    path = tmp_path / "e.sc"
    write_entry(path, SMALL_STATE, {"name": "small"}, progress=False)
    _, state = read_entry(path, progress=False)
    assert state == SMALL_STATE
    assert len(preads) == 1 and preads[0] == (os.path.getsize(path), 0)


def test_damage_in_a_small_stream_read_from_the_first_read_is_refused(tmp_path):
    path = tmp_path / "e.sc"
    write_entry(path, SMALL_STATE, {"name": "small"}, progress=False)
    with Reader(path) as r:
        r.read_table()
        stream_at = r.sections[0].offset
    data = bytearray(path.read_bytes())
    data[stream_at + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EntryError, match="pickle stream"):
        read_entry(path, progress=False)


def test_arrays_in_a_small_stream_still_come_back_owning_their_data(tmp_path):
    """A stream holding arrays names numpy's rebuild: the rebuilding Unpickler still runs."""
    path = tmp_path / "e.sc"
    ro = np.arange(4)
    ro.flags.writeable = False
    state = {"a": np.arange(10.0), "ro": ro, "n": 3}
    write_entry(path, state, {"name": "arrays"}, progress=False)
    _, got = read_entry(path, progress=False)
    assert got["a"].tolist() == list(range(10)) and got["n"] == 3
    assert got["a"].flags.owndata
    got["a"].resize(20, refcheck=False)  # in place, as after the computing run
    assert got["a"].shape == (20,)
    assert not got["ro"].flags.writeable and got["ro"].tolist() == [0, 1, 2, 3]


def test_only_a_whole_small_stream_without_the_name_skips_the_rebuild():
    import io

    plain = b"\x80\x05K\x01."
    named = b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93."
    assert names_no_array(io.BytesIO(plain), plain)
    assert not names_no_array(io.BytesIO(named), named)
    assert not names_no_array(object(), plain)  # not held whole (decoded or read chunk by chunk)
    big = b"K\x01" * ((1 << 20) // 2 + 1)
    assert not names_no_array(io.BytesIO(big), big)


_heard: list[tuple[str, str]] = []
_listening = [False]
_added: list = []


def _hook(event: str, args: tuple) -> None:
    if _listening[0] and event == "pickle.find_class":
        _heard.append((args[0], args[1]))


def test_the_plain_unpickler_still_raises_the_find_class_audit_event(tmp_path):
    """key.unpickled records the classes a hit unpickled from this event: the plain class
    must raise it as the subclass did."""
    path = tmp_path / "e.sc"
    write_entry(path, {"f": fractions.Fraction(3, 4)}, {"name": "f"}, progress=False)
    if not _added:  # an audit hook cannot be removed: one per process, silent unless listening
        sys.addaudithook(_hook)
        _added.append(_hook)
    _heard.clear()
    _listening[0] = True
    try:
        _, got = read_entry(path, progress=False)
    finally:
        _listening[0] = False
    assert got == {"f": fractions.Fraction(3, 4)}
    assert ("fractions", "Fraction") in _heard
