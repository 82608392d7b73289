"""Restore of uniform float32 under each compress mode against pickle.load, a fresh process per
restore, medians of interleaved rounds (issue 12: zstd saves 11 % on such data, and decoding it
made the restore slower than pickle.load). ``--filters``: the measurement behind not adding a
byte-shuffle codec: ratio and decode speed (one core, best of 5, 4 MiB chunks) of zstd-3, of
a numpy byte shuffle then zstd-3 (decode = zstd + unshuffle), and of blosc2 (shuffle + zstd-1
or lz4) and lz4 where installed, beside a memory copy: the restore-time policy compresses only
what decodes at about a copy's speed.

    python benchmarks/bench_codec_policy.py [--mb 256] [--rounds 5]
    python benchmarks/bench_codec_policy.py --filters
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from statecache.entry.writer import write_entry  # noqa: E402

TIMER = "import sys, time; sys.path.insert(0, {root!r}); import numpy; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"


def _best(fn: Any, k: int = 5) -> float:
    best = float("inf")
    for _ in range(k):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _kinds(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sparse = np.zeros(n // 8)
    sparse[rng.integers(0, n // 8, n // 800)] = 1.5
    return {
        "uniform float32": rng.random(n // 4, dtype=np.float32),
        "weights normal*0.02": rng.standard_normal(n // 4, dtype=np.float32) * np.float32(0.02),
        "int64 counts 0..15": rng.integers(0, 16, n // 8, dtype=np.int64),
        "int64 0..1000": rng.integers(0, 1000, n // 8, dtype=np.int64),
        "int64 arange": np.arange(n // 8, dtype=np.int64),
        "float64 99 % zeros": sparse,
    }


def _shuffled(a: np.ndarray) -> bytes:
    return a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()


def filters() -> None:
    """Print ratio and decode GB/s per kind of data and codec (see the module's docstring)."""
    import zstandard

    n = 4 << 20
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    src, dst = np.full(n, 0x5A, np.uint8), np.empty(n, np.uint8)
    print(f"memory copy: {n / _best(lambda: np.copyto(dst, src)) / 1e9:.1f} GB/s")
    for name, a in _kinds(n).items():
        row = [f"{name:20}"]
        frame = cctx.compress(a.tobytes())
        speed = n / _best(lambda f=frame: dctx.decompress(f)) / 1e9
        row.append(f"zstd {len(frame) / n:.3f} {speed:5.2f}")
        shuf = cctx.compress(_shuffled(a))
        out = np.empty(n, np.uint8).reshape(-1, a.itemsize)

        def unshuffle(shuf: bytes = shuf, out: np.ndarray = out, k: int = a.itemsize) -> None:
            out[...] = np.frombuffer(dctx.decompress(shuf), np.uint8).reshape(k, -1).T

        row.append(f"shuffle+zstd {len(shuf) / n:.3f} {n / _best(unshuffle) / 1e9:5.2f}")
        row.extend(_optional_codecs(a))
        print(" | ".join(row))
    print("(ratio stored/raw, decode GB/s of raw bytes, one core)")


def _optional_codecs(a: np.ndarray) -> list[str]:
    raw, n, row = a.tobytes(), a.nbytes, []
    try:
        import blosc2
    except ImportError:
        row.append("blosc2 not installed")
    else:
        blosc2.set_nthreads(1)
        dst = bytearray(n)
        for label, codec, level in (("zstd", blosc2.Codec.ZSTD, 1), ("lz4", blosc2.Codec.LZ4, 5)):
            c = blosc2.compress2(raw, typesize=a.itemsize, clevel=level,
                                 filter=blosc2.Filter.SHUFFLE, codec=codec)
            speed = n / _best(lambda c=c: blosc2.decompress2(c, dst=dst)) / 1e9
            row.append(f"blosc2 shuffle+{label} {len(c) / n:.3f} {speed:5.2f}")
    try:
        import lz4.frame
    except ImportError:
        row.append("lz4 not installed")
    else:
        c = lz4.frame.compress(raw)
        row.append(f"lz4 {len(c) / n:.3f} {n / _best(lambda: lz4.frame.decompress(c)) / 1e9:5.2f}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--filters", action="store_true", help="codec and filter speeds only")
    args = ap.parse_args()
    if args.filters:
        filters()
        return
    a = np.random.default_rng(0).random((args.mb << 20) // 4, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        code = {}
        for mode in ("auto", "speed", "size"):
            path = os.path.join(tmp, f"{mode}.sc")
            w = write_entry(path, {"a": a}, {"name": "u"}, compress=mode)
            print(f"{mode}: {w.size / 1e6:.0f} MB, save {w.seconds:.2f} s")
            code[mode] = f"from statecache.entry.reader import read_entry; read_entry({path!r})"
        pkl = os.path.join(tmp, "u.pkl")
        with open(pkl, "wb") as f:
            pickle.dump(a, f, protocol=5)
        code["pickle.load"] = f"import pickle; pickle.load(open({pkl!r}, 'rb'))"
        times: dict[str, list[float]] = {k: [] for k in code}
        for _ in range(args.rounds):
            for k, c in code.items():
                out = subprocess.run([sys.executable, "-c", TIMER.format(root=ROOT, code=c)],
                                     capture_output=True, text=True, check=True)
                times[k].append(float(out.stdout))
    for k, v in times.items():
        print(f"restore {k}: median {statistics.median(v) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
