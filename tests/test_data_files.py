"""Data files a block reads, seen whatever way they change and whoever opens them (issue 11
item 3). Every case runs a real script twice or more; the value after a hit or a miss is
compared with a fresh run under ``STATECACHE_DISABLE=1``, and an unchanged rerun must hit."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Run
from multicase import assert_cases, case_values, fresh_values

OLD = time.time_ns() - 600 * 1_000_000_000  # well outside the racily-clean window


def age(path: Path, ns: int = OLD) -> None:
    """Give a file an old mtime, so that a hit trusts its stat (no racily-clean re-read)."""
    os.utime(path, ns=(ns, ns))


def value(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


def fresh(project: Project, script: str = "script.py") -> str:
    return value(project.run(script, env={"STATECACHE_DISABLE": "1"}))


def check_miss(project: Project, script: str = "script.py") -> Run:
    """A run that must recompute and agree with a fresh run; the next one must hit."""
    run = project.run(script)
    assert run.computed("a") and not run.hit("a"), run.stderr
    assert value(run) == fresh(project, script)
    again = project.run(script)
    assert again.hit("a") and value(again) == value(run), again.stderr
    return run


READ = """
import statecache as sc
with sc.checkpoint("a"):
    with open("data.txt") as f:
        y = f.read()
print("y", y)
"""


def first_run(project: Project, script: str = READ) -> Path:
    data = project.write("data.txt", "aaaa")
    age(data)
    project.write("script.py", script)
    assert value(project.run("script.py")) == "y aaaa"
    second = project.run("script.py")
    assert second.hit("a") and value(second) == "y aaaa", second.stderr
    return data


def test_a_same_size_edit_with_its_mtime_put_back_is_seen(project: Project) -> None:
    data = first_run(project)
    data.write_text("bbbb")
    age(data)  # as touch -r or unpacking an archive does
    assert check_miss(project).stdout.count("y bbbb") == 1


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_seen(project: Project) -> None:
    data = first_run(project)
    other = project.write("other.txt", "cccc")
    age(other)
    os.replace(other, data)  # another inode, same size and mtime
    assert value(check_miss(project)) == "y cccc"
    shutil.copy2(project.write("third.txt", "dddd"), data)  # cp -p: same inode, content copied
    age(data)
    assert value(check_miss(project)) == "y dddd"


def test_a_chmod_alone_rereads_the_content_and_still_hits(project: Project) -> None:
    data = first_run(project)
    data.chmod(0o600)  # moves the ctime; the content decides
    run = project.run("script.py")
    assert run.hit("a") and value(run) == fresh(project)


def test_a_directory_pattern_expands_to_every_file_under_it(tmp_path: Path) -> None:
    from statecache.key.files import expand_files_pattern

    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("1")
    (tmp_path / "data" / "sub" / "b.csv").write_text("2")
    (tmp_path / "data" / ".statecache").mkdir()
    (tmp_path / "data" / ".statecache" / "x.sc").write_text("entry")
    (tmp_path / "empty").mkdir()
    data = tmp_path / "data"
    assert expand_files_pattern("data", str(tmp_path)) == [str(data / "a.csv"), str(data / "sub" / "b.csv")]
    assert expand_files_pattern("d*", str(tmp_path)) == [str(data / "a.csv"), str(data / "sub" / "b.csv")]
    assert expand_files_pattern("data/*.csv", str(tmp_path)) == [str(data / "a.csv")]
    assert expand_files_pattern("empty", str(tmp_path)) == []
    assert expand_files_pattern("missing", str(tmp_path)) == []


def test_files_naming_a_directory_keys_on_its_contents(project: Project) -> None:
    project.write("data/sub/b.txt", "b")
    project.write("script.py", """
import statecache as sc
with sc.checkpoint("a", files=["data"]):
    y = 1  # reads nothing itself: only files= can make it miss
print("y", y)
""")
    assert value(project.run("script.py")) == "y 1"
    assert project.run("script.py").hit("a")
    project.write("data/sub/b.txt", "bb")
    check_miss(project)
    project.write("data/c.txt", "c")
    check_miss(project)


def write_table(path: Path, n: int) -> None:
    """A small table in the format the path's suffix names (real pyarrow, sqlite3)."""
    if path.suffix == ".db":
        import sqlite3

        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("create table t (x integer)")
            db.executemany("insert into t values (?)", [(i,) for i in range(n)])
        db.close()
        return
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"x": list(range(n))})
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif path.suffix == ".feather":
        import pyarrow.feather as feather

        feather.write_feather(table, path)
    else:
        path.write_text("x\n" + "".join(f"{i}\n" for i in range(n)))


def assert_sees_edit(project: Project, edit: Callable[[], object]) -> Run:
    """The block computes what a fresh run does, an unchanged rerun hits with the same value,
    and after ``edit`` the next run recomputes what a fresh run does, which differs."""
    first = project.run("script.py")
    assert value(first) == fresh(project)
    second = project.run("script.py")
    assert second.hit("a") and value(second) == value(first), second.stderr
    edit()
    assert value(check_miss(project)) != value(first)
    return first


def assert_cases_see_edit(project: Project, cases: list[str], edit: Callable[[], object]) -> dict[str, str]:
    """assert_sees_edit for every case of one script, each its own checkpoint."""
    before = fresh_values(project)
    first = project.run("script.py")
    assert_cases(first, cases, hit=False, fresh=before)
    assert_cases(project.run("script.py"), cases, hit=True, fresh=before)
    edit()
    after = fresh_values(project)
    run = project.run("script.py")
    assert_cases(run, cases, hit=False, fresh=after)
    assert_cases(project.run("script.py"), cases, hit=True, fresh=after)
    for case in cases:
        assert after[case] != before[case], f"{case}: the edit must change the value to test anything"
    return before


def rewrite(path: Path, n: int) -> None:
    """Write the table again with ``n`` rows, with an mtime no earlier run saw."""
    write_table(path, n)
    age(path, OLD + 1_000_000_000)


READERS = {
    "pandas-parquet": ("t.parquet", "import pandas as pd", "int(pd.read_parquet('t.parquet')['x'].sum())"),
    "pyarrow-parquet": ("t.parquet", "import pyarrow.parquet as pq", "pq.read_table('t.parquet')['x'].to_pylist()"),
    "pyarrow-csv": ("t.csv", "from pyarrow import csv", "csv.read_csv('t.csv')['x'].to_pylist()"),
    "pyarrow-feather": ("t.feather", "import pyarrow.feather as ft", "ft.read_table('t.feather')['x'].to_pylist()"),
    "polars-csv": ("t.csv", "import polars as pl", "pl.read_csv('t.csv')['x'].to_list()"),
    "polars-scan-parquet": ("t.parquet", "import polars as pl", "pl.scan_parquet('t.parquet').collect()['x'].to_list()"),
    "polars-glob": ("t.parquet", "import polars as pl", "pl.read_parquet('*.parquet')['x'].to_list()"),
    "sqlite3": ("t.db", "import sqlite3", "sqlite3.connect('t.db').execute('select sum(x) from t').fetchone()"),
}


def installed(cases: dict[str, tuple[str, str, str]]) -> list[str]:
    return [case for case, (_, imports, _) in cases.items() if importlib.util.find_spec(imports.split()[1].split(".")[0])]


def test_a_reader_imported_inside_the_block_is_seen(project: Project) -> None:
    """The reader's module imported inside the block, in a script that loaded it nowhere else."""
    filename, imports, expression = READERS["pyarrow-parquet"]
    pytest.importorskip("pyarrow")
    data = project.root / filename
    write_table(data, 3)
    age(data)
    project.write("script.py", f"""
import statecache as sc
with sc.checkpoint("a"):
    {imports}
    y = {expression}
print("y", y)
""")
    assert_sees_edit(project, lambda: write_table(data, 4))


@pytest.mark.parametrize("earlier_block", [False, True])
def test_a_reader_imported_by_name_before_anything_computes_is_seen(project: Project, earlier_block: bool) -> None:
    """``from pyarrow.parquet import read_table`` binds the reader before any block computes
    (when the readers are wrapped): the script's name must see the read too, and it keys the
    same whether or not an earlier block computed (and so wrapped it) in this run."""
    pytest.importorskip("pyarrow")
    data = project.root / "t.parquet"
    write_table(data, 3)
    age(data)
    before = 'with sc.checkpoint("first"):\n    z = 1\n' if earlier_block else ""
    project.write("script.py", f"""
import statecache as sc
from pyarrow.parquet import read_table
{before}
with sc.checkpoint("a"):
    y = read_table('t.parquet')['x'].to_pylist()
print("y", y)
""")
    # on the rerun "first" hits: nothing wrapped the reader before "a"
    assert_sees_edit(project, lambda: rewrite(data, 4))


def test_a_library_whose_reads_cannot_be_seen_is_named_in_a_warning(project: Project) -> None:
    project.write("h5py.py", "def File(path):\n    return open(path).read()\n")  # stands in for h5py
    project.write("script.py", """
import statecache as sc
import h5py
with sc.checkpoint("a"):
    y = 1
print("y", y)
""")
    run = project.run("script.py")
    assert "h5py open files from compiled code" in run.stderr and "files=[...]" in run.stderr
    assert project.run("script.py").hit("a")


def test_a_project_copied_with_its_cache_checks_its_own_files(tmp_path: Path) -> None:
    import subprocess

    exp1 = Project(tmp_path / "exp1")
    data = exp1.write("data.txt", "one")
    age(data)
    exp1.write("helpers.py", """
import os
def load(name):
    with open(os.path.join(os.path.dirname(__file__), name)) as f:  # beside this file
        return f.read()
""")
    exp1.write("script.py", """
import statecache as sc
import helpers
with sc.checkpoint("a"):
    y = helpers.load("data.txt")
print("y", y)
""")
    assert value(exp1.run("script.py")) == "y one"
    subprocess.run(["cp", "-r", str(exp1.root), str(tmp_path / "exp2")], check=True)
    exp2 = Project(tmp_path / "exp2")
    (exp2.root / "data.txt").write_text("two")
    assert value(check_miss(exp2)) == "y two"
    again = exp1.run("script.py")
    assert again.hit("a") and value(again) == "y one"


def test_a_record_inside_the_project_is_checked_in_the_copy_and_the_original(tmp_path: Path) -> None:
    from statecache.key.files import FileRecorder, changed_record, snapshot

    exp1, exp2 = tmp_path / "exp1", tmp_path / "exp2"
    for root in (exp1, exp2):
        (root / ".statecache").mkdir(parents=True)
        (root / "data.txt").write_text("one")
    outside = tmp_path / "shared.txt"
    outside.write_text("shared")
    with FileRecorder() as recorder:
        for path in (exp1 / "data.txt", outside):
            with open(path) as f:  # absolute paths, as code built from __file__ opens them
                f.read()
    records = {r["path"]: r for r in snapshot(recorder, [str(exp1 / ".statecache")])}
    inside, shared = records[str(exp1 / "data.txt")], records[str(outside)]
    assert inside["project_path"] == "data.txt" and "project_path" not in shared
    cache2 = str(exp2 / ".statecache")
    assert changed_record(inside, cache2) is None and changed_record(shared, cache2) is None
    (exp2 / "data.txt").write_text("two")  # the copy's file: read by a path built from __file__
    assert changed_record(inside, cache2) == f"file {exp2 / 'data.txt'} changed"
    assert changed_record(inside) is None  # without the cache's place, only the original
    (exp2 / "data.txt").write_text("one")
    (exp1 / "data.txt").write_text("uno")  # the original: read by a path written out in full
    assert changed_record(inside, cache2) == f"file {exp1 / 'data.txt'} changed"


PYARROW_OPENERS = {
    "ParquetFile": "pq.ParquetFile('t.parquet').read()['x'].to_pylist()",
    "ParquetFile-keyword": "pq.ParquetFile(source='t.parquet').read()['x'].to_pylist()",
    "ParquetDataset": "pq.ParquetDataset('t.parquet').read()['x'].to_pylist()",
    "input_stream": "pq.read_table(pa.BufferReader(drain(pa.input_stream('t.parquet'))))['x'].to_pylist()",
    "memory_map": "pq.read_table(pa.memory_map('t.parquet'))['x'].to_pylist()",
    # compiled classes: their module's name points at a subclass that notes the path
    "OSFile": "pq.read_table(pa.OSFile('t.parquet'))['x'].to_pylist()",
    "OSFile-keyword": "pq.read_table(pa.OSFile(path='t.parquet', mode='r'))['x'].to_pylist()",
    "open_input_file": "pq.read_table(pafs.LocalFileSystem().open_input_file('t.parquet'))['x'].to_pylist()",
    "open_input_stream": (
        "pq.read_table(pa.BufferReader(drain(pafs.LocalFileSystem().open_input_stream('t.parquet'))))['x'].to_pylist()"
    ),
}


def test_a_compiled_reader_class_keeps_what_it_returns_raises_and_is(tmp_path: Path) -> None:
    """The subclass a compiled reader class's name points at: the same results, errors,
    ``isinstance`` both ways, name, docs and pickling as the class itself."""
    import pickle

    pa = pytest.importorskip("pyarrow")
    pafs = pytest.importorskip("pyarrow.fs")
    from statecache.key.files import FileRecorder

    (tmp_path / "in.bin").write_bytes(b"abc")
    with FileRecorder() as recorder:
        assert pa.OSFile(str(tmp_path / "in.bin")).read() == b"abc"
        with pa.OSFile(str(tmp_path / "out.bin"), "w") as out:
            out.write(b"x")
        local = pafs.LocalFileSystem()
        assert local.open_input_stream(str(tmp_path / "in.bin")).read() == b"abc"
        with pytest.raises(FileNotFoundError):
            local.open_input_file(str(tmp_path / "missing"))
        with pytest.raises(FileNotFoundError):
            pa.OSFile(str(tmp_path / "missing"))
    assert str(tmp_path / "in.bin") in recorder.opened and str(tmp_path / "missing") in recorder.opened
    assert isinstance(pa.input_stream(str(tmp_path / "in.bin")), pa.OSFile)
    assert issubclass(pa.lib.OSFile, pa.OSFile) and isinstance(pa.OSFile(str(tmp_path / "in.bin")), pa.lib.OSFile)
    assert pa.OSFile.__name__ == "OSFile" and pa.OSFile.__doc__ == pa.lib.OSFile.__doc__
    assert pickle.loads(pickle.dumps(local)) == local and pickle.loads(pickle.dumps(pa.OSFile)) is pa.OSFile


LAZY = {
    "scan-then-filter": "lf = pl.scan_csv('t.csv').filter(pl.col('x') > 0)",
    "glob-of-many": "lf = pl.scan_parquet('parts/*.parquet').sort('x')",
    "joined-with-a-frame": "lf = pl.scan_csv('t.csv').join(pl.DataFrame({'x': [1, 2, 3]}).lazy(), on='x').sort('x')",
}


def test_a_lazy_plan_made_before_the_block_is_seen_when_collected_in_it(project: Project) -> None:
    """Each plan made above its own checkpoint; the edit changes the file each plan scans."""
    pytest.importorskip("polars")
    write_table(project.root / "t.csv", 3)
    (project.root / "parts").mkdir()
    for i in range(3):
        write_table(project.root / f"parts/p{i}.parquet", 2)
    changed = [project.root / "parts/p2.parquet", project.root / "t.csv"]
    for path in changed:
        age(path)
    cases = "".join(f"{plan.replace('lf = ', f'lf_{n} = ')}\nwith sc.checkpoint({case!r}):\n"
                    f"    y = lf_{n}.collect()['x'].to_list()\nprint('y {case}', y)\n" for n, (case, plan) in enumerate(LAZY.items()))
    project.write("script.py", f"import statecache as sc\nimport polars as pl\n{cases}")
    assert_cases_see_edit(project, list(LAZY), lambda: [rewrite(path, 5) for path in changed])


BOUND_READERS = {
    "polars": "from polars import read_csv as read_{n}\n    column_{n} = lambda t: t['x'].to_list()",
    "pyarrow": "from pyarrow.csv import read_csv as read_{n}\n    column_{n} = lambda t: t['x'].to_pylist()",
}


def readers_script(compiled: list[str], bound: list[str]) -> str:
    """The compiled readers (imported before every block), the pyarrow openers and the readers
    bound in a function's locals, each case its own checkpoint of one script; main(), which binds
    and reads with the bound readers, runs first, so no block has computed when it binds."""
    imports = "\n".join(dict.fromkeys(READERS[case][1] for case in compiled))
    binds = "".join(f"    {BOUND_READERS[case].format(n=n)}\n" for n, case in enumerate(bound))
    bound_blocks = "".join(f"    with sc.checkpoint({case!r}):\n        y = column_{n}(read_{n}('t.csv'))\n    print('y {case}', y)\n"
                           for n, case in enumerate(bound))
    compiled_blocks = "".join(f"with sc.checkpoint({case!r}):\n    y = {READERS[case][2]}\nprint('y {case}', y)\n" for case in compiled)
    opener_blocks = "".join(f"with sc.checkpoint({case!r}):\n    y_{n} = {opener}\n" for n, (case, opener) in enumerate(PYARROW_OPENERS.items()))
    prints = "".join(f"print('y {case}', y_{n}, all(same))\n" for n, case in enumerate(PYARROW_OPENERS))
    return f"""import statecache as sc
{imports}
import pyarrow as pa, pyarrow.fs as pafs, pyarrow.parquet as pq
def drain(stream):  # closed at once: an open pyarrow stream at exit sometimes aborts pyarrow 26
    with stream:
        return stream.read()
def main():
{binds}{bound_blocks}    pass
main()
{compiled_blocks}{opener_blocks}
same = [isinstance(pq.ParquetFile('t.parquet'), pq.ParquetFile), isinstance(pa.input_stream('t.parquet'), pa.OSFile),
        isinstance(pafs.FileSystem.from_uri('file:///')[0], pafs.LocalFileSystem)]
{prints}"""


@pytest.fixture(scope="module")
def reader_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """readers_script's steps: a fresh run and two runs as written, then one edit of every table
    (parquet and csv given an mtime no run saw, the others written now), a fresh run and two."""
    pytest.importorskip("pyarrow")
    project = Project(tmp_path_factory.mktemp("readers"))
    compiled = [case for case in installed(READERS) if case != "pyarrow-parquet"]
    bound = [case for case in BOUND_READERS if importlib.util.find_spec(case)]
    tables = sorted({project.root / READERS[case][0] for case in compiled} | {project.root / "t.parquet", project.root / "t.csv"})
    for data in tables:
        write_table(data, 3)
        age(data)
    project.write("script.py", readers_script(compiled, bound))
    runs: dict[str, Any] = {"compiled": compiled, "bound": bound, "before": fresh_values(project)}
    runs["first"], runs["second"] = project.run("script.py"), project.run("script.py")
    for data in tables:
        if data.suffix in (".parquet", ".csv"):
            rewrite(data, 4)
        else:
            write_table(data, 4)
    runs["after"] = fresh_values(project)
    runs["run"], runs["again"] = project.run("script.py"), project.run("script.py")
    return runs


def assert_saw_edit(runs: dict[str, Any], cases: list[str]) -> None:
    """assert_cases_see_edit's assertions, on the runs of a module-scoped fixture."""
    if not cases:
        pytest.skip("no reader library installed")
    before, after = runs["before"], runs["after"]
    assert_cases(runs["first"], cases, hit=False, fresh=before)
    assert_cases(runs["second"], cases, hit=True, fresh=before)
    assert_cases(runs["run"], cases, hit=False, fresh=after)
    assert_cases(runs["again"], cases, hit=True, fresh=after)
    for case in cases:
        assert after[case] != before[case], f"{case}: the edit must change the value to test anything"


def test_a_file_read_from_compiled_code_is_seen(reader_runs: dict[str, Any]) -> None:
    """Every reader but the one imported inside its block: imported before the blocks, each
    reading in its own checkpoint; one edit of every table is seen by each."""
    assert_saw_edit(reader_runs, reader_runs["compiled"])


def test_a_file_opened_by_a_pyarrow_class_or_stream_is_seen(reader_runs: dict[str, Any]) -> None:
    """Every opener in its own checkpoint of one script; pyarrow's classes are still what
    ``isinstance`` expects after the blocks, computed or hit."""
    assert_saw_edit(reader_runs, list(PYARROW_OPENERS))
    for case in PYARROW_OPENERS:
        assert reader_runs["before"][case].endswith("True"), f"{case}: {reader_runs['before'][case]}"
        assert case_values(reader_runs["second"])[case].endswith("True"), f"{case}: after a hit"


def test_a_reader_bound_in_a_function_before_anything_computes_is_seen(reader_runs: dict[str, Any]) -> None:
    """Both readers bound in the function's locals before either block computes."""
    assert_saw_edit(reader_runs, reader_runs["bound"])


LOOKS = {
    "exists": "os.path.exists('extra.csv')",
    "isfile": "os.path.isfile('extra.csv')",
    "path-exists": "pathlib.Path('extra.csv').exists()",
    "getsize": "os.path.getsize('extra.csv') if os.path.exists('extra.csv') else -1",
}


def test_a_file_the_block_only_looks_at_is_recorded(project: Project) -> None:
    blocks = "".join(f"with sc.checkpoint({case!r}):\n    y = {look}\nprint('y {case}', y)\n" for case, look in LOOKS.items())
    project.write("script.py", f"import os, pathlib\nimport statecache as sc\n{blocks}")
    assert_cases_see_edit(project, list(LOOKS), lambda: project.write("extra.csv", "x\n"))


def test_a_wrapped_os_stat_returns_and_raises_what_os_stat_does(tmp_path: Path) -> None:
    from statecache.key.files import FileRecorder

    (tmp_path / "f").write_text("abc")
    with FileRecorder() as recorder:
        assert os.stat(tmp_path / "f").st_size == 3 and os.stat(str(tmp_path)).st_size >= 0
        with pytest.raises(FileNotFoundError):
            os.stat(tmp_path / "missing")
    assert str(tmp_path / "f") in recorder.opened and str(tmp_path / "missing") in recorder.opened
