"""statecache against its peers: save time, restore time and size of the same states, measured
in one run, plus the key-computation, hit-overhead and import figures of the design's targets.

    python benchmarks/run.py              # full run (~15 min on 2 cores), writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick      # small states, one round: a smoke test (CI runs it)
    python benchmarks/run.py --rounds 3 --only objects,frame --output /tmp/r.md

Method: every state is saved and restored by every method once per round, methods interleaved
within a round, so that a busy neighbour on a shared machine slows all of them alike; the
figures are medians over the rounds. Every restore runs in a fresh interpreter, as a user's
next run does (its memory not pre-faulted, the garbage collector on), after the imports that
a script holding that state has made (numpy, pandas, scikit-learn); the restore itself and the
whole process (interpreter start to the end of the restore) are both reported. torch state
(against ``torch.load``, ``mmap=True`` and safetensors) is measured by ``bench_torch.py``. Files live in a scratch directory on the file system of
``--dir`` (default: the system temp dir). "warm" restores read from the page cache (the file was
just written); "cold" restores first evict the file with ``posix_fadvise(POSIX_FADV_DONTNEED)``
after an fsync. Ratios are "peer / statecache": above 1 means statecache is faster or smaller.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

MB = 1 << 20
GB = 1 << 30

# ---------------------------------------------------------------- the states (the "setup" code)


def build_incompressible(nbytes: int) -> dict[str, Any]:
    """Random float32 weights (``normal * 0.02``): zstd shrinks them by a few per cent at best."""
    rng = np.random.default_rng(0)
    n = nbytes // 4 // 4
    return {f"w{i}": rng.standard_normal(n, dtype=np.float32) * np.float32(0.02) for i in range(4)}


def build_forest(trees: int) -> dict[str, Any]:
    """A fitted scikit-learn RandomForest: a few hundred sub-MiB node arrays."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(4)
    x = rng.standard_normal((20_000, 20))
    y = (x[:, 0] + rng.standard_normal(20_000) > 0).astype(int)
    return {"model": RandomForestClassifier(n_estimators=trees, random_state=0).fit(x, y)}


def build_uniform(nbytes: int) -> dict[str, Any]:
    """Uniform float32 (embeddings, features): zstd saves about 11 %, too little to pay for
    decoding it on a warm restore (issue 12)."""
    rng = np.random.default_rng(3)
    return {"features": rng.random(nbytes // 4, dtype=np.float32)}


def build_compressible(nbytes: int) -> dict[str, Any]:
    """Half small integers (labels, counts), half a mostly-zero float matrix."""
    rng = np.random.default_rng(1)
    n = nbytes // 8 // 2
    counts = rng.integers(0, 16, n, dtype=np.int64)
    sparse = np.zeros(n)
    idx = rng.integers(0, n, n // 100)
    sparse[idx] = rng.random(idx.size)
    return {"counts": counts, "sparse": sparse.reshape(-1, 1000) if n % 1000 == 0 else sparse}


def build_objects(n: int) -> dict[str, Any]:
    """n small Python objects: a dict of tuples holding strings, ints and floats."""
    return {
        "records": {
            f"doc{i}": (i, f"title {i}", i * 0.5, ("tag", i % 97)) for i in range(n)
        }
    }


def build_frame(rows: int) -> dict[str, Any]:
    """A pandas DataFrame of mixed dtypes (about 100 bytes a row, plus the string column)."""
    import pandas as pd

    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "x": rng.standard_normal(rows),
            "y": rng.random(rows).astype(np.float32),
            "price": np.round(rng.random(rows) * 100, 2),
            "score": rng.standard_normal(rows),
            "id": np.arange(rows, dtype=np.int64),
            "count": rng.integers(0, 1000, rows, dtype=np.int64),
            "small": rng.integers(0, 100, rows, dtype=np.int32),
            "flag": rng.random(rows) < 0.3,
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, rows), "s"),
            "city": pd.Categorical.from_codes(
                rng.integers(0, 5, rows), ["Lyon", "Oslo", "Lima", "Pune", "Kobe"]
            ),
            "label": np.array([f"item-{i % 5000}" for i in range(rows)], dtype=object),
        }
    )
    return {"frame": frame}


def build_small(_: int = 0) -> dict[str, Any]:
    return {"small": {i: i * 7 for i in range(100)}}


ARRAY_STATES = ("incompressible", "uniform", "compressible")


def describe(spec: StateSpec, size: int) -> str:
    if spec.key in ARRAY_STATES:
        return fmt_size(size)
    return f"{size / 1e6:g}M" if size >= 1_000_000 else f"{size:,}"


@dataclass
class StateSpec:
    key: str
    title: str
    build: Callable[[int], dict[str, Any]]
    full: int
    quick: int
    compressible: bool = False


STATES = [
    StateSpec("incompressible", "{size} of incompressible float32 arrays (4 arrays)",
              build_incompressible, GB, 16 * MB),
    StateSpec("uniform", "{size} of uniform float32 (one array)", build_uniform, GB // 2, 32 * MB),
    StateSpec("compressible", "{size} of compressible arrays (small ints + 99 % zeros)",
              build_compressible, GB, 16 * MB, compressible=True),
    StateSpec("objects", "{size} small Python objects (dict of tuples and strings)",
              build_objects, 1_000_000, 10_000, compressible=True),
    StateSpec("frame", "pandas DataFrame of mixed dtypes, {size} rows (11 columns)",
              build_frame, 5_000_000, 10_000, compressible=True),
    StateSpec("forest", "scikit-learn RandomForestClassifier, {size} trees (20k x 20 data)",
              build_forest, 100, 2),
    StateSpec("small", "small state: a dict of 100 ints", build_small, 0, 0),
]

# ---------------------------------------------------------------- the methods


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def evict(path: str) -> None:
    """Drop the file's pages from the page cache (after an fsync, so they are clean)."""
    if os.path.isdir(path):
        for f in os.listdir(path):
            evict(os.path.join(path, f))
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sc_save(state: dict, path: str) -> None:
    from statecache.entry.writer import write_entry

    write_entry(path, state, {"name": "bench"}, progress=False)


def sc_load(path: str) -> dict:
    from statecache.entry.reader import read_entry

    return read_entry(path, progress=False)[1]


def sc_load_mmap(path: str) -> dict:
    from statecache.entry.reader import read_entry

    return read_entry(path, mmap=True, progress=False)[1]


def npy_save(state: dict, path: str) -> None:
    """One ``.npy`` file per array in a directory (what ``np.load`` and ``mmap_mode`` read)."""
    os.makedirs(path, exist_ok=True)
    for name, a in state.items():
        np.save(os.path.join(path, f"{name}.npy"), a)


def npy_load(path: str, mmap_mode: str | None = None) -> dict:
    return {
        f[:-4]: np.load(os.path.join(path, f), mmap_mode=mmap_mode)  # type: ignore[arg-type]
        for f in sorted(os.listdir(path))
    }


def npy_load_mmap(path: str) -> dict:
    return npy_load(path, "r")


def parquet_save(state: dict, path: str) -> None:
    state["frame"].to_parquet(path, engine="pyarrow")


def parquet_load(path: str) -> dict:
    import pandas as pd

    return {"frame": pd.read_parquet(path, engine="pyarrow")}


def pickle_save(state: dict, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=5)


def pickle_save_fsync(state: dict, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())


def pickle_load(path: str) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def readinto_fresh(path: str) -> Any:
    """The file's bytes into newly allocated memory (what any restore must at least do)."""
    buf = np.empty(os.path.getsize(path), dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        view = memoryview(buf)
        done = 0
        while done < len(view):
            done += f.readinto(view[done:])
    return buf


def joblib_save(state: dict, path: str) -> None:
    import joblib

    joblib.dump(state, path)


def joblib_load(path: str) -> dict:
    import joblib

    return joblib.load(path)


def dill_save(state: dict, path: str) -> None:
    import dill

    with open(path, "wb") as f:
        dill.dump(state, f, protocol=5)


def dill_load(path: str) -> dict:
    import dill

    with open(path, "rb") as f:
        return dill.load(f)


def cloudpickle_save(state: dict, path: str) -> None:
    import cloudpickle

    with open(path, "wb") as f:
        cloudpickle.dump(state, f, protocol=5)


def zstd_save(state: dict, path: str) -> None:
    import zstandard

    with open(path, "wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as w:
        pickle.dump(state, w, protocol=5)


def zstd_load(path: str) -> dict:
    import zstandard

    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as r:
        return pickle.load(r)


def arrays_only(key: str) -> bool:
    return key in ARRAY_STATES


@dataclass
class Method:
    key: str
    label: str
    save: Callable[[dict, str], None] | None
    load: Callable[[str], Any] | None
    cold: bool = False  # also measure a cold restore
    shares_file_with: str | None = None  # restore-only methods reading another method's file
    applies: Callable[[str], bool] = lambda key: True  # noqa: E731  (which states it takes)
    exact: bool = True  # restores the very objects (parquet gives back its own dtypes)


METHODS = [
    Method("sc", "statecache", sc_save, sc_load, cold=True),
    Method("sc_mmap", "statecache mmap=True", None, sc_load_mmap, shares_file_with="sc"),
    Method("readinto", "readinto of the statecache file (bound)", None, readinto_fresh,
           cold=True, shares_file_with="sc"),
    Method("pickle", "pickle (dump + write / load)", pickle_save, pickle_load, cold=True),
    Method("pickle_fsync", "pickle dump + write + fsync", pickle_save_fsync, None),
    Method("joblib", "joblib dump/load", joblib_save, joblib_load),
    Method("dill", "dill", dill_save, dill_load),
    Method("cloudpickle", "cloudpickle (load: pickle.load)", cloudpickle_save, pickle_load),
    Method("zstd", "pickle + zstd-3", zstd_save, zstd_load),
    Method("npy", "np.save / np.load", npy_save, npy_load, applies=arrays_only),
    Method("npy_mmap", "np.load(mmap_mode='r')", None, npy_load_mmap, shares_file_with="npy",
           applies=arrays_only),
    Method("parquet", "to_parquet / read_parquet (pyarrow)", parquet_save, parquet_load,
           applies=lambda key: key == "frame", exact=False),
]
LOADERS = {m.key: m.load for m in METHODS if m.load is not None}
BUILDERS = {spec.key: spec.build for spec in STATES}


IMPORTS = {"sc": "statecache.entry.reader", "sc_mmap": "statecache.entry.reader",
           "joblib": "joblib", "dill": "dill", "zstd": "zstandard", "parquet": "pyarrow.parquet"}


def prepare(state_key: str, method_key: str = "") -> None:
    """Import what a user's script holding this state has imported before its restore, and
    the restoring library (``import statecache`` is measured on its own)."""
    if method_key in IMPORTS:
        importlib.import_module(IMPORTS[method_key])
    if state_key == "frame":
        import pandas  # noqa: F401
    elif state_key == "forest":
        import sklearn.ensemble  # noqa: F401


CHILD = (
    "import sys, time, gc; t0 = time.perf_counter(); sys.path.insert(0, {here!r}); import run; "
    "run.prepare({state!r}, {method!r}); {extra}t = time.perf_counter(); out = {call}; "
    "t1 = time.perf_counter(); print(t1 - t, t1 - t0)"
)


def child_restore(state_key: str, call: str, extra: str = "", method: str = "") -> tuple[float, float]:
    """Time ``call`` in a fresh interpreter (gc on, as in a user's script): (restore seconds,
    whole process from its first line to the end of the restore)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(here=here, state=state_key, method=method, call=call, extra=extra)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env())
    wall = time.perf_counter() - t
    if out.returncode:
        raise RuntimeError(f"restore in a child failed: {call}\n{out.stderr}")
    restore, _ = map(float, out.stdout.split())
    return restore, wall


def path_size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


# ---------------------------------------------------------------- measuring


@dataclass
class Samples:
    save: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)  # the restoring process, start to end
    size: int | None = None

    @staticmethod
    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None


def settle(nbytes: int) -> None:
    """Touch and free ``nbytes`` of memory before a timed restore. This VM hands memory freed by
    the guest back to its host, and the first touch of such memory costs 1 to 2 s per GB: a
    restore right after a 1 GB save (whose old file's page cache was just freed) ran 3 to 6x
    slower than the same restore a moment later. Touching fresh memory first gives every
    method memory that is already backed, so restores compare the methods, not the host."""
    if nbytes >= 64 * MB:
        block = np.ones(int(nbytes * 1.25), dtype=np.uint8)
        del block


# main() clears it under --quick: a full collection before every timed call (a few hundred, each
# 0.1 s or more once pandas and scikit-learn are loaded) was most of the smoke run's own time
COLLECT_BEFORE_TIMING = [True]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    if COLLECT_BEFORE_TIMING[0]:
        gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def check_equal(a: dict, b: dict, exact: bool = True) -> None:
    """A restored state must be the saved one; ``exact=False``: the same values, whatever the
    dtypes (a parquet round trip gives a frame its own string and category types)."""
    assert list(a) == list(b), (list(a), list(b))
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k
        elif type(x).__name__ == "DataFrame":
            if exact:
                assert x.equals(y), k
            else:
                assert x.shape == y.shape and list(x.columns) == list(y.columns), k
                assert (x.astype(object) == y.astype(object)).all().all(), k
        elif type(x).__name__ == "RandomForestClassifier":
            probe = np.random.default_rng(5).standard_normal((200, x.n_features_in_))
            assert np.array_equal(x.predict_proba(probe), y.predict_proba(probe)), k
        else:
            assert x == y, k


QUICK_CHILDREN = ("sc",)  # under --quick, the only restore run in a fresh process (one per state)


def bench_state(spec: StateSpec, size: int, rounds: int, scratch: str, log: Callable,
                quick: bool = False) -> dict:
    """Every method on one state. ``quick`` (the CI smoke test): warm restores only, in a
    child for QUICK_CHILDREN alone, no joblib.Memory round, so that the whole run stays short
    (a child's interpreter start and imports cost more than the restores of small states)."""
    log(f"\n== {spec.title.format(size=describe(spec, size))}: building")
    build_times: list[float] = []
    box: dict[str, Any] = {}  # the state and its pickle, dropped between uses
    t, box["state"] = timed(partial(spec.build, size))
    build_times.append(t)
    methods = [m for m in METHODS if m.applies(spec.key)]
    samples = {m.key: Samples() for m in methods}
    extra: dict[str, Any] = {"memory_hit": [], "memory_miss": [], "loads": [], "memory_size": None}
    box["pickled"] = pickle.dumps(box["state"], protocol=5)
    extra["pickle_bytes"] = state_bytes = len(box["pickled"])

    for r in range(rounds):
        paths = {m.key: os.path.join(scratch, f"{spec.key}.{m.shares_file_with or m.key}")
                 for m in methods}
        for m in methods:
            path = paths[m.key]
            if m.save is not None:
                t, _ = timed(partial(m.save, box["state"], path))
                samples[m.key].save.append(t)
                samples[m.key].size = path_size(path)
            if m.load is None:
                continue
            if r == 0 and m.key != "readinto":  # a benchmark of a wrong answer is worthless
                check_equal(box["state"], m.load(path), exact=m.exact)
            call = f"run.LOADERS[{m.key!r}]({path!r})"
            settle(state_bytes)
            if quick and m.key not in QUICK_CHILDREN:  # a smoke test: in-process, no child
                t, wall = timed(partial(m.load, path))[0], None
            else:
                t, wall = child_restore(spec.key, call, method=m.key)
            samples[m.key].load.append(t)
            if wall is not None:
                samples[m.key].whole.append(wall)
            if m.key == "sc":
                # pickle.loads of the same state's bytes, already in memory: measured right
                # after statecache's restore, so that both see the same machine load
                settle(state_bytes)
                t, got = timed(partial(pickle.loads, box["pickled"]))
                extra["loads"].append(t)
                del got
            if m.cold and not quick:
                evict(path)
                settle(state_bytes)
                samples[m.key].cold.append(child_restore(spec.key, call, method=m.key)[0])
        for path in set(paths.values()):
            remove(path)
        if not quick:
            _memory_round(spec, size, scratch, extra, state_bytes)

        # re-running the setup
        del box["state"]
        gc.collect()
        t, box["state"] = timed(partial(spec.build, size))
        build_times.append(t)
        log(f"   round {r + 1}/{rounds}: statecache save {samples['sc'].save[-1]:.3f} s, "
            f"restore {samples['sc'].load[-1]:.4f} s, pickle.load "
            f"{samples['pickle'].load[-1]:.4f} s")
    box.clear()
    gc.collect()
    return {"spec": spec, "size": size, "samples": samples, "extra": extra,
            "build": build_times[1:]}


def _memory_round(spec: StateSpec, size: int, scratch: str, extra: dict, state_bytes: int) -> None:
    """joblib.Memory as a user meets it: a script whose first run misses (compute + store) in
    an empty cache, and whose second run, a fresh process, hits."""
    location = os.path.join(scratch, f"joblib-memory-{spec.key}")
    shutil.rmtree(location, ignore_errors=True)
    setup = f"import joblib; f = joblib.Memory({location!r}, verbose=0).cache(run.BUILDERS[{spec.key!r}]); "
    extra["memory_miss"].append(child_restore(spec.key, f"f({size})", setup)[0])
    settle(state_bytes)
    extra["memory_hit"].append(child_restore(spec.key, f"f({size})", setup)[0])
    extra["memory_size"] = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(location) for f in fs
    )
    shutil.rmtree(location, ignore_errors=True)


def bench_fingerprint(nbytes: int, rounds: int, quick: bool) -> dict:
    import xxhash

    from statecache.key.values import Fingerprinter

    a = np.random.default_rng(3).standard_normal(nbytes // 8)
    ours = []
    raw = []
    for _ in range(max(rounds, 3)):
        t, _ = timed(lambda: Fingerprinter().value(a, "a"))
        ours.append(t)
        t, _ = timed(lambda: xxhash.xxh3_128_digest(memoryview(a).cast("B")))
        raw.append(t)
    out = {"bytes": a.nbytes, "ours": statistics.median(ours), "xxh3": statistics.median(raw)}
    if not quick:  # joblib.Memory's argument hash (md5 through a pickler): once is plenty
        import joblib

        t, _ = timed(lambda: joblib.hash(a))
        out["joblib_hash"] = t
    return out


PYCACHE: list[str] = []  # set by main(): a bytecode cache inside the scratch directory


def child_env() -> dict[str, str]:
    """A child interpreter as an installed package runs: with bytecode caches (kept in the
    scratch directory, not in the source tree) even if PYTHONDONTWRITEBYTECODE is set here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if PYCACHE:
        env["PYTHONPYCACHEPREFIX"] = PYCACHE[0]
    return env


def bench_import(runs: int) -> dict:
    code = (
        "import time; t = time.perf_counter(); import statecache; "
        "t1 = time.perf_counter(); import statecache._checkpoint, statecache.key.values, "
        "statecache.entry.format, statecache.store.store, filelock; t2 = time.perf_counter(); "
        "print(t1 - t, t2 - t1)"
    )
    times, lazy = [], []
    for i in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=child_env(), check=True)
        if i:  # the first run writes the bytecode caches
            a, b = map(float, out.stdout.split())
            times.append(a)
            lazy.append(b)
    return {"median": statistics.median(times), "lazy": statistics.median(lazy), "runs": runs}


HIT_SCRIPT = textwrap.dedent(
    """
    import json, pickle, sys, time
    t0 = time.perf_counter()
    import statecache as sc
    t1 = time.perf_counter()
    with sc.checkpoint("small"):
        small = {i: i * 7 for i in range(100)}
    t2 = time.perf_counter()
    with sc.checkpoint("small_again"):
        small_again = {i: i * 7 for i in range(100)}
    t3 = time.perf_counter()
    data = pickle.dumps(small, protocol=5)
    n = 2000
    s = time.perf_counter()
    for _ in range(n):
        pickle.loads(data)
    loads = (time.perf_counter() - s) / n
    print(json.dumps({"import": t1 - t0, "first": t2 - t1, "second": t3 - t2, "loads": loads}))
    """
)

MEMORY_HIT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import joblib
    t1 = time.perf_counter()
    memory = joblib.Memory(sys.argv[1], verbose=0)

    @memory.cache
    def setup():
        return {i: i * 7 for i in range(100)}

    t2 = time.perf_counter()
    small = setup()
    t3 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "hit": t3 - t2}))
    """
)


def bench_small_hit(scratch: str, runs: int) -> dict:
    """The hit as a user sees it: a script with ``with checkpoint`` run again and again."""
    folder = os.path.join(scratch, "hit")
    os.makedirs(folder, exist_ok=True)
    script = os.path.join(folder, "small_hit.py")
    with open(script, "w") as f:
        f.write(HIT_SCRIPT)
    mscript = os.path.join(folder, "memory_hit.py")
    with open(mscript, "w") as f:
        f.write(MEMORY_HIT_SCRIPT)
    env = child_env()
    for _ in range(2):  # compute and save, then a first hit that writes the bytecode caches
        subprocess.run([sys.executable, script], cwd=folder, env=env, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, mscript, os.path.join(folder, "jm")], cwd=folder,
                       env=env, check=True, capture_output=True)
    rows = []
    mrows = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, script], cwd=folder, env=env, check=True,
                             capture_output=True, text=True)
        if "'small' restored" not in out.stderr or "'small_again' restored" not in out.stderr:
            raise RuntimeError(f"the small-state script did not hit:\n{out.stderr}")
        rows.append(json.loads(out.stdout))
        out = subprocess.run([sys.executable, mscript, os.path.join(folder, "jm")], cwd=folder,
                             env=env, check=True, capture_output=True, text=True)
        mrows.append(json.loads(out.stdout))
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["memory_hit"] = statistics.median(r["hit"] for r in mrows)
    med["runs"] = runs
    return med


# ---------------------------------------------------------------- reporting


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / (1 << 20):.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return f"{cpu}, {cores} cores{mem}, {platform.system()} {platform.release()}"


def filesystem(path: str) -> str:
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], f"{parts[2]} on {parts[0]}"
    except OSError:
        pass
    return kind


def versions() -> str:
    import importlib.metadata as md

    names = ["numpy", "pandas", "joblib", "dill", "cloudpickle", "zstandard", "xxhash"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}; " + ", ".join(found)


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def fmt_size(n: int | None) -> str:
    if n is None:
        return "—"
    if n >= GB:
        return f"{n / GB:.2f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 1024:.1f} KB"


def fmt_ratio(x: float | None, ref: float | None) -> str:
    if x is None or ref is None or ref <= 0:
        return "—"
    return f"{x / ref:.2f}×"


def state_table(res: dict) -> tuple[list[str], dict[str, float]]:
    spec: StateSpec = res["spec"]
    s: dict[str, Samples] = res["samples"]
    ex = res["extra"]
    sc = s["sc"]
    ref_save, ref_load, ref_size = Samples.med(sc.save), Samples.med(sc.load), sc.size
    lines = [
        f"### {spec.title.format(size=describe(spec, res['size']))}",
        "",
        "| method | save | restore (warm) | restore (cold) | whole process (warm) | size | "
        "save ratio | restore ratio | size ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(label: str, save: float | None, load: float | None, cold: float | None,
            size: int | None, whole: float | None = None) -> None:
        lines.append(
            f"| {label} | {fmt_s(save)} | {fmt_s(load)} | {fmt_s(cold)} | {fmt_s(whole)} | "
            f"{fmt_size(size)} | {fmt_ratio(save, ref_save)} | {fmt_ratio(load, ref_load)} | "
            f"{fmt_ratio(size, ref_size) if size is not None else '—'} |"
        )

    for m in METHODS:
        if m.key not in s:
            continue
        x = s[m.key]
        size = x.size if m.save is not None else None
        row(m.label, Samples.med(x.save), Samples.med(x.load), Samples.med(x.cold), size,
            Samples.med(x.whole))
    row("pickle.loads of the bytes in memory", None, Samples.med(ex["loads"]), None,
        ex["pickle_bytes"])
    miss, build = Samples.med(ex["memory_miss"]), Samples.med(res["build"])
    row("joblib.Memory (save: miss − setup; restore: hit)",
        None if miss is None or build is None else max(miss - build, 0.0),
        Samples.med(ex["memory_hit"]), None, ex["memory_size"])
    row("re-running the setup", None, build, None, None)
    lines.append("")

    key: dict[str, float] = {}
    load_pickle_bytes = Samples.med(ex["loads"])
    rd = Samples.med(s["readinto"].load)
    p_save = Samples.med(s["pickle"].save)
    p_save_f = Samples.med(s["pickle_fsync"].save)
    z_size = s["zstd"].size
    if ref_load and rd:
        key["speed_vs_readinto"] = rd / ref_load
    rd_cold = Samples.med(s["readinto"].cold)
    sc_cold = Samples.med(sc.cold)
    if rd_cold and sc_cold:
        key["cold_speed_vs_readinto"] = rd_cold / sc_cold
    if ref_load and load_pickle_bytes:
        key["restore_vs_pickle_loads"] = ref_load / load_pickle_bytes
    pl = Samples.med(s["pickle"].load)
    if ref_load and pl:
        key["speedup_vs_pickle_load"] = pl / ref_load
    if ref_save and p_save:
        key["save_vs_pickle_write"] = ref_save / p_save
    if ref_save and p_save_f:
        key["save_vs_pickle_write_fsync"] = ref_save / p_save_f
    if ref_size and z_size:
        key["size_vs_zstd3"] = ref_size / z_size
    peers = [Samples.med(s[k].load) for k in PICKLE_FAMILY if k in s]
    peers.append(Samples.med(ex["memory_hit"]))
    fastest = min((p for p in peers if p), default=None)
    if ref_load and fastest:
        key["vs_fastest_pickle_peer"] = fastest / ref_load
    mm = Samples.med(s["sc_mmap"].load)
    if mm is not None:
        key["mmap_seconds"] = mm
    key["state_bytes"] = float(sc.size or 0)
    return lines, key


PICKLE_FAMILY = ("pickle", "joblib", "dill", "cloudpickle")


def verdict(ok: bool | None) -> str:
    return "reported" if ok is None else "met" if ok else "**missed**"


def report(args: argparse.Namespace, results: list[dict], fp: dict | None, imp: dict | None,
           hit: dict | None, scratch: str, started: float) -> str:
    keys: dict[str, dict[str, float]] = {}
    tables: list[str] = []
    for res in results:
        lines, key = state_table(res)
        tables += lines
        keys[res["spec"].key] = key

    targets = ["| target | measured | |", "| --- | ---: | --- |"]

    def t(label: str, value: str, ok: bool | None) -> None:
        targets.append(f"| {label} | {value} | {verdict(ok)} |")

    inc = keys.get("incompressible", {})
    if "speed_vs_readinto" in inc:
        t("incompressible 1 GB restore ≥ 0.8× the speed of `readinto` (warm)",
          f"{inc['speed_vs_readinto']:.2f}×", inc["speed_vs_readinto"] >= 0.8)
    if "cold_speed_vs_readinto" in inc:
        t("… the same, cold (evicted page cache)", f"{inc['cold_speed_vs_readinto']:.2f}×",
          inc["cold_speed_vs_readinto"] >= 0.8)
    if "speedup_vs_pickle_load" in inc:
        t("incompressible restore ≥ 3× faster than `pickle.load`",
          f"{inc['speedup_vs_pickle_load']:.1f}×", inc["speedup_vs_pickle_load"] >= 3)
    if "mmap_seconds" in inc:
        t("mmap restore of 1 GB < 10 ms", fmt_s(inc["mmap_seconds"]), inc["mmap_seconds"] < 0.01)
    for k, kv in keys.items():
        if "vs_fastest_pickle_peer" in kv:
            t(f"{k}: restore faster than every pickle-family peer (pickle, cloudpickle, dill, "
              "joblib dump/load and Memory), fastest peer / statecache",
              f"{kv['vs_fastest_pickle_peer']:.2f}×", kv["vs_fastest_pickle_peer"] > 1)
        if k in ARRAY_STATES and "speedup_vs_pickle_load" in kv:
            t(f"{k}: restore ≥ 2× faster than `pickle.load`",
              f"{kv['speedup_vs_pickle_load']:.2f}×", kv["speedup_vs_pickle_load"] >= 2)
    obj = keys.get("objects", {})
    if "restore_vs_pickle_loads" in obj:
        t("1M objects restore ≤ 1.15× `pickle.loads` of the same bytes",
          f"{obj['restore_vs_pickle_loads']:.2f}×", obj["restore_vs_pickle_loads"] <= 1.15)
    for k in ("incompressible", "uniform", "compressible", "objects", "frame", "forest"):
        if "save_vs_pickle_write_fsync" in keys.get(k, {}):
            a = keys[k]["save_vs_pickle_write_fsync"]
            b = keys[k].get("save_vs_pickle_write")
            t(f"{k}: save ≤ 1.3× `pickle.dump` + write + fsync (without fsync: "
              f"{b:.2f}×)" if b else f"{k}: save ≤ 1.3× pickle.dump + write + fsync",
              f"{a:.2f}×", a <= 1.3)
    for k in ("compressible", "objects", "frame"):
        if "size_vs_zstd3" in keys.get(k, {}):
            a = keys[k]["size_vs_zstd3"]
            t(f"{k}: entry size / pickle + zstd-3 (the design asks for it beside, no target)",
              f"{a:.2f}×", None)
    if fp:
        gbs = fp["bytes"] / fp["ours"] / 1e9
        t(f"fingerprint of a {fmt_size(fp['bytes'])} array ≥ 10 GB/s", f"{gbs:.1f} GB/s", gbs >= 10)
    if hit:
        over = hit["first"] - hit["loads"]
        t("small-state hit < 2 ms above `pickle.loads` (first checkpoint of the process)",
          fmt_s(over), over < 0.002)
        over2 = hit["second"] - hit["loads"]
        t("… a later checkpoint in the same process", fmt_s(over2), over2 < 0.002)
    if imp:
        t("`import statecache` < 30 ms", fmt_s(imp["median"]), imp["median"] < 0.03)

    out = [
        "# statecache benchmarks",
        "",
        f"Command: `python benchmarks/run.py{' --quick' if args.quick else ''}"
        f"{f' --rounds {args.rounds}' if args.rounds_given else ''}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{(time.time() - started) / 60:.1f} min.",
        "",
        f"- Machine: {machine()}; shared with other developers' test runs while this ran, so "
        "medians over rounds, methods interleaved within each round.",
        f"- Files: {filesystem(os.path.realpath(scratch))} (scratch directory under "
        f"`{os.path.dirname(scratch)}`).",
        f"- {versions()}.",
        f"- Rounds per state: {args.rounds} (medians). \"warm\": the file was just written and "
        "is in the page cache; \"cold\": evicted first with an fsync and "
        "`posix_fadvise(POSIX_FADV_DONTNEED)`.",
        "- Before every timed restore the benchmark touches and frees 1.25x the state's size "
        "of memory: this VM returns freed memory to its host and the first touch of such "
        "memory costs 1 to 2 s per GB, which made whichever restore came first after a big "
        "save 3 to 6x slower (a property of the VM, not of the method).",
        "- Ratios are peer / statecache (above 1: statecache is faster or smaller). The save of "
        "statecache includes an fsync of the file and of its directory; the save target is "
        "judged against `pickle.dump` + write + fsync (the same durability) and the ratio "
        "without fsync is shown beside it.",
        "- `readinto` reads the statecache file into newly allocated memory (`np.empty`), one "
        "call: the bound for any restore of that file.",
        "",
        "## Targets",
        "",
        *targets,
        "",
        "## Save, restore and size",
        "",
        *tables,
    ]
    if fp:
        out += [
            "## Fingerprint of an array input",
            "",
            "| method | time | speed |",
            "| --- | ---: | ---: |",
            f"| statecache `Fingerprinter().value` | {fmt_s(fp['ours'])} | "
            f"{fp['bytes'] / fp['ours'] / 1e9:.1f} GB/s |",
            f"| xxh3-128 of the raw buffer (bound) | {fmt_s(fp['xxh3'])} | "
            f"{fp['bytes'] / fp['xxh3'] / 1e9:.1f} GB/s |",
        ]
        if "joblib_hash" in fp:
            out.append(f"| `joblib.hash` (joblib.Memory's argument hash) | "
                       f"{fmt_s(fp['joblib_hash'])} | {fp['bytes'] / fp['joblib_hash'] / 1e9:.2f} GB/s |")
        out.append("")
    if hit:
        out += [
            "## Hit on a small state, as a user sees it",
            "",
            "A script holding `with sc.checkpoint(\"small\"): small = {i: i * 7 for i in "
            f"range(100)}}` (and a second one like it) run {hit['runs']} times after a first "
            "computing run; the time from the line before the `with` to the line after it "
            "(key computation, lookup, lock, load, status line).",
            "",
            "| | time |",
            "| --- | ---: |",
            f"| first checkpoint of the process (includes loading statecache's modules) | {fmt_s(hit['first'])} |",
            f"| a second checkpoint in the same process | {fmt_s(hit['second'])} |",
            f"| `pickle.loads` of the state's bytes | {fmt_s(hit['loads'])} |",
            f"| `import statecache` in that script | {fmt_s(hit['import'])} |",
            f"| joblib.Memory hit of the same state (fresh process, after `import joblib`) | {fmt_s(hit['memory_hit'])} |",
            "",
        ]
    if imp:
        out += [
            f"`import statecache` in a fresh interpreter: {fmt_s(imp['median'])} (median of "
            f"{imp['runs']}); loading what the first `checkpoint` needs after that "
            f"(`_checkpoint`, `_fingerprint`, `_entry`, `_store`, filelock): "
            f"{fmt_s(imp['lazy'])}. Children run with bytecode caches, as an installed "
            "package has.",
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small states, one round (smoke test)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per state (default 5; quick 1)")
    ap.add_argument("--only", default="", help="comma list of states: " +
                    ",".join(s.key for s in STATES) + ",fingerprint,import")
    ap.add_argument("--dir", default=None, help="where to write the scratch files")
    ap.add_argument("--output", default=None,
                    help="markdown report (default: benchmarks/RESULTS.md; none with --quick)")
    args = ap.parse_args(argv)
    args.rounds_given = args.rounds is not None
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    only = {x for x in args.only.split(",") if x}
    started = time.time()
    scratch = tempfile.mkdtemp(prefix="statecache-bench-", dir=args.dir)
    if not args.quick:
        # --quick's children use the installed bytecode: with a fresh prefix its first child
        # compiled numpy, pandas and scikit-learn from source (10 CPU-s, half the smoke run)
        PYCACHE.append(os.path.join(scratch, "pycache"))
    COLLECT_BEFORE_TIMING[0] = not args.quick

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        results = []
        for spec in STATES:
            if only and spec.key not in only:
                continue
            size = spec.quick if args.quick else spec.full
            results.append(bench_state(spec, size, args.rounds, scratch, log, args.quick))
        fp = imp = hit = None
        if not only or "fingerprint" in only:
            log("\n== fingerprint")
            fp = bench_fingerprint(32 * MB if args.quick else GB, args.rounds, args.quick)
        if not only or "small" in only:
            log("\n== small-state hit (subprocesses)")
            hit = bench_small_hit(scratch, 1 if args.quick else 15)
        if not only or "import" in only:
            log("\n== import statecache (subprocesses)")
            imp = bench_import(1 if args.quick else 15)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = report(args, results, fp, imp, hit, scratch, started)
    print(text)
    output = args.output or (None if args.quick else os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    if output:
        with open(output, "w") as f:
            f.write(text + "\n")
        log(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
