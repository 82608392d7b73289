"""The first hit of a process on a small state, as a user meets it: a fresh ``python script.py``
whose one checkpoint hits, against the same script without statecache (DESIGN.md: < 10 ms on
top). Rounds are interleaved (plain, hit, plain, hit, ...) so that a change in the machine's
load falls on both; medians are reported, with the script's own split into ``import
statecache`` and the ``with`` block, and the statecache modules the hit loaded.

    python benchmarks/bench_first_hit.py              # 30 rounds
    python benchmarks/bench_first_hit.py --rounds 60
    python benchmarks/bench_first_hit.py --profile    # cProfile of the block of one hit
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's imports read .pyc files
    return env


def _run(directory: Path, script: str) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, script], cwd=directory, env=_env(), capture_output=True, text=True,
        check=True,
    )
    return time.perf_counter() - t0, proc.stdout.splitlines() + proc.stderr.splitlines()


def _field(lines: list[str], name: str) -> list[str]:
    return next((line.split()[1:] for line in lines if line.startswith(name + " ")), [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statecache-first-hit-") as tmp:
        directory = Path(tmp)
        (directory / "plain.py").write_text(PLAIN)
        (directory / "hit.py").write_text(HIT)
        (directory / "profile_hit.py").write_text(PROFILE)
        _run(directory, "hit.py")  # computes, and writes the .pyc files of statecache
        _, lines = _run(directory, "hit.py")
        if not any("'small' restored" in line for line in lines):
            sys.exit("the second run did not hit:\n" + "\n".join(lines))
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
