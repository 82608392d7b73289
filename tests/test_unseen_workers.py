"""Workers that share nothing with the block's process (issue 11, item 3: files read but not
seen): joblib's default loky backend, whose ``_posixsubprocess.fork_exec`` raises no audit
event, ``multiprocessing`` spawn and forkserver pools and executors, and such a pool started
before the block and given work in it (joblib reuses its executor across ``Parallel`` calls).
Their reads cannot be seen, so such a block is computed and not saved, with a warning naming
the fix, unless its ``files=`` name what they read; an idle pool alive during a block that
gives it nothing to do does not stop its save.

One script holds every case (``multicase``); the rule itself is also checked on
``key.workers`` directly, by one short script."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import Project, Run
from multicase import assert_cases, case_values, fresh_values, status
from test_redteam import HEAD

pytest.importorskip("joblib")

SCRIPT = HEAD + """
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from joblib import Parallel, delayed

def load(path):
    with open(path) as f:
        return f.read().strip()

def load_declared(path):  # not load: what load read in this process is part of its key
    with open(path) as f:
        return f.read().strip()

def show(case, v):
    print('y', case, v)

if __name__ == '__main__':
    spawn = mp.get_context('spawn')
    early = spawn.Pool(1)  # started above the blocks; its start-up is over once map returns
    early.map(len, ['warm'])
    with sc.checkpoint('idle-pool'):  # the pool is alive, the block gives it nothing to do
        v = load('d1.txt')
    show('idle-pool', v)
    with sc.checkpoint('loky'):  # starts joblib's executor: fork_exec, no audit event
        v = Parallel(n_jobs=2)(delayed(load)(p) for p in ['d1.txt', 'd2.txt'])
    show('loky', v)
    with sc.checkpoint('loky-reused'):  # the executor 'loky' started: no process starts here
        v = Parallel(n_jobs=2)(delayed(load)(p) for p in ['d2.txt'])
    show('loky-reused', v)
    with sc.checkpoint('early-pool', ignore=['early']):
        v = early.map(load, ['d2.txt'])
    show('early-pool', v)
    with sc.checkpoint('executor-spawn'):
        with ProcessPoolExecutor(1, mp_context=spawn) as ex:
            v = list(ex.map(load, ['d2.txt']))
        del ex
    show('executor-spawn', v)
    with sc.checkpoint('executor-forkserver'):
        with ProcessPoolExecutor(1, mp_context=mp.get_context('forkserver')) as ex:
            v = list(ex.map(load, ['d2.txt']))
        del ex
    show('executor-forkserver', v)
    with sc.checkpoint('pool-spawn'):
        with spawn.Pool(1) as pool:
            v = pool.map(load, ['d2.txt'])
        del pool
    show('pool-spawn', v)
    with sc.checkpoint('loky-declared', files=['d1.txt', 'd2.txt']):  # names what they read
        v = Parallel(n_jobs=2)(delayed(load_declared)(p) for p in ['d1.txt', 'd2.txt'])
    show('loky-declared', v)
    early.close()
    early.join()
"""
UNSEEN = ["loky", "loky-reused", "early-pool", "executor-spawn", "executor-forkserver", "pool-spawn"]


@dataclass
class Runs:
    """The script's runs: computing, unchanged, then after d2.txt changed (and a fresh run)."""

    project: Project
    first: Run
    again: Run
    fresh: dict[str, str]
    changed: Run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    project = Project(tmp_path_factory.mktemp("unseen"))
    project.write("script.py", SCRIPT)
    project.write("d1.txt", "a")
    project.write("d2.txt", "b")
    first, again = project.run("script.py"), project.run("script.py")
    project.write("d2.txt", "z")  # read only by the workers, never by the parent
    fresh = fresh_values(project)
    return Runs(project, first, again, fresh, project.run("script.py"))


def test_blocks_whose_workers_share_nothing_are_not_saved(runs: Runs) -> None:
    assert_cases(runs.first, [*UNSEEN, "idle-pool"], hit=False)
    for case in UNSEEN:
        told = [line for line in runs.first.stderr.splitlines() if f"'{case}' at " in line and "worker process" in line]
        assert told and "not saved" in told[0] and "files=[...]" in told[0], f"{case}: {status(runs.first, case)}"
        assert not runs.project.entries(case), f"{case}: saved\n{runs.first.stderr}"
    assert_cases(runs.again, UNSEEN, hit=False)
    assert_cases(runs.changed, UNSEEN, hit=False, fresh=runs.fresh)
    assert case_values(runs.changed)["loky-reused"] == "['z']"


def test_an_idle_pool_alive_during_a_block_does_not_stop_its_save(runs: Runs) -> None:
    assert_cases(runs.again, ["idle-pool"], hit=True)
    assert_cases(runs.changed, ["idle-pool"], hit=True, fresh=runs.fresh)  # it reads d1.txt only


def test_a_block_whose_files_name_what_its_workers_read_is_saved(runs: Runs) -> None:
    assert "'loky-declared'" in runs.first.stderr and "saved, keyed on its files" in runs.first.stderr
    assert_cases(runs.again, ["loky-declared"], hit=True)
    assert_cases(runs.changed, ["loky-declared"], hit=False, fresh=runs.fresh)


RULE_SCRIPT = """
import multiprocessing as mp
import warnings
from statecache.key import workers

def size(text):  # the user's own code: a spawned worker running it may read anything
    return len(text)

def unseen_after(work=None):
    workers.enter()
    if work is not None:
        work()
    workers.leave()
    return workers.unseen()[1]

if __name__ == '__main__':
    with mp.get_context('spawn').Pool(1) as spawned, mp.get_context('fork').Pool(1) as forked:
        spawned.map(len, ['warm'])
        forked.map(len, ['warm'])
        print('idle', unseen_after())
        print('forked', unseen_after(lambda: forked.map(len, ['x'])))
        print('spawned', unseen_after(lambda: spawned.map(size, ['x'])))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            print('may_save', workers.may_save('w-unit', 'here:1'))
            print('declared', workers.may_save('w-unit-declared', 'here:2', declared=True))
        for w in caught:
            print('warned', w.message)
"""


def test_a_pool_started_before_the_block_counts_only_when_given_work(project: Project) -> None:
    """The rule on ``key.workers`` itself, in a process of its own (a spawn pool leaves
    ``multiprocessing``'s resource tracker running in the process that made it)."""
    project.write("rule.py", RULE_SCRIPT)
    out = project.run("rule.py").stdout
    said = dict(line.split(" ", 1) for line in out.splitlines() if not line.startswith("warned"))
    assert said == {"idle": "0", "forked": "0", "spawned": "1", "may_save": "False", "declared": "True"}, out
    assert "'w-unit' at here:1 used 1 worker" in out and "not saved" in out
    assert "files=[...]" in out and "'w-unit-declared' at here:2" in out and "it is saved" in out
