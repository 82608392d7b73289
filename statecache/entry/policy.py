"""Whether a buffer is stored compressed: chosen for restore time, not for a fixed saving.

The rule, per buffer (or per stream chunk), from a sample's measured zstd ratio and decode
speed on this machine, against the speed of reading raw bytes (a warm page cache: measured
once per process as the speed of a memory copy, an upper bound that leans towards raw)::

    restore no slower   ratio + read_speed / decode_speed <= 1
                        (read the stored bytes, then decode them, versus read them all raw)
    far smaller         ratio <= FAR_SMALLER (that buffer at least 20x smaller)

A buffer (or stream chunk) under SMALL is judged by its ratio alone, as if its decode speed
were unknown (so never for speed): timing the decode of a sample costs more than the
microseconds such a buffer's restore could gain. A RandomForest's 200 sub-MiB node arrays
made the save spend as long judging them as pickling them (save 1.5-2x ``pickle.dump`` +
fsync). The ratio that decides a small buffer is its whole frame's, not a sample's.

``compress="auto"`` (the default) compresses when either holds; ``"speed"`` only when the
restore is no slower; ``"size"`` whenever zstd saves SIZE_SAVING or more. On a warm machine a
memory copy runs at several GB/s and zstd decodes at 0.3-1 GB/s per core, so under ``auto``
only very compressible data is compressed: uniform or weight-like floats (zstd saves 7-11 %)
stay raw and restore at copy speed. FAR_SMALLER was 0.2 (5x): a DataFrame's integer columns
and string offsets (ratio 0.14-0.18, decoding at 0.3-0.6 GB/s) then restored 2x slower than
``pickle.load`` of the same frame; data 20x smaller (zeros, repeated strings) decodes at
several GB/s, about a copy's speed, so it costs the restore nothing.

Pure functions and constants; the codec measures, this module decides.
"""

from __future__ import annotations

import time

MODES = ("auto", "speed", "size")
FAR_SMALLER = 0.05  # stored/raw at or below this: compressed under "auto" whatever the speed
SIZE_SAVING = 0.03  # "size": compress when zstd saves at least this fraction
SMALL = 1 << 20  # a buffer under this many bytes is judged by its ratio alone

_read_speed: float | None = None


def check_mode(mode: object) -> str:
    """``mode`` if it is one of MODES; ValueError naming the choices otherwise."""
    if mode not in MODES:
        raise ValueError(f"compress must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
    return str(mode)


def choose(ratio: float, decode_speed: float, read_speed: float, mode: str) -> bool:
    """Whether to store compressed data whose stored/raw ``ratio`` was measured, decoding at
    ``decode_speed`` raw bytes per second, where raw bytes are read at ``read_speed``."""
    if mode == "size":
        return ratio <= 1.0 - SIZE_SAVING
    if mode == "auto" and ratio <= FAR_SMALLER:
        return True
    if decode_speed <= 0:
        return False
    return ratio + read_speed / decode_speed <= 1.0


def needs_speeds(ratio: float, mode: str, nbytes: int | None = None) -> bool:
    """Whether ``choose`` depends on the measured speeds for this ratio (so measure only then);
    never for a buffer of ``nbytes`` under SMALL, which is then judged with no speeds."""
    if mode == "size" or ratio >= 1.0 or (nbytes is not None and nbytes < SMALL):
        return False
    return not (mode == "auto" and ratio <= FAR_SMALLER)


def read_speed() -> float:
    """Bytes per second of a memory copy on this machine, measured once per process (8 MiB,
    best of three): the speed at which a warm page cache hands raw bytes to a reader."""
    global _read_speed
    if _read_speed is None:
        src = bytearray(b"\x5a") * (8 << 20)  # real pages, not the shared zero page
        dst = bytearray(len(src))
        view = memoryview(dst)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            view[:] = src
            best = min(best, time.perf_counter() - t0)
        _read_speed = len(src) / max(best, 1e-9)
    return _read_speed
