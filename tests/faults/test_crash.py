"""Crash during save. A writer is killed with SIGKILL at random moments (while computing, while
writing the temporary file, around the rename), and, in-process, each write, fsync, chmod,
open and rename step of a save is made to fail in turn. After each: no partial entry is ever at
an entry's path (every entry there verifies), the next run returns the right values, and
``statecache gc`` removes whatever temporary file the dead writer left.

Default run: 5 kill trials; ``STATECACHE_KILL_TRIALS=10`` (the former default) or any count for
more. ``pytest -m extended tests/faults/test_crash.py -s``: 100. ``STATECACHE_FAULT_SEED``
changes the random moments (the seed is printed, and named on failure).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import signal
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Project

from statecache.entry.reader import verify_entry

from ._util import (
    STATE_SCRIPT,
    ForkServer,
    cli,
    expected_digest,
    state_digest,
    temp_files,
    warnings_in,
)

SEED = int(os.environ.get("STATECACHE_FAULT_SEED", "20261128"))
TRIALS = int(os.environ.get("STATECACHE_KILL_TRIALS", "5"))
# big enough that a save takes a while (about 20 MB: raw arrays, zstd chunks, a long stream)
BIG = {"N_RAW": "1000000", "N_INT": "1000000", "N_OBJ": "20000"}
# the kill trials also run the size cap's bookkeeping after each save (its usage index)
KILL_ENV = {**BIG, "STATECACHE_MAX_SIZE": "10G"}


def _leftovers(cache: Path) -> list[Path]:
    """Temporary files of writers: entries' and the usage index's."""
    return temp_files(cache) + sorted(cache.glob(".statecache-usage.json.*.part"))


def _entries_all_verify(cache: Path) -> int:
    """Every file at an entry path is a complete entry; returns how many there are."""
    entries = sorted(cache.glob("*/*.sc"))
    for entry in entries:
        verify_entry(entry)  # raises EntryError on any damage
    return len(entries)


def _wait_for_computing(err: Path) -> None:
    while "computing" not in (err.read_text() if err.exists() else ""):
        time.sleep(0.0005)


def _calibrate(server: ForkServer, project: Project) -> tuple[float, float]:
    """(seconds from the 'computing' line to the end of the process, seconds of the save)."""
    pid, out, err = server.start("state.py", KILL_ENV)
    _wait_for_computing(err)
    start = time.perf_counter()
    run = server.wait(out, err)
    total = time.perf_counter() - start
    assert run.returncode == 0 and "saved" in run.stderr, run.stderr
    shutil.rmtree(project.cache / "state")
    save = float(run.stderr.split("saved", 1)[1].split(") in ", 1)[1].split()[0])
    return total, save


def _kill_trial(server: ForkServer, project: Project, expected: str, rng: random.Random,
                total: float, save: float) -> str:
    pid, out, err = server.start("state.py", KILL_ENV)
    _wait_for_computing(err)
    if rng.random() < 0.4:  # any moment from the start of the computation to the end
        time.sleep(rng.uniform(0, total * 1.1))
    else:  # aimed at the write: once the temporary file exists (pickling comes before it)
        while not temp_files(project.cache) and not out.read_text():
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, save / 3))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    killed = server.wait(out, err).returncode == -signal.SIGKILL
    leftovers = _leftovers(project.cache)
    complete = _entries_all_verify(project.cache)
    outcome = (
        "finished before the kill" if not killed
        else "killed after the rename" if complete
        else "killed while writing" if leftovers
        else "killed before writing"
    )
    run = server.run("state.py", KILL_ENV)
    assert state_digest(run) == expected, run.stderr
    assert warnings_in(run.stderr) == [], run.stderr
    assert run.hit("state") == bool(complete), run.stderr
    if leftovers:
        gc = cli("gc", "--dir", str(project.cache))
        assert gc.returncode == 0, gc.stderr
    assert _leftovers(project.cache) == []
    assert _entries_all_verify(project.cache) == 1
    shutil.rmtree(project.cache / "state")
    return outcome


def _kill_trials(project: Project, trials: int) -> collections.Counter:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project, BIG)
    rng = random.Random(SEED)
    outcomes: collections.Counter = collections.Counter()
    with ForkServer(project.root) as server:
        total, save = _calibrate(server, project)
        for trial in range(trials):
            try:
                outcomes[_kill_trial(server, project, expected, rng, total, save)] += 1
            except AssertionError as e:
                raise AssertionError(f"kill trial {trial} of seed {SEED} (STATECACHE_FAULT_SEED): {e}") from e
    print(f"\nkill -9 trials: {trials} (seed {SEED}), {dict(outcomes)}; partial entries loaded: 0, wrong values: 0, temp files left after gc: 0")
    return outcomes


def test_kill_during_save_trials(project: Project) -> None:
    outcomes = _kill_trials(project, TRIALS)
    assert sum(outcomes.values()) == TRIALS


@pytest.mark.extended
def test_kill_during_save_trials_extended(project: Project) -> None:
    outcomes = _kill_trials(project, 100)
    assert outcomes["killed while writing"] >= 10  # the trials really hit the save


# ---------------------------------------------------------------- in-process failure injection

# Run before the script (a prelude of the fork server): wraps the os functions a save goes
# through. Only calls made by statecache's entry writer count. FAULT=count logs the steps to
# FAULT_LOG; FAULT=<n> makes the n-th step raise OSError; FAULT=short makes every os.write write
# at most half of what it is given.
INJECT = r'''
import errno, os, stat, sys

_mode = os.environ.get("FAULT", "")
_steps = []
_ERRNO = {"open": errno.EDQUOT, "write": errno.ENOSPC, "writev": errno.ENOSPC, "fchmod": errno.EPERM,
          "fsync": errno.EIO, "replace": errno.EACCES}

def _from_writer():
    f = sys._getframe(2)
    return f.f_code.co_filename.endswith(os.path.join("statecache", "entry", "writer.py"))

def _step(kind):
    _steps.append(kind)
    if _mode == "count":
        with open(os.environ["FAULT_LOG"], "a") as log:
            log.write(kind + "\n")
    if _mode.isdigit() and int(_mode) == len(_steps):
        code = _ERRNO[kind.split(":")[0]]
        raise OSError(code, os.strerror(code) + " (injected)")
    if _mode == f"interrupt:{len(_steps)}":  # Ctrl-C at this step
        raise KeyboardInterrupt

def _wrap(name, describe):
    real = getattr(os, name)
    def wrapper(*args, **kwargs):
        if _from_writer():
            kind = describe(*args)
            if kind:
                _step(kind)
                if name == "write" and _mode == "short":
                    view = memoryview(args[1]).cast("B")
                    return real(args[0], view[: max(1, len(view) // 2)])
                if name == "writev" and _mode == "short":  # half of the first piece only
                    view = memoryview(args[1][0]).cast("B")
                    return real(args[0], [view[: max(1, len(view) // 2)]])
        return real(*args, **kwargs)
    setattr(os, name, wrapper)

def _fsync_kind(fd):
    return "fsync:dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync:file"

_wrap("open", lambda path, flags, *a: "open" if flags & os.O_CREAT else None)
_wrap("write", lambda fd, data: "write")
_wrap("writev", lambda fd, buffers: "writev")
_wrap("fchmod", lambda fd, mode: "fchmod")
_wrap("fsync", _fsync_kind)
_wrap("replace", lambda src, dst: "replace")
'''


def _prelude(project: Project) -> Path:
    return project.write("inject.py", INJECT)


def test_each_write_fsync_and_rename_step_failing_in_turn(project: Project) -> None:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project)
    log = project.root / "steps.log"
    with ForkServer(project.root) as server:
        counted = server.run("state.py", {"FAULT": "count", "FAULT_LOG": str(log)}, _prelude(project))
        assert state_digest(counted) == expected, counted.stderr
        steps = log.read_text().split()
        # a save: create the temp file, chmod, write and writev (several), fsync it, rename (the
        # directory is not fsynced: a crash after the rename can lose the newest entry, a
        # miss, never leave a partial one in place)
        assert steps[0] == "open" and steps[-2:] == ["fsync:file", "replace"], steps
        assert {"fchmod", "write", "writev"} <= set(steps), steps
        shutil.rmtree(project.cache / "state")
        for n, kind in enumerate(steps, start=1):
            run = server.run("state.py", {"FAULT": str(n)}, _prelude(project))
            context = f"step {n} ({kind}) failing\n--- stderr\n{run.stderr}"
            assert run.returncode == 0 and state_digest(run) == expected, context
            assert temp_files(project.cache) == [], context
            [warning] = warnings_in(run.stderr)  # every step comes before the entry is in place
            assert "'state'" in warning and "was not saved" in warning, context
            assert "(injected)" in warning and "STATECACHE_DIR" in warning, context
            assert project.entries("state") == [], context
            again = server.run("state.py")
            assert state_digest(again) == expected and warnings_in(again.stderr) == [], again.stderr
            assert not again.hit("state")
            shutil.rmtree(project.cache / "state")


def test_short_writes_still_give_a_complete_entry(project: Project) -> None:
    """os.write may write less than it was given (signals, pipes, some file systems)."""
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project)
    with ForkServer(project.root) as server:
        run = server.run("state.py", {"FAULT": "short"}, _prelude(project))
        assert state_digest(run) == expected and "saved" in run.stderr
        assert _entries_all_verify(project.cache) == 1
        again = server.run("state.py")
        assert again.hit("state") and state_digest(again) == expected


def test_ctrl_c_at_each_step_of_a_save_leaves_no_partial_entry(project: Project) -> None:
    """Ctrl-C during a save stops the program (as the user asked) and leaves nothing behind."""
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project)
    log = project.root / "steps.log"
    with ForkServer(project.root) as server:
        server.run("state.py", {"FAULT": "count", "FAULT_LOG": str(log)}, _prelude(project))
        steps = log.read_text().split()
        shutil.rmtree(project.cache / "state")
        for n, kind in enumerate(steps, start=1):
            run = server.run("state.py", {"FAULT": f"interrupt:{n}"}, _prelude(project))
            assert "KeyboardInterrupt" in run.stderr, run.stderr
            assert temp_files(project.cache) == []
            if kind == "fsync:dir":  # the entry was already in place: complete
                assert _entries_all_verify(project.cache) == 1
            else:
                assert run.returncode != 0 and project.entries("state") == [], (kind, run.stderr)
            again = server.run("state.py")
            assert state_digest(again) == expected and warnings_in(again.stderr) == [], again.stderr
            shutil.rmtree(project.cache / "state")
