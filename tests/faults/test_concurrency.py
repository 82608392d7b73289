"""Concurrency: eight processes on a cold key compute it once and all get the state; readers
that restore while a writer keeps replacing the entry see one whole version, never a mix of
two; a writer killed while it holds the per-key lock does not block the others.

``pytest -m extended tests/faults/test_concurrency.py -s`` repeats the cold-key race 20 times
and reads during writes longer."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import Project, subprocess_env

from ._util import warnings_in

COLD = """
import os
import time

import numpy as np

import statecache as sc

while not os.path.exists("go"):
    time.sleep(0.002)
with sc.checkpoint("shared"):
    with open("runs.log", "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(0.3)
    arr = np.arange(1_000_000) * 3
    words = {str(i): i for i in range(1000)}
print("RESULT", int(arr.sum()), len(words), sum(words.values()))
"""
COLD_RESULT = f"RESULT {3 * sum(range(1_000_000))} 1000 {sum(range(1000))}"


def _popen(project: Project, script: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, script], cwd=project.root, env=subprocess_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _cold_key_race(project: Project, processes: int = 8) -> None:
    (project.root / "go").unlink(missing_ok=True)
    (project.root / "runs.log").unlink(missing_ok=True)
    procs = [_popen(project, "cold.py") for _ in range(processes)]
    (project.root / "go").touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and COLD_RESULT in out, err
        assert warnings_in(err) == [], err
    assert len((project.root / "runs.log").read_text().split()) == 1  # the body ran once
    statuses = [err for _, err in outputs]
    assert sum("'shared' computing" in e for e in statuses) == 1
    assert sum("'shared' restored" in e for e in statuses) == processes - 1
    assert len(project.entries("shared")) == 1


def test_eight_processes_on_a_cold_key_compute_once(project: Project) -> None:
    project.write("cold.py", COLD)
    _cold_key_race(project)


@pytest.mark.extended
def test_eight_processes_on_a_cold_key_compute_once_20_rounds(project: Project) -> None:
    project.write("cold.py", COLD)
    for _ in range(20):
        _cold_key_race(project)
        shutil.rmtree(project.cache / "shared")
    print("\ncold-key races: 20 x 8 processes; body ran once in each: 20/20; all 160 got the state")


# Writer (MODE=write, with STATECACHE_REFRESH) keeps recomputing and replacing one entry with a
# new generation g; every variable is derived from g, so a restored state mixing two versions is
# caught: raw random floats (raw buffer section), a compressible array (zstd), a list (stream).
READ_WRITE = """
import os

import numpy as np

import statecache as sc

N = 300_000


def one():
    with sc.checkpoint("gen"):
        g = int.from_bytes(os.urandom(4), "little")
        floats = np.random.default_rng(g).random(N)
        filled = np.full(N, g, dtype=np.int64)
        listed = [g] * 1000
    return g, floats, filled, listed


def consistent(g, floats, filled, listed):
    return (
        np.array_equal(floats, np.random.default_rng(g).random(N))
        and bool((filled == g).all())
        and listed == [g] * 1000
    )


if os.environ["MODE"] == "write":
    writes = 0
    while not os.path.exists("stop") or writes < 3:
        assert consistent(*one())
        writes += 1
    print("WRITES", writes)
else:
    seen, reads, mixed = set(), 0, 0
    while len(seen) < int(os.environ["GENERATIONS"]) or reads < 50:
        g, *rest = one()
        reads += 1
        seen.add(g)
        mixed += not consistent(g, *rest)
    print("READS", reads, "GENERATIONS", len(seen), "MIXED", mixed)
"""


def _reads_during_writes(project: Project, generations: int) -> None:
    project.write("rw.py", READ_WRITE)
    first = project.run("rw.py", env={"MODE": "read", "GENERATIONS": "1"})  # the first entry
    assert "MIXED 0" in first.stdout
    writer = _popen(project, "rw.py", MODE="write", STATECACHE_REFRESH="gen", STATECACHE_QUIET="1")
    readers = [
        _popen(project, "rw.py", MODE="read", GENERATIONS=str(generations)),
        _popen(project, "rw.py", MODE="read", GENERATIONS=str(generations), STATECACHE_MMAP="1"),
    ]
    try:
        results = [r.communicate(timeout=600) for r in readers]
    finally:
        (project.root / "stop").touch()
        w_out, w_err = writer.communicate(timeout=600)
    assert writer.returncode == 0 and "WRITES" in w_out, w_err
    assert warnings_in(w_err) == [], w_err
    for reader, (out, err) in zip(readers, results, strict=True):
        assert reader.returncode == 0, err
        assert "MIXED 0" in out, out
        assert int(out.split()[3]) >= generations, out
        assert "computing" not in err and warnings_in(err) == [], err  # always a whole entry
    reads = [out.split() for out, _ in results]
    print(f"\nreads during writes: {w_out.split()[1]} writes; readers (plain, mmap): "
          + ", ".join(f"{r[1]} reads of {r[3]} versions" for r in reads) + "; mixed states: 0")


def test_readers_during_writes_see_one_whole_version(project: Project) -> None:
    _reads_during_writes(project, generations=5)


@pytest.mark.extended
def test_readers_during_writes_see_one_whole_version_long(project: Project) -> None:
    _reads_during_writes(project, generations=100)


# The first process to enter the body (it creates "claim") plays the lock holder. Which one
# it is must not show in the key: an environment variable read by the body would be an input,
# and the two processes would want two different entries.
HOLDER = """
import os
import time

import statecache as sc

with sc.checkpoint("locked"):
    try:
        os.close(os.open("claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        first = True
    except FileExistsError:
        first = False
    open("started", "w").close()
    if first:
        time.sleep(3600)
    value = 42
print("VALUE", value)
"""


def test_writer_killed_while_holding_the_lock_does_not_block_others(project: Project) -> None:
    project.write("holder.py", HOLDER)
    holder = _popen(project, "holder.py")
    try:
        while not (project.root / "started").exists():
            assert holder.poll() is None, holder.communicate()
            time.sleep(0.01)
        waiter = _popen(project, "holder.py")
        assert waiter.stderr is not None
        for line in waiter.stderr:  # blocks until the waiter reports that it waits for the lock
            if "being computed by another process" in line:
                break
        else:
            raise AssertionError("the second process never waited for the lock")
        holder.send_signal(signal.SIGKILL)
        out, err = waiter.communicate(timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert waiter.returncode == 0 and "VALUE 42" in out, err
    assert "'locked' computing" in err and "'locked' saved" in err
    after = project.run("holder.py")
    assert after.hit("locked") and "VALUE 42" in after.stdout


def test_waiter_computes_when_the_lock_holder_fails(project: Project) -> None:
    """The process holding the lock raises in the body: it saves nothing and its waiter computes
    (instead of waiting forever or loading nothing)."""
    project.write("holder.py", HOLDER.replace(
        '    if first:\n        time.sleep(3600)\n',
        '    if first:\n'
        '        while not os.path.exists("release"):\n'
        '            time.sleep(0.01)\n'
        '        raise RuntimeError("bad input")\n'))
    holder = _popen(project, "holder.py")
    while not (project.root / "started").exists():
        assert holder.poll() is None, holder.communicate()
        time.sleep(0.01)
    waiter = _popen(project, "holder.py")
    assert waiter.stderr is not None
    for line in waiter.stderr:
        if "being computed by another process" in line:
            break
    else:
        raise AssertionError("the second process never waited for the lock")
    (project.root / "release").touch()
    h_out, h_err = holder.communicate(timeout=300)
    out, err = waiter.communicate(timeout=300)
    assert holder.returncode == 1 and "RuntimeError: bad input" in h_err
    assert waiter.returncode == 0 and "VALUE 42" in out and "'locked' saved" in err, err
