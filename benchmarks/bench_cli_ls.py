"""How long ``statecache ls`` takes on a cache of 10,000 entries, and what ``after_save`` (the
automatic size cap) costs per save on that cache.

ls reads only each entry's header and metadata, so it should take well under a second. The
entries are real ones (written by the entry layer with typical metadata), copied under many keys so
that building the cache does not take minutes of fsyncs.

    python benchmarks/bench_cli_ls.py [--entries 10000] [--names 100]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from statecache.cli.main import main  # noqa: E402
from statecache.entry.writer import write_entry  # noqa: E402
from statecache.store.maintenance import after_save, cache_size  # noqa: E402
from statecache.store.store import ensure_cache_dir  # noqa: E402


def build(cache: str, entries: int, names: int) -> int:
    """A cache of ``entries`` entries spread over ``names`` names; returns its size in bytes."""
    ensure_cache_dir(cache)
    rng = np.random.default_rng(0)
    template = os.path.join(cache, "template.sc")
    state = {
        "X": rng.random(2000),
        "y": rng.integers(0, 10, 2000),
        "vocab": {f"w{i}": i for i in range(200)},
        "params": {"lr": 0.1, "layers": [64, 64]},
    }
    meta = {
        "name": "template",
        "key": "0" * 32,
        "kind": "checkpoint",
        "source": {"file": "/home/user/project/train.py", "line": 42},
        "created": time.time(),
        "compute_seconds": 12.5,
        "files": [
            {
                "path": f"/home/user/project/data/part{i}.csv",
                "kind": "file",
                "size": 123456,
                "mtime_ns": 1,
                "digest": "ab" * 16,
            }
            for i in range(5)
        ],
    }
    write_entry(template, state, meta)
    with open(template, "rb") as f:
        data = f.read()
    os.unlink(template)
    per_name = entries // names
    n = 0
    for i in range(names):
        d = os.path.join(cache, f"step-{i:03d}")
        os.makedirs(d, exist_ok=True)
        for _ in range(per_name):
            with open(os.path.join(d, f"{os.urandom(16).hex()}.sc"), "wb") as f:
                f.write(data)
            n += 1
    return n * len(data)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--names", type=int, default=100)
    opts = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-cli-ls-")
    cache = os.path.join(tmp, ".statecache")
    try:
        total = build(cache, opts.entries, opts.names)
        print(
            f"cache: {opts.entries} entries over {opts.names} names, {total / 2**20:.0f} MiB, in {cache}"
        )

        def ls(*extra: str) -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(["ls", "--dir", cache, *extra]) == 0

        t_ls = timed(ls)
        t_json = timed(lambda: ls("--json"))
        env = dict(os.environ, PYTHONPATH=ROOT)
        cmd = [sys.executable, "-m", "statecache", "ls", "--dir", cache]

        def proc() -> None:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=env)

        t_proc = timed(proc)
        print(
            f"ls (in process, table):        {t_ls * 1000:7.1f} ms  ({t_ls / opts.entries * 1e6:.1f} us/entry)"
        )
        print(f"ls --json (in process):        {t_json * 1000:7.1f} ms")
        print(
            f"statecache ls (new process):   {t_proc * 1000:7.1f} ms  (interpreter start included)"
        )

        # after_save: the size index makes a save cost one stat per checkpoint name
        if os.path.exists(os.path.join(cache, ".statecache-usage.json")):
            os.unlink(os.path.join(cache, ".statecache-usage.json"))
        t_first = timed(lambda: cache_size(cache), repeat=1)
        some = os.path.join(cache, "step-000", os.listdir(os.path.join(cache, "step-000"))[0])
        big_cap = total * 2

        def save_under_cap() -> None:
            os.utime(os.path.join(cache, "step-000"))  # as a save into one directory would
            after_save(cache, big_cap, some)

        t_save = timed(save_under_cap, repeat=20)
        cap = int(total * 0.95)
        t_evict = timed(lambda: after_save(cache, cap, some), repeat=1)
        left = sum(1 for _ in os.scandir(os.path.join(cache, "step-000")))
        print(f"after_save, first (builds the index):          {t_first * 1000:7.1f} ms")
        print(f"after_save, under the cap (one dir changed):   {t_save * 1000:7.2f} ms")
        print(
            f"after_save, over the cap (evicts to 90%):      {t_evict * 1000:7.1f} ms (step-000 kept {left} files)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main_bench()
