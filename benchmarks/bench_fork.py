"""Benchmarks of the fork features, each with its peers measured in the same run.

1. ``branch()``: time from entering the ``with`` to the first line of the body running in the
   child, with ~1 GB of state resident; beside it a bare ``os.fork()`` and a deep copy of the
   state (what an experiment on a private copy costs without fork).
2. ``statecache live``: time from saving an edit of the script's last line to the first output
   of the re-run, for a script whose setup takes ``--setup`` seconds (default 10); beside it
   the same script run from scratch (no cache) and run again with a statecache disk hit.

    python benchmarks/bench_fork.py            # both
    python benchmarks/bench_fork.py --only branch --gb 1
    python benchmarks/bench_fork.py --only live --setup 10 --edits 10
    python benchmarks/bench_fork.py --quick    # a smoke run (CI)
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def bench_branch(gb: float, repeats: int) -> None:
    import numpy as np

    import statecache as sc

    n = int(gb * (1 << 30) / 8)
    state = np.ones(n)  # touched: resident, not just reserved
    rss = _rss()
    print(
        f"branch(): {state.nbytes / (1 << 30):.2f} GB array, process RSS {rss / (1 << 30):.2f} GB"
    )

    enter = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with sc.branch() as run:
            run.keep(t=time.perf_counter())
        enter.append(run.kept["t"] - t0)

    raw = []
    for _ in range(repeats):
        r, w = os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(w, repr(time.perf_counter()).encode())
            os._exit(0)
        os.close(w)
        t1 = float(os.read(r, 64))
        os.close(r)
        os.waitpid(pid, 0)
        raw.append(t1 - t0)

    t0 = time.perf_counter()
    dup = copy.deepcopy(state)
    deep = time.perf_counter() - t0
    del dup

    med = statistics.median(enter)
    print(
        f"  branch() enter -> child running: median {_ms(med)}, min {_ms(min(enter))} ({repeats} runs)"
    )
    print(f"  bare os.fork() -> child running: median {_ms(statistics.median(raw))}")
    print(f"  copy.deepcopy of the state:      {_ms(deep)}  ({deep / med:.0f}x branch())")
    print(f"  target < 10 ms: {'met' if med < 0.010 else 'NOT met'}")


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover
        return 0


LIVE_SCRIPT = """\
import time
import numpy as np
import statecache

with statecache.checkpoint("setup"):
    time.sleep({setup})               # stands for loading data, building an index...
    data = np.arange(1_000_000, dtype=np.float64)
print("RESULT", {tag!r}, float(data.sum()), flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("STATECACHE_DIR", None)
    env.pop("STATECACHE_DISABLE", None)
    return env


def _time_to_output(cmd: list[str], cwd: Path, env: dict[str, str], marker: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            took = time.monotonic() - t0
            break
    else:
        raise RuntimeError(f"{cmd} never printed {marker!r}")
    proc.wait()
    return took


def bench_live(setup: float, edits: int) -> None:
    import pexpect

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        script = work / "script.py"
        script.write_text(LIVE_SCRIPT.format(setup=setup, tag="t0"))
        env = _env()
        cmd = [sys.executable, "script.py"]
        scratch = _time_to_output(cmd, work, env | {"STATECACHE_DISABLE": "1"}, "RESULT")
        _time_to_output(cmd, work, env, "RESULT")  # computes and saves the checkpoint
        hit = _time_to_output(cmd, work, env, "RESULT")  # a disk hit

        child = pexpect.spawn(
            sys.executable,
            ["-m", "statecache", "live", "script.py"],
            cwd=str(work),
            env=env,
            encoding="utf-8",
            timeout=setup * 3 + 60,
        )
        try:
            child.expect("RESULT t0 ")
            child.expect(r"Ctrl-C: stop/quit\)")
            times, headers = [], []
            for i in range(1, edits + 1):
                time.sleep(0.3)
                text = LIVE_SCRIPT.format(setup=setup, tag=f"t{i}")
                with open(script, "w") as fh:
                    fh.write(text)
                saved = time.monotonic()
                child.expect(r"run \d+ from ([^\r\n]*)\r\n")
                headers.append(child.match.group(1))
                child.expect(f"RESULT t{i} ")
                times.append(time.monotonic() - saved)
                child.expect(r"Ctrl-C: stop/quit\)")
            child.sendline("q")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)

    med = statistics.median(times)
    print(f"statecache live: script with a {setup:g} s setup, {edits} edits of its last line")
    print(f"  live, save -> first output of the re-run: median {_ms(med)}, max {_ms(max(times))}")
    print(
        f"  from scratch (STATECACHE_DISABLE=1):      {scratch:.2f} s  ({scratch / med:.0f}x live)"
    )
    print(f"  statecache disk hit (python script.py):   {hit:.2f} s  ({hit / med:.1f}x live)")
    print(f"  last header: run ... from {headers[-1]}")
    print(f"  target < 0.3 s: {'met' if med < 0.3 else 'NOT met'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["branch", "live"])
    p.add_argument("--gb", type=float, default=1.0, help="state size for branch() (GB)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--setup", type=float, default=10.0, help="setup time of the live script (s)")
    p.add_argument("--edits", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    args = p.parse_args()
    if args.quick:
        args.gb, args.repeats, args.setup, args.edits = 0.1, 5, 1.0, 3
    if args.only in (None, "branch"):
        bench_branch(args.gb, args.repeats)
    if args.only in (None, "live"):
        bench_live(args.setup, args.edits)


if __name__ == "__main__":
    main()
