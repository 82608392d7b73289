"""The first hit of a process on a small state, as a user meets it: a fresh ``python script.py``
whose one checkpoint hits, against the same script without statecache (DESIGN.md: < 10 ms on
top). Rounds are interleaved (plain, hit, plain, hit, ...) so that a change in the machine's
load falls on both; medians are reported, with the script's own split into ``import
statecache`` and the ``with`` block, and the statecache modules the hit loaded.

    python benchmarks/bench_first_hit.py              # 30 rounds
    python benchmarks/bench_first_hit.py --rounds 60
    python benchmarks/bench_first_hit.py --profile    # cProfile of the block of one hit
    python benchmarks/bench_first_hit.py --instructions   # instructions counted by valgrind
    python benchmarks/bench_first_hit.py --installed --instructions   # as after pip install

``--installed`` runs both scripts with a venv made for the run whose site-packages reaches
statecache and its dependencies through a ``.pth`` of plain paths, as a wheel install does.
Without it, the scripts run with this interpreter, whose editable install of statecache imports
a finder at start-up (pathlib, re, enum, collections, functools, ...): the plain script pays
for modules that a hit would otherwise load, and the overhead looks smaller than a user's.

On a loaded machine (2 cores shared by a team) wall times swing by 3x; ``--instructions`` runs
each script once under ``valgrind --tool=callgrind`` and reports the instructions it executed,
which the load does not change: the hit's cost over the plain script, and a later hit in the
same process (a third checkpoint against two).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN = """
import time
t0 = time.perf_counter()
x = {"a": 1, "b": [1, 2, 3]}
t1 = time.perf_counter()
print(x)
print("split", 0.0, t1 - t0)
"""

HIT = """
import sys, time
t0 = time.perf_counter()
before = set(sys.modules)
import statecache as sc
t1 = time.perf_counter()
with sc.checkpoint("small"):
    x = {"a": 1, "b": [1, 2, 3]}
t2 = time.perf_counter()
print(x)
print("split", t1 - t0, t2 - t1)
print("modules", " ".join(sorted(m for m in set(sys.modules) - before if m.startswith("statecache"))))
print("others", " ".join(sorted(m for m in set(sys.modules) - before if not m.startswith("statecache"))))
"""

PROFILE = """
import cProfile, pstats, sys
import statecache as sc
prof = cProfile.Profile()
prof.enable()
with sc.checkpoint("small"):
    x = {"a": 1, "b": [1, 2, 3]}
prof.disable()
pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(40)
"""


LATER = """
import statecache as sc
n = 10
with sc.checkpoint("first"):
    small = {"k": [i * 7 for i in range(n)], "name": "x"}
with sc.checkpoint("second"):
    small2 = {"k": [i * 7 for i in range(n)], "name": "x"}
"""

LATER_THIRD = LATER + """with sc.checkpoint("third"):
    small3 = {"k": [i * 7 for i in range(n)], "name": "x"}
"""


PYTHON = [sys.executable]  # the interpreter the scripts run with (``--installed``: a venv's)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's imports read .pyc files
    return env


def _installed_python(directory: Path) -> str:
    """A venv in ``directory`` that finds statecache and its dependencies through a ``.pth``
    of plain paths (nothing imported at start-up), like a regular install."""
    import sysconfig

    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / ("Scripts" if os.name == "nt" else "bin") / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this interpreter's packages: xxhash, filelock, ...
    (Path(purelib) / "statecache-bench.pth").write_text(f"{REPO}\n{deps}\n")
    return python


def _run(directory: Path, script: str) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*PYTHON, script], cwd=directory, env=_env(), capture_output=True, text=True,
        check=True,
    )
    return time.perf_counter() - t0, proc.stdout.splitlines() + proc.stderr.splitlines()


def _instructions(directory: Path, script: str) -> int:
    """Instructions ``python script`` executes (valgrind's callgrind: the same under any load)."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *PYTHON, script],
        cwd=directory, env=_env(), capture_output=True, text=True, check=True,
    )
    return int(next(line for line in proc.stderr.splitlines() if "Collected :" in line).split()[-1])


def _count(directory: Path) -> None:
    (directory / "later.py").write_text(LATER)
    (directory / "later_third.py").write_text(LATER_THIRD)
    for script in ("later.py", "later_third.py"):
        _run(directory, script)  # computes
    counts = {script: _instructions(directory, script) for script in ("plain.py", "hit.py", "later.py", "later_third.py")}
    mega = {script: count / 1e6 for script, count in counts.items()}
    print("instructions executed (valgrind callgrind), millions:")
    print(f"  python plain.py            {mega['plain.py']:8.1f}")
    print(f"  python hit.py              {mega['hit.py']:8.1f}")
    print(f"  first hit (hit - plain)    {mega['hit.py'] - mega['plain.py']:8.1f}")
    print(f"  a later hit (3rd block)    {mega['later_third.py'] - mega['later.py']:8.1f}")


def _field(lines: list[str], name: str) -> list[str]:
    return next((line.split()[1:] for line in lines if line.startswith(name + " ")), [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--instructions", action="store_true", help="count instructions with valgrind")
    parser.add_argument("--installed", action="store_true", help="run as after a regular install (a venv, no editable finder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statecache-first-hit-") as tmp:
        directory = Path(tmp)
        if args.installed:
            PYTHON[:] = [_installed_python(directory)]
        (directory / "plain.py").write_text(PLAIN)
        (directory / "hit.py").write_text(HIT)
        (directory / "profile_hit.py").write_text(PROFILE)
        _run(directory, "hit.py")  # computes, and writes the .pyc files of statecache
        _, lines = _run(directory, "hit.py")
        if not any("'small' restored" in line for line in lines):
            sys.exit("the second run did not hit:\n" + "\n".join(lines))
        if args.instructions:
            _count(directory)
            return
        if args.profile:
            _run(directory, "profile_hit.py")  # its own checkpoint (another file): computes
            print("\n".join(_run(directory, "profile_hit.py")[1]))
            return
        plain, hit, imp, block = [], [], [], []
        for _ in range(args.rounds):
            plain.append(_run(directory, "plain.py")[0])
            seconds, lines = _run(directory, "hit.py")
            hit.append(seconds)
            split = _field(lines, "split")
            imp.append(float(split[0]))
            block.append(float(split[1]))
        med = statistics.median
        print(f"first hit of a process, {args.rounds} interleaved rounds, medians "
              f"(load {os.getloadavg()[0]:.2f}):")
        print(f"  python plain.py            {med(plain) * 1000:7.1f} ms")
        print(f"  python hit.py              {med(hit) * 1000:7.1f} ms")
        print(f"  overhead (hit - plain)     {(med(hit) - med(plain)) * 1000:7.1f} ms"
              f"   (paired median {med(h - p for h, p in zip(hit, plain, strict=True)) * 1000:.1f} ms)")
        print(f"    import statecache        {med(imp) * 1000:7.1f} ms")
        print(f"    the with block (hit)     {med(block) * 1000:7.1f} ms")
        modules = _field(lines, "modules")
        others = _field(lines, "others")
        print(f"  statecache modules loaded: {len(modules)}: {' '.join(modules)}")
        print(f"  other modules loaded: {len(others)}: {' '.join(others)}")


if __name__ == "__main__":
    main()
