"""Restore of a torch state (an ``nn.Module`` plus its ``state_dict``, ~500 MB of weights)
against ``torch.load``, ``torch.load(mmap=True)``, ``pickle.load`` and safetensors, and the
``readinto`` limit of the same bytes (issue 12 item 1).

    python benchmarks/bench_torch.py [--mb 500] [--rounds 5] [--cold]

Method: each file is written once; every restore runs in a fresh process (``import torch`` and
the loader's module imported before the clock starts, so the figure is the load itself), the
methods interleaved within a round, medians over rounds. Warm: the files were just written and
read, so the page cache holds them (the edit-rerun loop). ``--cold`` also evicts each file with
``posix_fadvise(DONTNEED)`` before its restore. Ratios are "peer / statecache": above 1 means
statecache is faster. Save times are for one save each (statecache ``write_entry``,
``torch.save`` and ``pickle.dump``, each with fsync).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from statecache.entry.writer import write_entry  # noqa: E402

MB = 1 << 20

# Run in the child: imports first, then the clock around the load alone.
CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
import torch
{setup}
if {cold!r}:
    fd = os.open({path!r}, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
t = time.perf_counter()
state = {load}
print(time.perf_counter() - t)
"""


def build_state(mb: int) -> dict[str, Any]:
    """A stack of square Linear layers with weight-like values (normal * 0.02), about ``mb``
    MiB of float32 parameters: the module and its state_dict (which shares its storages)."""
    torch.manual_seed(0)
    width = 2048
    layers = max(1, (mb * MB) // (width * (width + 1) * 4))
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return {"model": model, "weights": model.state_dict()}


def fsynced(path: str, write: Any) -> float:
    t = time.perf_counter()
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t


def write_all(state: dict[str, Any], tmp: str) -> dict[str, tuple[str, str, str]]:
    """Write the state once per method; returns method -> (path, child setup, load expr)."""
    methods: dict[str, tuple[str, str, str]] = {}
    sc = os.path.join(tmp, "state.sc")
    w = write_entry(sc, state, {"name": "torch"})
    print(f"save statecache      {w.seconds:6.2f} s  {w.size / MB:7.0f} MiB")
    reader = "from statecache.entry.reader import read_entry"
    methods["statecache"] = (sc, reader, f"read_entry({sc!r})")
    methods["statecache mmap"] = (sc, reader, f"read_entry({sc!r}, mmap=True)")
    pt = os.path.join(tmp, "state.pt")
    seconds = fsynced(pt, lambda f: torch.save(state, f))
    print(f"save torch.save      {seconds:6.2f} s  {os.path.getsize(pt) / MB:7.0f} MiB")
    methods["torch.load"] = (pt, "", f"torch.load({pt!r}, weights_only=False)")
    methods["torch.load mmap"] = (pt, "", f"torch.load({pt!r}, weights_only=False, mmap=True)")
    pkl = os.path.join(tmp, "state.pkl")
    seconds = fsynced(pkl, lambda f: pickle.dump(state, f, protocol=5))
    print(f"save pickle.dump     {seconds:6.2f} s  {os.path.getsize(pkl) / MB:7.0f} MiB")
    methods["pickle.load"] = (pkl, "import pickle", f"pickle.load(open({pkl!r}, 'rb'))")
    try:
        from safetensors.torch import save_file
    except ImportError:
        print("safetensors is not installed: left out")
    else:
        st = os.path.join(tmp, "weights.safetensors")
        save_file(dict(state["weights"]), st)  # the weights only: safetensors holds no module
        methods["safetensors load_file, mmap-backed (weights only)"] = (st, "from safetensors.torch import load_file", f"load_file({st!r})")
    setup = "import numpy as np; n = os.path.getsize({p!r}); buf = np.empty(n, np.uint8)"
    methods["readinto limit"] = (
        sc,
        setup.format(p=sc),
        f"open({sc!r}, 'rb', buffering=0).readinto(buf)",
    )
    return methods


def restore(path: str, setup: str, load: str, cold: bool) -> float:
    code = CHILD.format(root=ROOT, setup=setup, cold=cold, path=path, load=load)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{load}: {out.stderr}")
    return float(out.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=500, help="MiB of weights (default 500)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also restore with the files evicted")
    ap.add_argument("--dir", default=None, help="scratch directory (default: the temp dir)")
    args = ap.parse_args()
    state = build_state(args.mb)
    n = sum(p.numel() * p.element_size() for p in state["model"].parameters())
    print(f"state: {len(state['model'])} Linear layers, {n / MB:.0f} MiB of float32 weights")
    temperatures = [False, True] if args.cold else [False]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        methods = write_all(state, tmp)
        del state
        times: dict[tuple[str, bool], list[float]] = {(m, c): [] for m in methods for c in temperatures}
        for _ in range(args.rounds):
            for cold in temperatures:
                for name, (path, setup, load) in methods.items():
                    times[name, cold].append(restore(path, setup, load, cold))
    for cold in temperatures:
        print(f"\nrestore, {'cold' if cold else 'warm'} page cache, median of {args.rounds} "
              "fresh processes (peer / statecache: above 1, statecache is faster)")
        ours = statistics.median(times["statecache", cold])
        ours_mmap = statistics.median(times["statecache mmap", cold])
        for name in methods:
            t = statistics.median(times[name, cold])
            base = ours_mmap if "mmap" in name else ours
            print(f"  {name:52s} {t * 1e3:9.1f} ms   x{t / base:6.2f} vs statecache{' mmap' if 'mmap' in name else ''}")


if __name__ == "__main__":
    main()
