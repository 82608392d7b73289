"""Restore of uniform float32 under each compress mode against pickle.load, a fresh process per
restore, medians of interleaved rounds (issue 12: zstd saves 11 % on such data, and decoding it
made the restore slower than pickle.load).

    python benchmarks/bench_codec_policy.py [--mb 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from statecache.entry.writer import write_entry  # noqa: E402

TIMER = "import sys, time; sys.path.insert(0, {root!r}); import numpy; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
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
