"""The restore path before and after a change: the same entry files restored by two checkouts'
readers and by ``pickle.load``, a fresh process per restore, rounds interleaved, medians of the
wall time, of the CPU time (user, system, their sum) and of the minor page faults that the
restore took; ``dill.load`` of the pickle file too when dill is installed. On a shared machine
the CPU times move less than the wall time, so both are shown.

    git archive <commit> statecache | tar -x -C /tmp/before      # the "before" checkout
    python benchmarks/bench_restore.py --before /tmp/before --only forest,objects --rounds 7
    python benchmarks/bench_restore.py --before /tmp/before --only forest,small --save

The states are benchmarks/run.py's (``--scale`` shrinks them); the entries are written once by
this checkout's writer, so only the readers differ (the entry format must be the same).
``--save`` times the writers instead: each checkout's ``write_entry`` against ``pickle.dump`` +
fsync of the same state, alternating in one process per checkout (the state built there once).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402  (benchmarks/run.py: the states and the VM's memory settling)

CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
state, path = sys.argv[2], sys.argv[3]
import numpy, pickle
if state == "frame":
    import pandas
elif state == "forest":
    import sklearn.ensemble
loader = pickle
if path.endswith(".sc"):
    from statecache.entry.reader import read_entry
elif sys.argv[4] == "dill":
    import dill as loader
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if path.endswith(".sc"):
    out = read_entry(path, progress=False)
else:
    with open(path, "rb") as f:
        out = loader.load(f)
t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
print(t1 - t0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt)
"""


def restore(root: str, state: str, path: str, loader: str = "pickle") -> tuple[float, ...]:
    """(wall, user, system seconds, minor page faults) of one restore in a fresh interpreter;
    ``loader``: "pickle" or "dill" for a pickle file."""
    out = subprocess.run([sys.executable, "-c", CHILD, root, state, path, loader],
                         capture_output=True, text=True, env=run.child_env())
    if out.returncode:
        raise RuntimeError(f"restore failed ({root}, {path}):\n{out.stderr}")
    return tuple(map(float, out.stdout.split()))


SAVE_CHILD = r"""
import os, resource, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from statecache.entry.writer import write_entry
sys.path.insert(1, sys.argv[2])
import run
state, rounds, tmp = sys.argv[3], int(sys.argv[4]), sys.argv[5]
spec = {s.key: s for s in run.STATES}[state]
value = spec.build(max(1, int(spec.full * float(sys.argv[6]))))
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
times = {"sc": [], "pk": []}
for _ in range(rounds):
    for name in times:
        c, t = cpu(), time.perf_counter()
        if name == "sc":
            write_entry(os.path.join(tmp, "e.sc"), value, {"name": state}, progress=False)
        else:
            run.pickle_save_fsync(value, os.path.join(tmp, "e.pkl"))
        times[name].append((time.perf_counter() - t, cpu() - c))
for name, xs in times.items():
    print(name, statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs))
"""


def save_times(root: str, state: str, rounds: int, scale: float) -> dict[str, tuple[float, float]]:
    """name -> (wall, CPU) medians of ``root``'s write_entry ("sc") and of pickle.dump + fsync
    ("pk") of one state, in one fresh interpreter."""
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", SAVE_CHILD, root, here, state, str(rounds), tmp, str(scale)],
            capture_output=True, text=True, env=run.child_env(),
        )
    if out.returncode:
        raise RuntimeError(f"save failed ({root}, {state}):\n{out.stderr}")
    return {line.split()[0]: (float(line.split()[1]), float(line.split()[2]))
            for line in out.stdout.splitlines()}


def main_save(args: argparse.Namespace) -> None:
    roots = {"before": os.path.abspath(args.before), "after": ROOT}
    print(f"{'state':8} {'writer':8} {'wall':>9} {'cpu':>9} {'pickle+fsync':>13} {'wall x':>7}"
          f" {'cpu x':>6}   (ms, medians of {args.rounds}; uptime: {os.getloadavg()[0]:.1f})")
    for key in args.only.split(","):
        for name, root in roots.items():
            t = save_times(root, key, args.rounds, args.scale)
            (wall, cpu), (pwall, pcpu) = t["sc"], t["pk"]
            print(f"{key:8} {name:8} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {pwall * 1e3:13.1f}"
                  f" {wall / pwall:7.2f} {cpu / pcpu:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a checkout (directory holding statecache/)")
    ap.add_argument("--only", default="forest,objects,frame,small")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="state size factor (default 1)")
    ap.add_argument("--save", action="store_true", help="time the writers, not the readers")
    args = ap.parse_args()
    if args.save:
        main_save(args)
        return
    from statecache.entry.writer import write_entry

    specs = {s.key: s for s in run.STATES}
    readers = {"before": os.path.abspath(args.before), "after": ROOT, "pickle.load": ROOT}
    try:
        import dill  # noqa: F401
    except ImportError:
        pass
    else:
        readers["dill.load"] = ROOT
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for key in args.only.split(","):
            state = specs[key].build(max(1, int(specs[key].full * args.scale)))
            files[key] = (os.path.join(tmp, f"{key}.sc"), os.path.join(tmp, f"{key}.pkl"))
            write_entry(files[key][0], state, {"name": key}, progress=False)
            with open(files[key][1], "wb") as f:
                pickle.dump(state, f, protocol=5)
            del state
        times: dict[tuple[str, str], list[tuple[float, ...]]] = {}
        for _ in range(args.rounds):
            for key, (entry, pkl) in files.items():
                for name, root in readers.items():
                    run.settle(os.path.getsize(pkl))
                    path = pkl if name.endswith(".load") else entry
                    loader = "dill" if name == "dill.load" else "pickle"
                    times.setdefault((key, name), []).append(restore(root, key, path, loader))
    print(f"{'state':8} {'reader':12} {'wall':>10} {'user':>10} {'system':>10} {'cpu':>10}"
          f" {'faults':>8}   (ms, medians of {args.rounds}; uptime: {os.getloadavg()[0]:.1f})")
    for (key, name), xs in times.items():
        wall, user, system = (statistics.median(x[i] for x in xs) * 1e3 for i in range(3))
        cpu = statistics.median(x[1] + x[2] for x in xs) * 1e3
        faults = statistics.median(x[3] for x in xs)
        print(f"{key:8} {name:12} {wall:10.1f} {user:10.1f} {system:10.1f} {cpu:10.1f}"
              f" {faults:8.0f}")


if __name__ == "__main__":
    main()
