"""Files a block reads or writes that statecache once did not see (issue 11, class 3): a
compiled reader given a URI, a path object or a glob; a pyarrow dataset made above the block
and read by C++ in it; a memo filled above the block by a compiled reader; a folder the block
makes and lists; a relative path opened after ``os.chdir``; the files a block writes, which a
hit must find. Each script exercises several instances of its class in one run, as a user
would meet them: an unchanged rerun hits every block, one change per block recomputes each,
and what the run prints is what a fresh run (``STATECACHE_DISABLE=1``) prints. In-process
tests hold the rules themselves."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import Project, Run
from test_redteam import HEAD, fresh
from test_stale_hunt import write_parquet

from statecache._errors import EntryError
from statecache.entry.meta import parse_meta
from statecache.key.files import FileRecorder, changed_record, snapshot
from statecache.key.readers import local_paths


def computed(run: Run, names: list[str]) -> list[str]:
    return [name for name in names if run.computed(name)]


def hits(run: Run, names: list[str]) -> list[str]:
    return [name for name in names if run.hit(name)]


def check_cycle(project: Project, names: list[str], change: object, recompute: list[str]) -> Run:
    """First run computes every block, an unchanged rerun hits every one; after ``change()``
    exactly ``recompute`` compute again (the others hit), printing what a fresh run prints,
    and the next run hits every block. Returns the run after the change."""
    first = project.run("script.py")
    assert computed(first, names) == names, first.stderr
    again = project.run("script.py")
    assert hits(again, names) == names and again.stdout == first.stdout, again.stderr
    change()  # type: ignore[operator]
    after = project.run("script.py")
    assert computed(after, names) == recompute, after.stderr
    assert hits(after, names) == [n for n in names if n not in recompute], after.stderr
    assert after.stdout == fresh(project, "script.py"), after.stderr
    last = project.run("script.py")
    assert hits(last, names) == names and last.stdout == after.stdout, last.stderr
    return after


# -- the rule: which local paths a reader's source names --------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("data.csv", ["data.csv"]),
    ("file:///abs/d.parquet", ["/abs/d.parquet"]),
    ("file://localhost/abs/d.parquet", ["/abs/d.parquet"]),
    ("FILE:///abs/d.parquet", ["/abs/d.parquet"]),
    ("file:/abs/d.parquet", ["/abs/d.parquet"]),
    ("local:///abs/d.parquet", ["/abs/d.parquet"]),
    ("file:///abs/%61.parquet", ["/abs/a.parquet", "/abs/%61.parquet"]),  # pyarrow decodes
    ("file:///abs/d.parquet?x=1", ["/abs/d.parquet"]),
    ("file:rel.parquet", ["rel.parquet", "/rel.parquet"]),  # polars reads it from the root
    ("file://otherhost/abs/d.parquet", []),  # another machine's
    ("s3://bucket/key.parquet", []),
    ("https://example.org/d.csv", []),
    ("C:\\data\\d.csv", ["C:\\data\\d.csv"]),  # a drive letter is no scheme
    ("runs:v1/d.csv", ["runs:v1/d.csv"]),
])
def test_the_local_paths_a_source_names(source: str, expected: list[str]) -> None:
    assert local_paths(source) == expected


# -- compiled readers given URIs, path objects, lists and globs ------------------------------

URI_BLOCKS = {
    "uri3": "pq.read_table('file://' + os.path.abspath('u1.parquet'))['x'].to_pylist()",
    "uri1": "pl.read_parquet('file:' + os.path.abspath('u2.parquet'))['x'].to_list()",
    "local": "pq.read_table('local://' + os.path.abspath('u3.parquet'))['x'].to_pylist()",
    "pandas": "pd.read_parquet('file://' + os.path.abspath('u4.parquet'))['x'].tolist()",
    "scan": "pl.scan_parquet('file://' + os.path.abspath('u5.parquet')).collect()['x'].to_list()",
    "pathlib": "pl.read_parquet(pathlib.Path('p1.parquet'))['x'].to_list()",
    "pathlike": "pq.read_table(Named('p2.parquet'))['x'].to_pylist()",
    "list": "pl.read_parquet([pathlib.Path('l1.parquet'), 'l2.parquet'])['x'].to_list()",
    "glob": "sorted(pl.read_parquet('g/*/x.parquet')['x'].to_list())",
}


# -- pyarrow datasets made above the block, read by C++ inside it -----------------------------

DATASET_ABOVE = """
import pyarrow.dataset as ds, pyarrow.parquet as pq, polars as pl
d1 = ds.dataset('d1')
d2 = pq.ParquetDataset('d2')
d3 = ds.dataset(['d3/p.parquet'])
holder = {'d': ds.dataset('d4')}
fragment = next(iter(ds.dataset('d5').get_fragments()))
lazy = pl.scan_parquet('d6/p.parquet')
DS = ds.dataset('d7')
filtered = ds.dataset('d8').filter(ds.field('x') > 0)
def load():
    return DS.to_table()['x'].to_pylist()
"""
DATASET_BLOCKS = {
    "to_table": "d1.to_table()['x'].to_pylist()",
    "read": "d2.read()['x'].to_pylist()",
    "head": "d3.head(5)['x'].to_pylist()",
    "count": "holder['d'].count_rows()",
    "fragment": "fragment.to_table()['x'].to_pylist()",
    "collect": "lazy.collect()['x'].to_list()",
    "helper": "load()",
    "filtered": "filtered.to_table()['x'].to_pylist()",
}


# -- a memo filled above the block by a compiled reader ---------------------------------------

MEMO_MODULE = """
import functools, sqlite3
import polars as pl, pyarrow.parquet as pq

@functools.lru_cache(maxsize=None)
def by_polars():
    return pl.read_parquet('m1.parquet')['x'].to_list()

@functools.lru_cache(maxsize=None)
def by_pyarrow():
    return pq.read_table('m2.parquet')['x'].to_pylist()

@functools.lru_cache(maxsize=None)
def by_lazy():
    return pl.scan_parquet('m3.parquet').collect()['x'].to_list()

@functools.lru_cache(maxsize=None)
def by_sqlite():
    con = sqlite3.connect('file:m4.db?mode=ro', uri=True)
    try:
        return [r[0] for r in con.execute('select x from t')]
    finally:
        con.close()
"""
MEMOS = ["by_polars", "by_pyarrow", "by_lazy", "by_sqlite"]


def test_a_dataset_counts_by_its_files_stamps_and_what_it_scans(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from statecache.key.values import Fingerprinter

    def key(value: object) -> bytes:
        return Fingerprinter().value(value, "d")

    write_parquet(tmp_path / "dd" / "p.parquet", 1)
    made = ds.dataset(tmp_path / "dd")
    assert key(made) == key(ds.dataset(tmp_path / "dd"))  # the same files, unchanged
    over = made.filter(ds.field("x") > 0)  # a filtered dataset has no fragments to pickle
    assert key(over) == key(ds.dataset(tmp_path / "dd").filter(ds.field("x") > 0))
    assert key(over) != key(made.filter(ds.field("x") > 1))
    before = [key(made), key(over), key(pq.ParquetDataset(tmp_path / "dd")), key(next(iter(made.get_fragments())))]
    pq.write_table(pa.table({"x": [1]}), tmp_path / "dd" / "p.parquet")  # the same content, rewritten
    after = [key(made), key(over), key(pq.ParquetDataset(tmp_path / "dd")), key(next(iter(made.get_fragments())))]
    assert all(b != a for b, a in zip(before, after, strict=True))


def write_db(path: Path, value: int) -> None:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.execute("create table t (x)")
    con.execute("insert into t values (?)", (value,))
    con.commit()
    con.close()


def test_compiled_readers_given_uris_and_globs_datasets_made_above_and_memos(project: Project) -> None:
    """One script for the three classes that need pyarrow and polars (their imports are most
    of a run's cost): each block reads its own files, and the change rewrites every one."""
    pytest.importorskip("polars")
    pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    files = ["u1", "u2", "u3", "u4", "u5", "p1", "p2", "l1", "l2", "g/a/x", "m1", "m2", "m3"]
    files += [f"d{i}/p" for i in range(1, 9)]
    for name in files:
        write_parquet(project.root / f"{name}.parquet", 1)
    write_db(project.root / "m4.db", 1)
    project.write("src/__init__.py", "")
    project.write("src/memos.py", MEMO_MODULE)
    reads = {**URI_BLOCKS, **DATASET_BLOCKS, **{m: f"sum(memos.{m}())" for m in MEMOS}}
    blocks = "".join(f"with sc.checkpoint({n!r}):\n    y_{n} = {read}\nprint({n!r}, y_{n})\n"
                     for n, read in reads.items())
    project.write("script.py", HEAD + "import pathlib\nimport pandas as pd, polars as pl, pyarrow.parquet as pq\n"
                  "class Named:\n    def __init__(self, p):\n        self.p = p\n"
                  "    def __fspath__(self):\n        return self.p\n" + DATASET_ABOVE
                  + "from src import memos\n" + "".join(f"memos.{m}()\n" for m in MEMOS) + blocks)

    def change() -> None:
        for name in files:
            if name not in ("l1", "g/a/x"):  # the list's second file; a new match of the glob
                # two rows, so that a dataset's count_rows differs too
                pq.write_table(pa.table({"x": [2, 2]}), project.root / f"{name}.parquet")
        write_parquet(project.root / "g" / "b" / "x.parquet", 3)  # in a folder that is new too
        write_db(project.root / "m4.db", 5)

    after = check_cycle(project, list(reads), change, list(reads))
    assert "glob [1, 3]" in after.stdout and "list [1, 2, 2]" in after.stdout


# -- folders the block makes, and relative paths opened after a chdir -------------------------

FOLDER_BLOCKS = {
    # the script clears each output folder before its block; the block makes it and lists it
    "mkdir_path": ("shutil.rmtree('o1', ignore_errors=True)\n",
                   "    pathlib.Path('o1').mkdir()\n    pathlib.Path('o1/a.txt').write_text('a')\n"
                   "    mkdir_path = sorted(os.listdir('o1'))\n"),
    "makedirs_nested": ("shutil.rmtree('o2', ignore_errors=True)\n",
                        "    os.makedirs('o2/sub')\n    open('o2/sub/b.txt', 'w').close()\n"
                        "    makedirs_nested = sorted(e.name for e in os.scandir('o2/sub')) + os.listdir('o2')\n"),
    # an input folder the block makes sure exists is still an input: a new file in it counts
    "existing": ("", "    os.makedirs('inbox', exist_ok=True)\n    existing = sorted(os.listdir('inbox'))\n"),
    "chdir_read": ("", "    os.chdir('sub')\n    chdir_read = open('d.txt').read()\n    os.chdir('..')\n"),
    "chdir_up": ("", "    os.chdir('sub')\n    chdir_up = open('../top.txt').read()\n    os.chdir('..')\n"),
    "chdir_exists": ("", "    os.chdir('sub')\n    chdir_exists = os.path.exists('later.txt')\n    os.chdir('..')\n"),
    "chdir_list": ("", "    os.chdir('sub2')\n    chdir_list = sorted(os.listdir('.'))\n    os.chdir('..')\n"),
}


def test_folders_the_block_makes_and_paths_opened_after_a_chdir(project: Project) -> None:
    project.write("inbox/one.txt", "1")
    project.write("sub/d.txt", "1")
    project.write("top.txt", "1")
    project.write("sub2/x.txt", "1")
    blocks = "".join(f"{above}with sc.checkpoint({n!r}):\n{body}print({n!r}, {n})\n"
                     for n, (above, body) in FOLDER_BLOCKS.items())
    project.write("script.py", HEAD + "import pathlib, shutil\n" + blocks)

    def change() -> None:
        project.write("inbox/two.txt", "2")
        project.write("sub/d.txt", "2")
        project.write("top.txt", "2")
        project.write("sub/later.txt", "")
        project.write("sub2/y.txt", "")

    check_cycle(project, list(FOLDER_BLOCKS), change, list(FOLDER_BLOCKS)[2:])


def test_a_folder_the_block_makes_and_lists_is_its_absence_not_a_listing(tmp_path: Path) -> None:
    cache = tmp_path / ".statecache"
    cache.mkdir()
    (tmp_path / "before").mkdir()
    with FileRecorder() as recorder:
        os.makedirs(tmp_path / "made" / "deep")
        (tmp_path / "made" / "deep" / "f.txt").write_text("x")
        os.listdir(tmp_path / "made" / "deep")
        os.makedirs(tmp_path / "before", exist_ok=True)  # there already: an input folder
        os.listdir(tmp_path / "before")
    records = {(r["path"], r["kind"]) for r in snapshot(recorder, [str(cache)])}
    deep = str(tmp_path / "made" / "deep")
    assert (deep, "missing") in records and (deep, "dir") not in records
    assert (str(tmp_path / "before"), "dir") in records
    # the file written into a folder whose absence is an input is no output a hit could find
    assert not any(kind == "output" for _, kind in records)


def test_a_relative_path_after_a_chdir_counts_from_the_start_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("1")
    (tmp_path / "top.txt").write_text("1")
    start = os.getcwd()
    os.chdir(tmp_path)
    try:
        with FileRecorder() as recorder:
            os.chdir("sub")
            try:
                open("d.txt").close()
                open("../top.txt").close()
            finally:
                os.chdir("..")
        records = {r["path"]: r for r in snapshot(recorder)}
        assert records[str(tmp_path / "sub" / "d.txt")]["relative"] == os.path.join("sub", "d.txt")
        assert records[str(tmp_path / "top.txt")]["relative"] == "top.txt"
        assert all(changed_record(r) is None for r in records.values())
        os.chdir("sub")  # the next lookup from elsewhere: another file, so a miss
        assert changed_record(records[str(tmp_path / "top.txt")]) is not None
    finally:
        os.chdir(start)


# -- the files a block writes: a hit needs them there -----------------------------------------

OUTPUT_BLOCKS = {
    "report": ("", "    with open('report.txt', 'w') as f:\n        f.write('42')\n    report = 42\n"),
    "npsave": ("", "    np.save('arr.npy', np.arange(3))\n    npsave = 3\n"),
    "replace": ("", "    with open('final.tmp', 'w') as f:\n        f.write('v')\n"
                    "    os.replace('final.tmp', 'final.txt')\n    replace = 'v'\n"),
    # written to the temporary directory: scratch, which the script removes after the block
    "scratch": ("", "    fd, scratch_path = tempfile.mkstemp()\n    os.write(fd, b's')\n    os.close(fd)\n"
                    "    scratch = 's'\n"),
    "deleted": ("", "    with open('gone.txt', 'w') as f:\n        f.write('g')\n    os.remove('gone.txt')\n"
                    "    deleted = 'g'\n"),
    # an output the script changes after the block (a log) is still the block's output
    "appended": ("", "    with open('log.txt', 'w') as f:\n        f.write('start\\n')\n    appended = 1\n"),
    # a file the block writes and reads back is its scratch: the script clears it before the
    # block, and every run after the first hits
    "cleared": ("if os.path.exists('cleared.txt'):\n    os.remove('cleared.txt')\n",
                "    with open('cleared.txt', 'w') as f:\n        f.write('c')\n"
                "    cleared = open('cleared.txt').read()\n"),
}
OUTPUT_AFTER = """
if os.path.exists(scratch_path):
    os.remove(scratch_path)
with open('log.txt', 'a') as f:
    f.write('more\\n')
print('files', [p for p in ('report.txt', 'arr.npy', 'final.txt', 'gone.txt') if os.path.exists(p)])
"""


def test_the_files_a_block_writes_are_there_after_a_hit(project: Project) -> None:
    pytest.importorskip("numpy")
    blocks = "".join(f"{above}with sc.checkpoint({n!r}):\n{body}print({n!r}, {n})\n"
                     for n, (above, body) in OUTPUT_BLOCKS.items())
    project.write("script.py", HEAD + "import tempfile\nimport numpy as np\n" + blocks + OUTPUT_AFTER)

    def change() -> None:  # the user cleans the outputs
        for name in ("report.txt", "arr.npy", "final.txt"):
            (project.root / name).unlink()

    after = check_cycle(project, list(OUTPUT_BLOCKS), change, ["report", "npsave", "replace"])
    assert "'report.txt', which the block wrote, is gone" in after.stderr
    assert "'final.txt', which the block wrote, is gone" in after.stderr
    assert "files ['report.txt', 'arr.npy', 'final.txt']" in after.stdout


def test_an_output_record_is_checked_by_the_lookup_and_parsed(tmp_path: Path) -> None:
    (tmp_path / "out.csv").write_text("x")
    record = {"path": str(tmp_path / "out.csv"), "kind": "output"}
    assert changed_record(dict(record)) is None
    (tmp_path / "out.csv").write_text("changed since: a log the script appends to")
    assert changed_record(dict(record)) is None
    (tmp_path / "out.csv").unlink()
    assert changed_record(dict(record)) == f"'{tmp_path / 'out.csv'}', which the block wrote, is gone"
    (tmp_path / "out.csv").mkdir()  # a folder where the file was is no output either
    assert changed_record(dict(record)) is not None
    meta = {"format": 1, "pickler": "pickle", "variables": {}, "state_size": 0, "python": "3.11",
            "statecache_version": "0", "signed": False, "files": [record]}
    assert parse_meta(meta)["files"] == [record]
    with pytest.raises(EntryError, match="expected one of file, dir, missing, output"):
        parse_meta({**meta, "files": [{"path": "p", "kind": "written"}]})
