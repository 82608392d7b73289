"""Red team, fourth pass: stale hits in what the last session built or moved (the read log of
memo helpers, the stat stamp, the records a read leaves) and in readers and process state
that research scripts use. Each hole is a strict xfail naming the code that does not see it,
so that the fix turns it into a failure asking for the mark to go; a passing case is kept
only where no other test covers it. Every case runs real scripts in subprocesses against a
cache under tmp_path: an unchanged rerun hits (so a library that never caches cannot pass),
one change a user makes follows, and the next run must print what a fresh run under
``STATECACHE_DISABLE=1`` prints, and its rerun hit again.

To keep the suite cheap, the cases of one kind share one script with one checkpoint each
(``case=value`` lines), run by a module-scoped fixture: five runs serve every case."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Project, Run
from test_files_seen import write_db
from test_redteam import HEAD, assert_recomputes, first


@dataclass
class Outcome:
    """What the runs of a many-case script said about one case (one checkpoint)."""

    hit_unchanged: bool  # the rerun before the change hit
    after: str | None  # the value printed by the run after the change
    fresh: str | None  # the value printed by a fresh run after the change
    hit_again: bool  # the rerun after that hit


def values(run: Run) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)}


def run_cases(project: Project, script: str, cases: list[str], change: Callable[[], object],
              env: dict[str, str] | None = None, env_after: dict[str, str] | None = None,
              rerun: bool = True) -> dict[str, Outcome]:
    """Compute, rerun unchanged, ``change()``, then run, run fresh and rerun (with
    ``env_after`` when given; without the rerun for a script too slow to start, whose cases
    then count it as a hit): what happened to each case's checkpoint."""
    computed = project.run(script, env=env)
    assert all(computed.computed(case) for case in cases), computed.stderr
    unchanged = project.run(script, env=env)
    change()
    env_after = env if env_after is None else env_after
    after = project.run(script, env=env_after)
    fresh_run = project.run(script, env={**(env_after or {}), "STATECACHE_DISABLE": "1"})
    again = project.run(script, env=env_after) if rerun else None
    got, want = values(after), values(fresh_run)
    return {case: Outcome(unchanged.hit(case), got.get(case), want.get(case), again is None or again.hit(case))
            for case in cases}


def assert_case(outcomes: dict[str, Outcome], case: str) -> None:
    found = outcomes[case]
    assert found.hit_unchanged, f"{case}: an unchanged rerun did not hit"
    assert found.after == found.fresh, f"{case}: restored {found.after}, a fresh run computes {found.fresh}"
    assert found.hit_again, f"{case}: the rerun after the change did not hit"


def xfail(case: str, reason: str) -> object:
    return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(scope="module")
def make_project(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Project]:
    return lambda name: Project(tmp_path_factory.mktemp(name))


# -- a memo helper: the read log keeps one stamp per file, the latest --------------------------


def test_a_memo_filled_before_an_edit_and_read_again_after_it(project: Project) -> None:
    # setting(0) is filled from cfg.txt, an editor saves cfg.txt, setting(1) reads it again
    project.write("helpers.py", "import functools\n\n@functools.lru_cache(maxsize=None)\n"
                  "def setting(i):\n    with open('cfg.txt') as f:\n        return f.read().split()[i]\n")
    project.write("cfg.txt", "1 2")
    project.write("edit.flag", "")
    project.write("script.py", HEAD + """
from helpers import setting
lr = setting(0)
if os.path.exists('edit.flag'):  # stands for an editor saving cfg.txt during the slow setup
    os.remove('edit.flag')
    with open('cfg.txt', 'w') as f:
        f.write('9 2')
epochs = setting(1)
with sc.checkpoint('a'):
    y = setting(0)
print(y)
""")
    first(project, "script.py")  # saw the edit while it ran: what it saved must never be reused
    assert_recomputes(project, "script.py")


# -- a memo helper whose reads the read log does not note -------------------------------------

MEMO_HELPERS = """
import codecs
import functools
from concurrent.futures import ThreadPoolExecutor
import numpy as np

@functools.lru_cache(maxsize=None)
def by_lambda():
    with ThreadPoolExecutor(2) as ex:
        return sum(ex.map(lambda p: int(open(p).read()), ['a1.txt', 'a2.txt']))

@functools.lru_cache(maxsize=None)
def by_library():
    with ThreadPoolExecutor(2) as ex:
        return int(sum(a.sum() for a in ex.map(np.loadtxt, ['b1.txt', 'b2.txt'])))

def read_one(p):
    return int(open(p).read())

@functools.lru_cache(maxsize=None)
def by_function():
    with ThreadPoolExecutor(2) as ex:
        return sum(ex.map(read_one, ['f1.txt', 'f2.txt']))

@functools.lru_cache(maxsize=None)
def by_codecs():
    with codecs.open('e.txt', encoding='utf-8') as f:
        return int(f.read())
"""

MEMO_SCRIPT = HEAD + """
import functools
import numpy as np
from shards import by_lambda, by_library, by_function, by_codecs
loadtxt = functools.lru_cache(maxsize=None)(np.loadtxt)
warm = by_lambda(), by_library(), by_function(), loadtxt('c.txt'), by_codecs()  # filled above the blocks
with sc.checkpoint('thread-lambda'):
    y = by_lambda()
print('thread-lambda=', y)
with sc.checkpoint('thread-library-reader'):
    y = by_library()
print('thread-library-reader=', y)
with sc.checkpoint('thread-user-function'):
    y = by_function()
print('thread-user-function=', y)
with sc.checkpoint('memo-of-a-library-reader'):
    y = float(loadtxt('c.txt').sum())
print('memo-of-a-library-reader=', y)
with sc.checkpoint('codecs.open'):
    y = by_codecs()
print('codecs.open=', y)
"""


@pytest.fixture(scope="module")
def memo_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    pytest.importorskip("numpy")
    project = make_project("memo")
    project.write("shards.py", MEMO_HELPERS)
    project.write("script.py", MEMO_SCRIPT)
    for name in ("a1", "a2", "b1", "b2", "f1", "f2", "c", "e"):
        project.write(f"{name}.txt", "1\n")

    def change() -> None:
        for name in ("a2", "b2", "f2", "c", "e"):
            project.write(f"{name}.txt", "7\n")

    return run_cases(project, "script.py", [
        "thread-lambda", "thread-library-reader", "thread-user-function", "memo-of-a-library-reader",
        "codecs.open"], change)


@pytest.mark.parametrize("case", [
    "thread-lambda",  # the read counts for the memo waiting on the worker (key/readlog.py)
    "thread-library-reader",
    "thread-user-function",  # held: read_one is a global the key reaches, with its own reads
    # closed (helper A's readlog notes a library function's reads from module-level code, and
    # key/values.py _feed_lru counts them): lru_cache(np.loadtxt) filled at module level had no
    # user function on the stack, so its read was noted nowhere
    "memo-of-a-library-reader",
    "codecs.open",  # a frozen module's open counts unless the import system makes it
])
def test_a_memo_filled_above_the_block_whose_reads_the_read_log_misses(memo_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(memo_outcomes, case)


# -- sqlite3: what the connect event does not name --------------------------------------------

SQLITE_SCRIPT = HEAD + """
import sqlite3
with sc.checkpoint('wal'):
    con = sqlite3.connect('d.db')
    y = con.execute('select sum(x) from t').fetchone()[0]
    con.close()
    del con
print('wal=', y)
with sc.checkpoint('attach'):
    con = sqlite3.connect(':memory:')
    con.execute("attach database 'o.db' as o")
    y = con.execute('select sum(x) from o.t').fetchone()[0]
    con.close()
    del con
print('attach=', y)
"""


@pytest.fixture(scope="module")
def sqlite_outcomes(make_project: Callable[[str], Project]) -> Iterator[dict[str, Outcome]]:
    project = make_project("sqlite")
    project.write("script.py", SQLITE_SCRIPT)
    write_db(project.root / "o.db", 1)
    # a collector that keeps its connection open: its commits stay in d.db-wal, d.db is untouched
    writer = sqlite3.connect(project.root / "d.db")
    writer.execute("pragma journal_mode=wal")
    writer.execute("create table t (x)")
    writer.execute("insert into t values (1)")
    writer.commit()

    def change() -> None:
        writer.execute("insert into t values (10)")
        writer.commit()
        write_db(project.root / "o.db", 5)

    try:
        yield run_cases(project, "script.py", ["wal", "attach"], change)
    finally:
        writer.close()


@pytest.mark.parametrize("case", [
    "wal",  # the -wal file is read with its database (key/databases.py)
    "attach",  # an ATTACHed file is heard through the connection's authorizer
])
def test_a_sqlite_database_read_past_the_connect_event(sqlite_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(sqlite_outcomes, case)


# -- files the block only looks at --------------------------------------------------------------

STAT_SCRIPT = HEAD + """
with sc.checkpoint('mtime'):
    y = os.path.getmtime('raw.csv') > os.path.getmtime('out.csv')  # make-like: raw newer than its output
print('mtime=', y)
with sc.checkpoint('access'):
    y = os.access('ready.flag', os.F_OK)
print('access=', y)
"""


@pytest.fixture(scope="module")
def stat_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    project = make_project("stat")
    project.write("script.py", STAT_SCRIPT)
    old = 1_600_000_000
    for name in ("raw.csv", "out.csv"):
        project.write(name, "x\n1\n")
    os.utime(project.root / "raw.csv", (old, old))
    os.utime(project.root / "out.csv", (old + 10, old + 10))

    def change() -> None:
        os.utime(project.root / "raw.csv")  # touch: newer than out.csv, same content
        project.write("ready.flag", "")

    return run_cases(project, "script.py", ["mtime", "access"], change)


@pytest.mark.parametrize("case", [
    "mtime",  # a look counts by its answer (key/looks.py)
    "access",  # os.access is wrapped
])
def test_a_file_the_block_only_looks_at(stat_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(stat_outcomes, case)


# -- process state read through the standard library: closed; tests/test_stdlib_env.py holds
# every case this section had (home, expanduser, getuser, gettempdir, expandvars, which, the
# local timezone), one variable changed at a time with the blocks that must recompute named


# -- polars, pyarrow, safetensors: reads, listings and a seed that no wrapper sees ----------

COMPILED_SCRIPT = HEAD + """
import importlib.util
import polars as pl
import pyarrow.fs as pafs, pyarrow.parquet as pq
pl.set_random_seed(int(os.environ['SEED']))
lazy = pl.scan_csv('lazy.csv')  # a plan made above the blocks, run in them
if importlib.util.find_spec('safetensors'):  # in no extra of statecache's
    from safetensors import safe_open
    with sc.checkpoint('safetensors.safe_open'):
        with safe_open('w.safetensors', framework='np') as f:
            y = f.get_tensor('w').tolist()
        del f
    print('safetensors.safe_open=', y)
with sc.checkpoint('pyarrow.fs-FileSelector'):
    infos = pafs.LocalFileSystem().get_file_info(pafs.FileSelector(os.path.abspath('parts'), recursive=True))
    y = sorted(pq.read_table(i.path)['x'][0].as_py() for i in infos if i.path.endswith('.parquet'))
    del infos
print('pyarrow.fs-FileSelector=', y)
with sc.checkpoint('pl.collect_all'):
    y = pl.collect_all([lazy])[0]['x'].to_list()
print('pl.collect_all=', y)
with sc.checkpoint('LazyFrame.collect_schema'):
    y = list(lazy.collect_schema())
print('LazyFrame.collect_schema=', y)
with sc.checkpoint('pl.set_random_seed'):
    y = pl.DataFrame({'x': list(range(100))}).sample(3)['x'].to_list()
print('pl.set_random_seed=', y)
"""


COMPILED_CASES = {
    "safetensors.safe_open": "key/readernames.py READERS / UNSEEN: safetensors.safe_open (the Rust class "
    "behind every load_file, and the documented way to read a few tensors lazily) is neither wrapped nor "
    "named as unseen, so its file is recorded nowhere and no warning says so",
    "pyarrow.fs-FileSelector": "key/readernames.py COMPILED_CLASSES: of pyarrow.fs.LocalFileSystem only "
    "open_input_file and open_input_stream note their path; get_file_info(FileSelector(...)) lists the "
    "directory from C++, so a new part file is no change of the block that listed it",
    "pl.collect_all": "key/readers.py _LAZY_METHODS: a plan made above the block tells its files when a "
    "LazyFrame method runs it (collect, sink_*); the function pl.collect_all([...]) runs the plans "
    "unwrapped, so the scanned file is recorded nowhere",
    "LazyFrame.collect_schema": "key/readers.py _LAZY_METHODS: collect_schema reads the scanned file's "
    "header to resolve the schema, and is not among the wrapped methods, so a new column hits",
    "pl.set_random_seed": "key/rng.py capture: the global generators recorded are random's, numpy's "
    "legacy one and torch's CPU one; polars' (pl.set_random_seed above the block, used by df.sample "
    "and shuffle inside polars) is neither an input nor restored, so another seed restores the "
    "first seed's sample",
}


@pytest.fixture(scope="module")
def compiled_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    import importlib.util

    pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    from test_stale_hunt import write_parquet

    project = make_project("compiled")
    project.write("script.py", COMPILED_SCRIPT)
    write_parquet(project.root / "parts" / "a.parquet", 1)
    project.write("lazy.csv", "x\n1\n")
    tensors = importlib.util.find_spec("safetensors") is not None

    def write_tensors(values: list[int]) -> None:
        if tensors:
            import numpy as np
            from safetensors.numpy import save_file

            save_file({"w": np.array(values, dtype=np.int64)}, str(project.root / "w.safetensors"))

    def change() -> None:
        write_tensors([3, 4])
        write_parquet(project.root / "parts" / "b.parquet", 2)  # a new part the listing finds
        project.write("lazy.csv", "x,z\n2,3\n")

    write_tensors([1, 2])
    cases = [case for case in COMPILED_CASES if tensors or not case.startswith("safetensors")]
    return run_cases(project, "script.py", cases, change, env={"SEED": "1"}, env_after={"SEED": "2"})


# all closed (helper A, stop 19: key/rebinding, direntries, polarsplans, arrowdatasets, rng); the
# reasons above say what missed each before
@pytest.mark.parametrize("case", list(COMPILED_CASES))
def test_a_file_read_or_listed_by_compiled_code_no_wrapper_sees(compiled_outcomes: dict[str, Outcome], case: str) -> None:
    if case not in compiled_outcomes:
        pytest.skip("safetensors is not installed")
    assert_case(compiled_outcomes, case)


# -- a copy of the project: paths count relative to the root in the key, not in the state -----


def test_a_path_the_block_derives_from_the_project_folder_in_a_copy(tmp_path: Path) -> None:
    import shutil

    one = Project(tmp_path / "exp1")
    one.write("pyproject.toml", "[project]\nname = 'exp'\n")
    one.write("script.py", HEAD + """
from pathlib import Path
HERE = Path(__file__).resolve().parent
with sc.checkpoint('a'):
    out_dir = HERE / 'runs'
print(out_dir.relative_to(HERE) if out_dir.is_relative_to(HERE) else f'outside the project: {out_dir}')
""")
    first(one, "script.py")
    assert one.run("script.py").hit("a")
    shutil.copytree(one.root, tmp_path / "exp2")
    assert_recomputes(Project(tmp_path / "exp2"), "script.py")


# -- what the block sets in the process, besides sys.path, sys.argv and os.environ ------------

SETTINGS_SCRIPT = HEAD + """
import atexit, decimal, logging, warnings
import numpy as np, pandas as pd
with sc.checkpoint('a'):  # the slow setup also sets up the process
    atexit.register(print, 'atexit.register=', 'ran')  # e.g. save the results at exit
    np.set_printoptions(precision=2)
    np.seterr(divide='raise')
    pd.set_option('display.precision', 1)
    decimal.getcontext().prec = 5
    sys.setrecursionlimit(4321)
    warnings.simplefilter('error')
    logging.basicConfig(level=logging.DEBUG)
    ready = True
print('np.set_printoptions=', np.get_printoptions()['precision'])
print('np.seterr=', np.geterr()['divide'])
print('pd.set_option=', pd.get_option('display.precision'))
print('decimal-context=', decimal.getcontext().prec)
print('sys.setrecursionlimit=', sys.getrecursionlimit())
print('warnings-filter=', warnings.filters[0][0])
print('logging.basicConfig=', logging.getLogger().level)
"""


@pytest.fixture(scope="module")
def settings_after_a_hit(make_project: Callable[[str], Project]) -> tuple[Run, dict[str, str], dict[str, str]]:
    pytest.importorskip("pandas")
    project = make_project("settings")
    project.write("script.py", SETTINGS_SCRIPT)
    first(project, "script.py")
    hit = project.run("script.py")
    return hit, values(hit), values(project.run("script.py", env={"STATECACHE_DISABLE": "1"}))


SETTINGS_MADE = ["np.set_printoptions", "np.seterr", "pd.set_option", "decimal-context",
                 "sys.setrecursionlimit", "warnings-filter", "logging.basicConfig", "atexit.register"]


@pytest.mark.parametrize("case", SETTINGS_MADE)
def test_a_setting_the_block_makes_holds_after_a_hit(settings_after_a_hit: tuple[Run, dict[str, str], dict[str, str]],
                                                      case: str) -> None:
    hit, got, want = settings_after_a_hit
    assert hit.hit("a"), hit.stderr
    assert got.get(case) == want.get(case), f"{case}: {got.get(case)} after a hit, {want.get(case)} after computing"


# -- the script saved while it runs ------------------------------------------------------------


def test_a_script_saved_with_lines_added_above_the_block_while_it_runs(project: Project) -> None:
    project.write("edit.flag", "")
    project.write("script.py", HEAD + """
if os.path.exists('edit.flag'):  # stands for an editor saving this script while it runs
    os.remove('edit.flag')
    with open(__file__) as f:
        text = f.read()
    with open(__file__, 'w') as f:
        f.write(text.replace('import os, sys\\n', 'import os, sys\\n# notes\\n# more notes\\n', 1))
with sc.checkpoint('a'):
    y = 6 * 7
print(y)
""")
    run = project.run("script.py", check=False)
    assert run.returncode == 0 and run.stdout == "42\n", run.stderr
    assert_recomputes(project, "script.py")


# -- needless misses that make the cache useless ----------------------------------------------


def test_a_helper_calling_a_cached_setup_function_keeps_its_hit(project: Project) -> None:
    project.write("script.py", HEAD + """
@sc.cached_setup
def table(n):
    return list(range(n))

def prepare():
    return sum(table(5))

print('warm', prepare())
with sc.checkpoint('a'):
    y = prepare() * 2
print(y)
""")
    computed = first(project, "script.py")
    for _ in range(2):  # the first rerun restores table's entry, the second sees the same
        again = project.run("script.py")
        assert again.hit("a") and again.stdout == computed.stdout, again.stderr


# -- standard input --------------------------------------------------------------------------


def run_with_stdin(project: Project, script: str, stdin: Path, env: dict[str, str] | None = None) -> Run:
    """``python script < stdin``, as a shell runs it."""
    import subprocess
    import sys

    from conftest import subprocess_env

    with open(stdin) as f:
        proc = subprocess.run([sys.executable, script], cwd=project.root, env=subprocess_env(**(env or {})),
                              stdin=f, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_a_block_reading_standard_input(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    n = int(input())
    rest = sys.stdin.read().split()
print(n, rest)
""")
    stdin = project.write("in.txt", "1\na b\n")
    assert run_with_stdin(project, "script.py", stdin).computed("a")
    assert run_with_stdin(project, "script.py", stdin).hit("a")
    project.write("in.txt", "2\nc\n")
    after = run_with_stdin(project, "script.py", stdin)
    assert after.stdout == run_with_stdin(project, "script.py", stdin, {"STATECACHE_DISABLE": "1"}).stdout, after.stderr


# -- torch: what a tensor's fingerprint leaves out ---------------------------------------------

TORCH_SCRIPT = HEAD + """
import torch
w = torch.ones(2, requires_grad=True)
(w * float(os.environ['K'])).sum().backward()  # the gradients the block reads
with sc.checkpoint('grad-input'):
    y = w.grad.tolist()
print('grad-input=', y)
v = torch.ones(2, requires_grad=True)
with sc.checkpoint('backward-in-block'):
    loss = (v * 3).sum()
    loss.backward()  # fills v.grad, which the code after the block steps on
print('backward-in-block=', None if v.grad is None else v.grad.tolist())
"""


@pytest.fixture(scope="module")
def torch_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    """Three runs (importing torch costs seconds of CPU a run): compute with K=2, then K=3, whose
    backward-in-block must hit (its inputs do not depend on K), and a fresh run with K=3."""
    pytest.importorskip("torch")
    project = make_project("torch")
    project.write("script.py", TORCH_SCRIPT)
    cases = ["grad-input", "backward-in-block"]
    computed = project.run("script.py", env={"K": "2"})
    assert all(computed.computed(case) for case in cases), computed.stderr
    after = project.run("script.py", env={"K": "3"})
    assert after.hit("backward-in-block"), after.stderr
    got, want = values(after), values(project.run("script.py", env={"K": "3", "STATECACHE_DISABLE": "1"}))
    return {case: Outcome(True, got.get(case), want.get(case), True) for case in cases}


@pytest.mark.parametrize("case", [
    "grad-input",  # a tensor's .grad counts in its fingerprint (key/tensorprint.py)
    "backward-in-block",  # and comes back beside the state after a hit
])
@pytest.mark.extended  # three runs importing torch cost ~20 CPU-s, half this file's budget: -m extended
def test_a_tensors_gradient(torch_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(torch_outcomes, case)


TIMED_HELPERS = """
import functools, time
TIMINGS = {}

def step(x):
    t = time.perf_counter()
    r = x * 2
    TIMINGS['step'] = time.perf_counter() - t  # written, never read
    return r

def timed(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        t = time.perf_counter()
        r = fn(*args)
        TIMINGS[fn.__name__] = time.perf_counter() - t
        return r
    return wrapper

@timed
def square(x):
    return x * x
"""


def test_a_helper_that_records_its_own_timing_keeps_its_hit(project: Project) -> None:
    project.write("helpers.py", TIMED_HELPERS)
    project.write("script.py", HEAD + """
import helpers
print('warm', helpers.step(1), helpers.square(2))
with sc.checkpoint('a'):
    y = helpers.step(3) + helpers.square(4)
print(y)
""")
    computed = first(project, "script.py")
    for _ in range(2):
        again = project.run("script.py")
        assert again.hit("a") and again.stdout == computed.stdout, again.stderr


# -- a file the block read and then removed ---------------------------------------------------


CONSUMED = {
    "read-then-removed": """
with sc.checkpoint('a'):
    if os.path.exists('inbox/job1'):
        with open('inbox/job1') as f:
            jobs = f.read().split()
        os.remove('inbox/job1')  # consumed
    else:
        jobs = []
print(jobs)
""",
    "listed-then-moved-out": """
with sc.checkpoint('a'):
    jobs = sorted(os.listdir('inbox'))
    os.makedirs('done', exist_ok=True)
    for name in jobs:
        os.rename(os.path.join('inbox', name), os.path.join('done', name))  # processed
print(jobs)
""",
    "listed-then-written-into": """
with sc.checkpoint('a'):
    jobs = sorted(os.listdir('inbox'))
    with open('inbox/summary.txt', 'w') as f:  # the summary beside its inputs
        f.write(str(len(jobs)))
    del f
print(jobs)
""",
}


@pytest.mark.parametrize("body", list(CONSUMED))
def test_an_inbox_the_block_consumes(project: Project, body: str) -> None:
    project.write("inbox/job1", "a b")
    project.write("script.py", HEAD + CONSUMED[body])
    first(project, "script.py")
    assert_recomputes(project, "script.py")


# -- code reached only through an object the block unpickles ----------------------------------

UNPICKLED_SCRIPT = HEAD + """
import importlib.util
import pickle
import models  # the script imports its modules at the top
with sc.checkpoint('pickle.load'):
    with open('m.pkl', 'rb') as f:
        y = pickle.load(f).apply(10)
    del f
print('pickle.load=', y)
if importlib.util.find_spec('joblib'):
    import joblib
    with sc.checkpoint('joblib.load'):
        y = joblib.load('m.joblib').apply(10)
    print('joblib.load=', y)
"""


@pytest.fixture(scope="module")
def unpickled_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    import importlib.util

    joblib = importlib.util.find_spec("joblib") is not None
    project = make_project("unpickled")
    project.write("models.py", "class Scaler:\n    def __init__(self, k):\n        self.k = k\n\n"
                  "    def apply(self, x):\n        return x * self.k\n")
    project.write("make.py", "import pickle, models\npickle.dump(models.Scaler(3), open('m.pkl', 'wb'))\n"
                  + ("import joblib\njoblib.dump(models.Scaler(3), 'm.joblib')\n" if joblib else ""))
    project.run("make.py")  # a model trained and saved earlier
    project.write("script.py", UNPICKLED_SCRIPT)

    def change() -> None:  # a bug fixed in the method the saved model runs
        path = project.root / "models.py"
        path.write_text(path.read_text().replace("return x * self.k", "return x * self.k + 1"))

    return run_cases(project, "script.py", ["pickle.load", "joblib.load"] if joblib else ["pickle.load"], change)


@pytest.mark.parametrize("case", ["pickle.load", "joblib.load"])  # key/unpickled.py
def test_a_users_class_reached_only_through_an_unpickled_object(unpickled_outcomes: dict[str, Outcome], case: str) -> None:
    if case not in unpickled_outcomes:
        pytest.skip("joblib is not installed")
    assert_case(unpickled_outcomes, case)


# -- an input the block reshapes in place ------------------------------------------------------


def test_an_input_array_the_block_reshapes_in_place(project: Project) -> None:
    pytest.importorskip("numpy")
    project.write("script.py", HEAD + """
import numpy as np
arr = np.arange(4)
alias = arr
with sc.checkpoint('a'):
    arr.shape = (2, 2)
print(alias.shape, alias is arr)
""")
    computed = first(project, "script.py")
    hit = project.run("script.py")
    assert hit.hit("a") and hit.stdout == computed.stdout, hit.stderr


# -- source text the block reads as data -------------------------------------------------------


def test_a_block_that_keeps_a_helpers_source_text(project: Project) -> None:
    project.write("helpers.py", "def f():\n    # lr tuned on 2024-01\n    return 1\n")
    project.write("script.py", HEAD + """
import inspect
import helpers
with sc.checkpoint('a'):
    source = inspect.getsource(helpers.f)
    y = helpers.f()
print(source.splitlines()[1].strip())
""")
    first(project, "script.py")
    assert project.run("script.py").hit("a")
    project.write("helpers.py", "def f():\n    # lr tuned on 2024-02\n    return 1\n")
    assert_recomputes(project, "script.py")


def test_class_data_an_instance_method_changes_in_place_is_restored(project: Project) -> None:
    pytest.importorskip("numpy")
    from test_stale_hunt2 import assert_hit_matches_fresh

    project.write("script.py", HEAD + """
import numpy as np
class Model:
    arr = np.zeros(3)
    def add(self):
        self.arr[0] += 1
m = Model()
with sc.checkpoint('a'):
    m.add()
    y = 0
print(Model.arr.tolist())
""")
    assert_hit_matches_fresh(project, "script.py")
