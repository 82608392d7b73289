"""Blocks whose work runs in workers that share no memory with the script (joblib's loky,
``multiprocessing`` spawn) are saved when what they send those workers is installed code on
data only (issue 11: scikit-learn's ``n_jobs=`` missed on every run), and never restore
stale state when the workers are given a path or the user's own function (``key.tasks``).

One script holds every case (``multicase``), run: computing; after the files the doubtful
workers read changed (the saved cases' inputs did not: for them it is the unchanged rerun);
then once with ``STATECACHE_DISABLE=1``. The rule itself (what a task
may hold) is also checked in this process on ``key.tasks``."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from dataclasses import dataclass

import pytest
from conftest import Project, Run
from multicase import assert_cases, case_values, fresh_values, status
from test_redteam import HEAD

pytest.importorskip("joblib")
pytest.importorskip("sklearn")

# The heavy imports are under the main guard: a spawned worker re-runs the script's top level.
SCRIPT = HEAD + """
import multiprocessing as mp

def load(path):
    with open(path) as f:
        return f.read().strip()

def load_other(path):  # not load: the files load read in this process are part of its key
    with open(path) as f:
        return f.read().strip()

def show(case, v):
    print('y', case, v)

if __name__ == '__main__':
    import pathlib
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    y = (X[:, 0] + rng.random(60) / 4 > .6).astype(int)
    Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4))  # loky's executor, started above the blocks
    with sc.checkpoint('cross-val'):  # the executor reused: no process starts in the block
        v = cross_val_score(DecisionTreeClassifier(random_state=0), X, y, cv=3, n_jobs=2)
    show('cross-val', v.round(4).tolist())
    with sc.checkpoint('grid-search'):
        search = GridSearchCV(DecisionTreeClassifier(random_state=0), {'max_depth': [1, 3]}, cv=3, n_jobs=2)
        search.fit(X, y)
    show('grid-search', [search.best_params_, round(float(search.best_score_), 4)])
    with sc.checkpoint('loky-library-sum'):  # installed code on data, in the executor started above
        v = Parallel(n_jobs=2)(delayed(np.sum)(X[i:]) for i in range(3))
    show('loky-library-sum', [round(float(s), 6) for s in v])
    with sc.checkpoint('spawn-pool-library'):  # a pool started in the block, installed code on data
        with mp.get_context('spawn').Pool(1) as pool:
            v = pool.map(abs, [-1, -2])
        del pool
    show('spawn-pool-library', v)
    with sc.checkpoint('loky-np-load'):  # installed code, given paths
        v = Parallel(n_jobs=2, backend='loky')(delayed(np.load)(p) for p in ['a.npy', 'b.npy'])
    show('loky-np-load', [a.tolist() for a in v])
    with sc.checkpoint('loky-np-load-path'):
        v = Parallel(n_jobs=2)(delayed(np.load)(pathlib.Path('b.npy')) for _ in range(2))
    show('loky-np-load-path', [a.tolist() for a in v])
    with sc.checkpoint('loky-user-function'):
        v = Parallel(n_jobs=2)(delayed(load)(p) for p in ['d.txt'])
    show('loky-user-function', v)
    with sc.checkpoint('spawn-pool-user-function'):
        with mp.get_context('spawn').Pool(1) as pool:
            v = pool.map(load, ['d.txt'])
        del pool
    show('spawn-pool-user-function', v)
    with sc.checkpoint('joblib-multiprocessing-spawn'):  # JOBLIB_START_METHOD=spawn: its own queue
        v = Parallel(n_jobs=2, backend='multiprocessing')(delayed(load)(p) for p in ['d.txt'])
    show('joblib-multiprocessing-spawn', v)
    with sc.checkpoint('threading-backend'):  # threads share the process: their reads are seen
        v = Parallel(n_jobs=2, backend='threading')(delayed(load)(p) for p in ['d.txt'])
    show('threading-backend', v)
    with sc.checkpoint('threading-backend-unchanged'):
        v = Parallel(n_jobs=2, backend='threading')(delayed(load_other)(p) for p in ['c.txt'])
    show('threading-backend-unchanged', v)
"""
SAVED = ["cross-val", "grid-search", "loky-library-sum", "spawn-pool-library"]
DOUBTFUL = ["loky-np-load", "loky-np-load-path", "loky-user-function", "spawn-pool-user-function",
            "joblib-multiprocessing-spawn"]
ENV = {"JOBLIB_START_METHOD": "spawn"}


@dataclass
class Runs:
    """The script's runs: computing, after d.txt and b.npy changed, and fresh."""

    project: Project
    first: Run
    changed: Run
    fresh: dict[str, str]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    import numpy as np

    project = Project(tmp_path_factory.mktemp("spawned"))
    project.write("script.py", SCRIPT)
    project.write("d.txt", "a")
    project.write("c.txt", "c")
    np.save(project.root / "a.npy", np.arange(2))
    np.save(project.root / "b.npy", np.arange(3))
    first = project.run("script.py", env=ENV)
    project.write("d.txt", "z")  # read only by the workers (and the threads), never by the parent
    np.save(project.root / "b.npy", np.arange(5, 8))
    changed = project.run("script.py", env=ENV)
    return Runs(project, first, changed, fresh_values(project, env=ENV))


def test_blocks_sending_installed_code_on_data_are_saved_and_hit(runs: Runs) -> None:
    assert_cases(runs.first, SAVED, hit=False)
    for case in SAVED:
        assert runs.project.entries(case), f"{case}: not saved\n{status(runs.first, case)}"
        assert not [line for line in runs.first.stderr.splitlines() if f"'{case}' at " in line], status(runs.first, case)
    assert_cases(runs.changed, SAVED, hit=True, fresh=runs.fresh)


def test_blocks_whose_workers_get_paths_or_the_users_code_never_restore_stale_state(runs: Runs) -> None:
    told = {case: [line for line in runs.first.stderr.splitlines() if f"'{case}' at " in line and "worker" in line]
            for case in DOUBTFUL}
    for case in DOUBTFUL:
        assert told[case] and "not saved" in told[case][0], f"{case}: {status(runs.first, case)}"
        assert not runs.project.entries(case), f"{case}: saved"
    assert "'a.npy'" in told["loky-np-load"][0]
    assert "the user's code (load from __main__)" in told["loky-user-function"][0]
    assert_cases(runs.changed, DOUBTFUL, hit=False, fresh=runs.fresh)
    values = case_values(runs.changed)
    assert values["loky-user-function"] == values["spawn-pool-user-function"] == "['z']"
    assert values["joblib-multiprocessing-spawn"] == "['z']"
    assert "on a channel statecache does not see" in told["joblib-multiprocessing-spawn"][0]
    assert values["loky-np-load-path"] == "[[5, 6, 7], [5, 6, 7]]"


def test_the_threading_backend_is_unchanged(runs: Runs) -> None:
    assert runs.project.entries("threading-backend") and runs.project.entries("threading-backend-unchanged")
    assert_cases(runs.changed, ["threading-backend-unchanged"], hit=True, fresh=runs.fresh)
    assert_cases(runs.changed, ["threading-backend"], hit=False, fresh=runs.fresh)  # its threads read d.txt


# -- the rule, in this process ------------------------------------------------------------------


def users_function(path: str) -> str:
    return path


def test_what_a_task_may_hold(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from statecache.key.tasks import inspect

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1")
    (tmp_path / "cfg.json").write_text("{}")
    data = np.arange(10**6)
    clean = {
        "library function on an array": (np.sum, (data,), {}),
        "words that name nothing here": (json.dumps, ("accuracy", b"raise", ["gini", "/mp"]), {"k": "N/A"}),
        "a regular expression": (json.dumps, (r"(?u)\b\w\w+\b",), {}),
        "a file that is not there yet": (np.save, ("out.npy", data), {}),
    }
    for what, task in clean.items():
        assert inspect(task) is None, what
    doubtful = {
        "a relative path": ((np.load, ("cfg.json",), {}), "'cfg.json'"),
        "a folder": ((os.listdir, ("data",), {}), "'data'"),
        "a path as bytes": ((np.load, (b"data/x.csv",), {}), "b'data/x.csv'"),
        "a Path, nested": ((np.load, ([{"f": pathlib.Path("data/x.csv")}],), {}), "x.csv"),
        "a file to be made in an existing folder": ((np.save, ("data/new.npy", data), {}), "'data/new.npy'"),
        "a glob in a folder": ((sorted, ("data/*.csv",), {}), "'data/*.csv'"),
        "a glob of file names": ((sorted, ("*.csv",), {}), "'*.csv'"),
        "an absolute path": ((np.load, (str(tmp_path / "cfg.json"),), {}), "cfg.json"),
        "the user's function": ((users_function, (1,), {}), "the user's code (users_function from test_spawned_workers)"),
        "the user's class": ((np.asarray, (Runs,), {}), "Runs from test_spawned_workers"),
    }
    for what, (task, named) in doubtful.items():
        found = inspect(task)
        assert found is not None and named in found, f"{what}: {found}"


def test_paths_inside_text_buffers_are_seen(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrays and frames pickle their strings as one out-of-band buffer, never one by one:
    file names held in them are paths all the same (red team, test_stale_hunt5)."""
    import numpy as np

    from statecache.key.tasks import inspect

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("1")
    names = ["b", "a.txt"]
    holders: dict[str, object] = {
        "numpy U": np.array(names), "numpy S": np.array([n.encode() for n in names]),
        "numpy structured": np.array([(n, 1) for n in names], dtype=[("f", "U8"), ("n", "i4")]),
        "bytearray": bytearray(b"a.txt"),
    }
    if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
        holders["numpy StringDType"] = np.array(names, dtype=np.dtypes.StringDType())
    if importlib.util.find_spec("pyarrow") is not None:
        import pandas as pd
        import pyarrow as pa

        holders["pandas pyarrow strings"] = pd.Series(names, dtype="string[pyarrow]")
        holders["a frame of them"] = pd.DataFrame({"f": pd.array(names, dtype="string[pyarrow]"), "n": [1, 2]})
        holders["pyarrow list of strings"] = pa.array([names])
        holders["pyarrow dictionary"] = pa.array(names).dictionary_encode()
        holders["pyarrow table"] = pa.table({"f": names})
    if importlib.util.find_spec("polars") is not None:
        import polars as pl

        holders["polars Series"] = pl.Series(names)
        holders["polars DataFrame"] = pl.DataFrame({"n": [1, 2], "f": names})
        lazy = inspect((sorted, (pl.LazyFrame({"n": [1]}),), {}))
        assert lazy is not None and "LazyFrame" in lazy
    for what, holder in holders.items():
        found = inspect((np.loadtxt, (holder,), {}))
        assert found is not None and "a.txt" in found, f"{what}: {found}"
    for what, holder in {"numpy U": np.array(["b", "c"]), "numpy floats": np.arange(3.0)}.items():
        assert inspect((np.sum, (holder,), {})) is None, what


def test_a_home_relative_path_is_a_path(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache.key.tasks import names_path

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d.txt").write_text("1")
    assert names_path("~/d.txt") and names_path(f"file://{tmp_path}/d.txt")
    assert names_path("~/other.txt")  # a file to be made in an existing folder
    assert not names_path("~/none/other.txt") and not names_path("") and not names_path("a\0b")


def test_only_a_pools_own_worker_loop_on_its_own_queue_is_seen() -> None:
    """``multiprocessing.pool.worker`` given the pool's SimpleQueue gets all its tasks through
    ``ForkingPickler``; given joblib's MemmappingPool queue (its own pickler), or any other
    target, its work is not all seen."""
    import multiprocessing.pool
    from concurrent.futures import process as futures_process

    from joblib.pool import CustomizablePicklingQueue

    from statecache.key.workers import runs_worker_loop

    spawn = multiprocessing.get_context("spawn")
    simple, pickling = spawn.SimpleQueue(), CustomizablePicklingQueue(spawn)
    safe = futures_process._SafeQueue(max_size=1, ctx=spawn, pending_work_items={}, shutdown_lock=None,
                                      thread_wakeup=None)
    assert runs_worker_loop(spawn.Process(target=multiprocessing.pool.worker, args=(simple, simple)))
    assert runs_worker_loop(spawn.Process(target=futures_process._process_worker, args=(safe, simple)))
    assert not runs_worker_loop(spawn.Process(target=multiprocessing.pool.worker, args=(pickling, simple)))
    assert not runs_worker_loop(spawn.Process(target=users_function, args=(simple,)))
    assert not runs_worker_loop(spawn.Process(target=multiprocessing.pool.worker))
