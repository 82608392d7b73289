"""Red team, third pass: stale hits and wrong restores in the rules this session added (files a
block writes are outputs, library settings, memo reads, the import watch, the save and restore
paths). Each hole is a strict xfail naming the code that does not see it, so that the fix turns
the xfail into a failure asking for the mark to go. Every case runs a real script in
subprocesses against a cache under tmp_path, checks that an unchanged rerun hits (so a library
that never caches cannot pass), makes one change a user makes, and compares the next run with a
fresh run under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import pytest
from conftest import Project
from multicase import assert_cases, case_values, fresh_values
from test_redteam import HEAD, assert_recomputes, first, fresh
from test_stale_hunt import hits_unchanged

# -- a file the block writes is its output: but only when what it read back is its own ------


@pytest.mark.parametrize("make", [
    "try:\n        with open('config.txt', 'x') as f:\n            f.write('3')\n    except FileExistsError:\n        pass",
    "try:\n        os.close(os.open('config.txt', os.O_WRONLY | os.O_CREAT | os.O_EXCL))\n"
    "    except FileExistsError:\n        pass",
])
def test_a_config_created_exclusively_when_missing_then_edited(project: Project, make: str) -> None:
    project.write("config.txt", "3")  # exists before every run: the exclusive open fails
    project.write("script.py", HEAD + f"""
with sc.checkpoint('a'):
    {make}
    y = open('config.txt').read()
print(y)
""")
    hits_unchanged(project, "script.py")
    project.write("config.txt", "8")
    assert_recomputes(project, "script.py")


def test_a_log_the_block_appends_to_and_reads_back(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    with open('runs.log', 'a') as f:
        f.write('run\\n')
    y = open('runs.log').read().count('run')
print(y)
""")
    first(project, "script.py")
    project.write("runs.log", "run\nrun\nrun\n")  # the user runs another script that logs here
    second = project.run("script.py")  # a fresh run would append a fourth line and count 4
    assert not second.hit("a") and second.stdout == "4\n", second.stderr


# -- functions the block defines: rebuilt over the live globals, but not over the live rest --


def assert_hit_matches_fresh(project: Project, *args: str) -> None:
    """A rerun hits, and prints what a fresh run prints."""
    first(project, *args)
    again = project.run(*args)
    assert again.hit("a"), again.stderr
    assert again.stdout == fresh(project, *args), again.stderr


@pytest.mark.parametrize("body", [
    "    k = 2\n    with sc.checkpoint('a'):\n        def f():\n            return k * 10\n"
    "        y = f()\n    k = 5\n    print(y, f())\n",
    "    count = 0\n    with sc.checkpoint('a'):\n        def bump():\n            nonlocal count\n"
    "            count += 1\n            return count\n        y = bump()\n    bump()\n    print(y, count)\n",
])
def test_a_closure_the_block_defines_in_a_function_shares_the_live_cells(project: Project, body: str) -> None:
    project.write("script.py", HEAD + "def main():\n" + body + "main()\n")
    assert_hit_matches_fresh(project, "script.py")


# -- a memo filled above the block, by a read that is no open() of Python's -----------------

MEMO_READS = {
    "polars": ("import polars as pl\n", "    return pl.read_csv('d.csv')['x'].to_list()\n"),
    "sqlite3": ("import sqlite3\n",
                "    con = sqlite3.connect('d.db')\n    try:\n"
                "        return [r[0] for r in con.execute('select x from t')]\n    finally:\n        con.close()\n"),
}


def write_memo_data(project: Project, kind: str, value: int) -> None:
    if kind == "polars":
        project.write("d.csv", f"x\n{value}\n")
        return
    from test_files_seen import write_db

    write_db(project.root / "d.db", value)


@pytest.mark.parametrize("kind", list(MEMO_READS))
def test_a_memo_filled_above_the_block_by_a_compiled_reader(project: Project, kind: str) -> None:
    if kind == "polars":
        pytest.importorskip("polars")
    imports, read = MEMO_READS[kind]
    project.write("src/__init__.py", "")
    project.write("src/data.py", imports + "import functools\n\n@functools.lru_cache(maxsize=None)\n"
                  "def rows():\n" + read)
    write_memo_data(project, kind, 1)
    project.write("script.py", HEAD + "from src.data import rows\nprint('rows', len(rows()))\n"
                  "with sc.checkpoint('a'):\n    y = sum(rows())\nprint(y)\n")
    hits_unchanged(project, "script.py")
    write_memo_data(project, kind, 5)
    assert_recomputes(project, "script.py")


# -- compiled readers the reader table does not name -----------------------------------------

UNNAMED_READERS = {
    # name -> (how the test writes d.* with the value v, the block's read)
    "pl.read_lines": (lambda root, v: (root / "d.txt").write_text("a\n" * v), "pl.read_lines('d.txt').height"),
    "pl.read_parquet_metadata": (
        lambda root, v: __import__("polars").DataFrame({"x": [1]}).write_parquet(root / "d.parquet", metadata={"v": str(v)}),
        "pl.read_parquet_metadata('d.parquet')['v']",
    ),
}


URI_READERS = {
    "pq_uri": "pq.read_table(uri)['x'].to_pylist()",
    "pl_uri": "pl.read_parquet(uri)['x'].to_list()",
}


def test_polars_readers_once_missing_from_the_reader_table_and_readers_given_a_file_uri(project: Project) -> None:
    """One script, a checkpoint per reader (pl.read_lines and pl.read_parquet_metadata where
    this polars has them; pyarrow's and polars' parquet readers given a file:// URI): an
    unchanged rerun hits each, and after every file is rewritten each recomputes what a fresh
    run prints."""
    pl = pytest.importorskip("polars")
    from test_stale_hunt import write_parquet

    readers = {r: read for r, (_, read) in UNNAMED_READERS.items() if hasattr(pl, r.removeprefix("pl."))}
    cases = {**{r.removeprefix("pl."): read for r, read in readers.items()}, **URI_READERS}
    script = HEAD + "import pyarrow.parquet as pq, polars as pl\nuri = 'file://' + os.path.abspath('a.parquet')\n"
    script += "".join(f"with sc.checkpoint({c!r}):\n    y = {read}\nprint('y {c}', y)\n" for c, read in cases.items())
    project.write("script.py", script)

    def make(v: int) -> None:
        for reader in readers:
            UNNAMED_READERS[reader][0](project.root, v)
        write_parquet(project.root / "a.parquet", v)

    make(1)
    computed = project.run("script.py")
    assert_cases(computed, list(cases), hit=False)
    assert_cases(project.run("script.py"), list(cases), hit=True, fresh=case_values(computed))
    make(2)
    changed = project.run("script.py")
    expected = fresh_values(project)
    assert_cases(changed, list(cases), hit=False, fresh=expected)
    for case in cases:
        assert expected[case] != case_values(computed)[case], f"{case}: the rewrite must change the result"
    assert_cases(project.run("script.py"), list(cases), hit=True, fresh=expected)


# -- restored arrays: equal values, but not the same kind of object --------------------------


def test_a_restored_array_can_be_resized_in_place(project: Project) -> None:
    pytest.importorskip("numpy")
    project.write("script.py", HEAD + """
import numpy as np
with sc.checkpoint('a'):
    buf = np.arange(10.0)
try:
    buf.resize(12, refcheck=False)
    print('grown', buf.shape)
except ValueError as e:
    print('refused', e)
""")
    assert_hit_matches_fresh(project, "script.py")


# -- library settings: counted only when an input is the library's own object ----------------

SETTINGS = {
    "a dict of frames": (
        "import pandas as pd\npd.set_option('display.precision', int(os.environ['V']))\n"
        "frames = {'a': pd.DataFrame({'x': [1.123456789]})}\n",
        "y = repr(frames['a'])",
    ),
    "a list of arrays": (
        "import numpy as np\nnp.set_printoptions(precision=int(os.environ['V']))\narrs = [np.array([1.123456789])]\n",
        "y = str(arrs[0])",
    ),
    "a helper importing pandas inside": (
        "import pandas as pd\nimport helpers\npd.set_option('display.precision', int(os.environ['V']))\n"
        "rows = [{'x': 1.123456789}]\n",
        "y = helpers.table(rows)",
    ),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_a_library_setting_reached_through_a_container_or_a_local_import(project: Project, case: str) -> None:
    pytest.importorskip("pandas")
    above, body = SETTINGS[case]
    project.write("helpers.py", "def table(rows):\n    import pandas as pd\n    return repr(pd.DataFrame(rows))\n")
    project.write("script.py", HEAD + above + f"with sc.checkpoint('a'):\n    {body}\nprint(y)\n")
    hits_unchanged(project, "script.py", env={"V": "2"})
    assert_recomputes(project, "script.py", env={"V": "5"})


# -- needless misses: outputs taken for inputs ----------------------------------------------


def test_a_directory_the_block_makes_fills_and_lists_hits_after_the_script_removes_it(project: Project) -> None:
    project.write("script.py", HEAD + """
import glob, shutil
shutil.rmtree('out', ignore_errors=True)
with sc.checkpoint('a'):
    os.makedirs('out')
    for i in range(3):
        with open(f'out/part-{i}.csv', 'w') as f:
            f.write(str(i))
    y = sum(int(open(p).read()) for p in sorted(glob.glob('out/*.csv')))
print(y)
""")
    computed = first(project, "script.py")
    again = project.run("script.py")
    assert again.hit("a") and again.stdout == computed.stdout == fresh(project, "script.py"), again.stderr


def test_a_method_the_block_patches_onto_a_class_is_set_back(project: Project) -> None:
    project.write("script.py", HEAD + """
class Model:
    def predict(self):
        return 1
with sc.checkpoint('a'):
    def fast(self):
        return 2
    Model.predict = fast
    Model.score = property(lambda self: 3)
    y = 0
print(Model().predict(), Model().score if isinstance(vars(Model).get('score'), property) else None)
""")
    assert_hit_matches_fresh(project, "script.py")


SETTERS = {
    "a function of the script": ("", "def setup():\n    helpers.SCALE = 7\n", "setup()"),
    "a function of another module": ("import setup_mod\n", "", "setup_mod.setup()"),
    "a local import in the helper": ("", "def setup():\n    import helpers as h\n    h.SCALE = 7\n", "setup()"),
}


@pytest.mark.parametrize("case", list(SETTERS))
def test_a_module_attribute_a_helper_sets_is_restored(project: Project, case: str) -> None:
    imports, defs, call = SETTERS[case]
    project.write("helpers.py", "SCALE = 1\n")
    project.write("setup_mod.py", "import helpers\n\ndef setup():\n    helpers.SCALE = 7\n")
    project.write("script.py", HEAD + "import helpers\n" + imports + defs +
                  f"with sc.checkpoint('a'):\n    {call}\n    y = 0\nprint(helpers.SCALE)\n")
    assert_hit_matches_fresh(project, "script.py")


HELPER_MUTATIONS = {
    "a list of the script": "REG.append('x')",
    "a dict of a module": "h2.TABLE['k'] = 7",
    "a class attribute": "Model.default = 5",
}


@pytest.mark.parametrize("case", list(HELPER_MUTATIONS))
def test_data_a_helper_changes_in_place_is_restored(project: Project, case: str) -> None:
    project.write("h2.py", "TABLE = {}\n")
    project.write("script.py", HEAD + f"""
import h2
REG = []
class Model:
    default = 1
def setup():
    {HELPER_MUTATIONS[case]}
with sc.checkpoint('a'):
    setup()
    y = 0
print(h2.TABLE, REG, Model.default)
""")
    assert_hit_matches_fresh(project, "script.py")


def test_a_view_of_an_input_array_stays_a_view(project: Project) -> None:
    pytest.importorskip("numpy")
    project.write("script.py", HEAD + """
import numpy as np
X = np.arange(6.0)
with sc.checkpoint('a'):
    X_train = X[:4]
X /= 2
print(X_train.tolist(), np.shares_memory(X, X_train))
""")
    assert_hit_matches_fresh(project, "script.py")


# -- a compiled reader's handle made above the block, read inside it -------------------------

HANDLES = {
    "pyarrow.dataset.dataset": ("import pyarrow.dataset as ds\nh = ds.dataset('dd')\n", "h.to_table()"),
    "pq.ParquetDataset": ("import pyarrow.parquet as pq\nh = pq.ParquetDataset('dd')\n", "h.read()"),
}


@pytest.mark.parametrize("handle", list(HANDLES))
def test_a_pyarrow_dataset_made_above_the_block_and_read_in_it(project: Project, handle: str) -> None:
    from test_stale_hunt import write_parquet

    write_parquet(project.root / "dd" / "p.parquet", 1)
    above, read = HANDLES[handle]
    project.write("script.py", HEAD + above + f"with sc.checkpoint('a'):\n    y = {read}['x'].to_pylist()\nprint(y)\n")
    hits_unchanged(project, "script.py")
    write_parquet(project.root / "dd" / "p.parquet", 2)
    assert_recomputes(project, "script.py")


def test_a_file_the_block_writes_exists_after_a_hit(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    y = 6 * 7
    with open('report.txt', 'w') as f:
        f.write(str(y))
print(open('report.txt').read() if os.path.exists('report.txt') else 'no report')
""")
    hits_unchanged(project, "script.py")
    (project.root / "report.txt").unlink()  # the user cleans the outputs and runs again
    assert_recomputes(project, "script.py")


# -- a user module first imported by the block: its top level is read from the file --------

FIRST_IMPORTS = {
    "import in the block": "    import settings\n    y = settings.f()",
    "from-import in the block": "    from settings import SCALE\n    y = SCALE",
    "import in a helper": "    y = run()",
}


@pytest.mark.parametrize("case", list(FIRST_IMPORTS))
def test_an_environment_variable_read_where_a_module_the_block_imports_loads(project: Project, case: str) -> None:
    project.write("settings.py", "import os\nSCALE = int(os.environ.get('S', '1'))\n\n\ndef f():\n    return SCALE * 10\n")
    project.write("script.py", HEAD + "def run():\n    import settings\n    return settings.f()\n"
                  f"with sc.checkpoint('a'):\n{FIRST_IMPORTS[case]}\nprint(y)\n")
    hits_unchanged(project, "script.py", env={"S": "1"})
    assert_recomputes(project, "script.py", env={"S": "5"})


def test_module_attributes_set_with_setattr_are_restored(project: Project) -> None:
    project.write("helpers.py", "LR = 0.1\nEPOCHS = 1\n")
    project.write("script.py", HEAD + """
import helpers
overrides = {'LR': 0.5, 'EPOCHS': 3}
with sc.checkpoint('a'):
    for k, v in overrides.items():
        setattr(helpers, k, v)
    y = 0
print(helpers.LR, helpers.EPOCHS)
""")
    assert_hit_matches_fresh(project, "script.py")


def test_a_block_that_changes_directory_to_read_hits_when_unchanged(project: Project) -> None:
    project.write("sub/d.txt", "1")
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    os.chdir('sub')
    try:
        y = open('d.txt').read()
    finally:
        os.chdir('..')
print(y)
""")
    computed = first(project, "script.py")
    again = project.run("script.py")
    assert again.hit("a") and again.stdout == computed.stdout == fresh(project, "script.py"), again.stderr
