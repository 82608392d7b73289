"""Reads that no audit event names (issue 11, class 3): what a ``DirEntry`` of ``os.scandir``
answers, functions bound before ``import statecache`` (``from os import stat``), polars plans
run by other methods than ``collect`` (the schema, ``explain``, ``describe``, ``collect_all``
of a generator, ``DataFrame.deserialize``), pyarrow's ``get_file_info`` of paths and of a
folder, safetensors' ``safe_open`` bound first, and polars' seed. Every case is a checkpoint of a script shared by
its kind, run by ``run_cases`` in subprocesses against a cache under tmp_path: an unchanged
rerun hits, one change follows, and the next run prints what a ``STATECACHE_DISABLE=1`` run
prints and its rerun hits. In-process unit tests pin the stand-ins' faithfulness."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Project
from test_files_seen import write_db
from test_stale_hunt3 import Outcome, assert_case, make_project, run_cases

__all__ = ["make_project"]  # the module-scoped fixture, imported for pytest to find here

# -- the standard library: scandir entries and names bound before import statecache -----------

OS_SCRIPT = """
import os
from os import scandir, stat  # bound before statecache wraps them
import statecache as sc
with sc.checkpoint('entry-is-file'):  # d/x becomes a folder: the same names in d
    y = sorted(e.name for e in os.scandir('d') if e.is_file())
print('entry-is-file=', y)
with sc.checkpoint('scandir-bound-first'):  # s/b is filled: the same names in s
    y = sorted(e.name for e in scandir('s') if e.stat().st_size > 0)
print('scandir-bound-first=', y)
with sc.checkpoint('stat-bound-first'):  # m.txt is touched: same size, same content
    y = stat('m.txt').st_mtime_ns > 1_700_000_050 * 10**9
print('stat-bound-first=', y)
with sc.checkpoint('entry-in-with'):  # a context-managed scandir, the newest entry by mtime
    with os.scandir('n') as found:
        y = max(found, key=lambda e: e.stat().st_mtime_ns).name
    del found
print('entry-in-with=', y)
with sc.checkpoint('iterdir-stat'):  # Path.iterdir, then each path's stat
    from pathlib import Path
    y = max(Path('n').iterdir(), key=lambda p: p.stat().st_mtime_ns).name
print('iterdir-stat=', y)
with sc.checkpoint('walk-getsize'):  # os.walk, then the sizes
    y = sorted(n for r, _, ns in os.walk('s') for n in ns if os.path.getsize(os.path.join(r, n)) > 0)
print('walk-getsize=', y)
from sqlite3 import connect  # after statecache: the watched connect, the same in every run
with sc.checkpoint('connect-bound-after'):  # a later block, whose key must not depend on that
    con = connect('o.db')
    y = con.execute('select sum(x) from t').fetchone()[0]
    con.close()
    del con
print('connect-bound-after=', y)
"""

OS_CASES = ["entry-is-file", "scandir-bound-first", "stat-bound-first", "entry-in-with", "iterdir-stat",
            "walk-getsize", "connect-bound-after"]


def _write_os_data(root: Path, version: int) -> None:
    for folder in ("d", "s", "n"):
        (root / folder).mkdir(exist_ok=True)
    if version == 1:
        for name in ("w", "x"):
            (root / "d" / name).write_text(name)
        (root / "s" / "a").write_text("1")
        (root / "s" / "b").write_text("")
        (root / "m.txt").write_text("m")
        os.utime(root / "m.txt", (1_700_000_000, 1_700_000_000))
        for name, when in (("a", 1_700_000_100), ("b", 1_700_000_000)):
            (root / "n" / name).write_text(name)
            os.utime(root / "n" / name, (when, when))
    else:
        (root / "d" / "x").unlink()
        (root / "d" / "x").mkdir()
        (root / "s" / "b").write_text("2")
        os.utime(root / "m.txt", (1_700_000_100, 1_700_000_100))
        os.utime(root / "n" / "b", (1_700_000_200, 1_700_000_200))
    write_db(root / "o.db", version)


@pytest.fixture(scope="module")
def os_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    project = make_project("oslooks")
    project.write("script.py", OS_SCRIPT)
    _write_os_data(project.root, 1)
    return run_cases(project, "script.py", OS_CASES, lambda: _write_os_data(project.root, 2))


@pytest.mark.parametrize("case", OS_CASES)
def test_what_a_scandir_entry_or_a_function_bound_first_answered(os_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(os_outcomes, case)


# -- polars, pyarrow, safetensors: plans, listings, a seed and a reader bound first ------------

LIB_SCRIPT = """
import os
import importlib.util
if importlib.util.find_spec('safetensors'):
    from safetensors import safe_open  # bound before statecache stands in for it
import statecache as sc
import polars as pl
import pyarrow.fs as pafs
lazy = pl.scan_csv('lazy.csv')  # a plan made above the blocks, resolved or run in them
with sc.checkpoint('LazyFrame.schema'):
    y = list(lazy.schema)
print('LazyFrame.schema=', y)
with sc.checkpoint('LazyFrame.explain'):
    y = lazy.explain().splitlines()[1]
print('LazyFrame.explain=', y)
with sc.checkpoint('LazyFrame.describe'):
    y = lazy.describe().columns
print('LazyFrame.describe=', y)
with sc.checkpoint('collect_all-of-a-generator'):
    y = pl.collect_all(f for f in [lazy.head(1)])[0].columns
print('collect_all-of-a-generator=', y)
with sc.checkpoint('get_file_info-of-paths'):
    y = pafs.LocalFileSystem().get_file_info([os.path.abspath('sized.bin')])[0].size
print('get_file_info-of-paths=', y)
with sc.checkpoint('get_file_info-one-level'):
    infos = pafs.LocalFileSystem().get_file_info(pafs.FileSelector(os.path.abspath('top')))
    y = sorted(i.base_name for i in infos)
    del infos
print('get_file_info-one-level=', y)
with sc.checkpoint('FileSystem.from_uri'):  # a filesystem pyarrow makes itself
    fs, base = pafs.FileSystem.from_uri('file://' + os.path.abspath('top'))
    y = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base)))
    del fs, base
print('FileSystem.from_uri=', y)
with sc.checkpoint('DataFrame.deserialize'):
    y = pl.DataFrame.deserialize('frame.bin')['x'].to_list()
print('DataFrame.deserialize=', y)
with sc.checkpoint('polars-seed-above'):
    y = pl.DataFrame({'x': list(range(50))}).sample(4, shuffle=True)['x'].to_list()
print('polars-seed-above=', y)
if importlib.util.find_spec('safetensors'):
    with sc.checkpoint('safe_open-bound-first'):
        with safe_open('w.safetensors', framework='np') as f:
            y = f.get_tensor('w').tolist()
        del f
    print('safe_open-bound-first=', y)
"""

LIB_CASES = ["LazyFrame.schema", "LazyFrame.explain", "LazyFrame.describe", "collect_all-of-a-generator",
             "get_file_info-of-paths", "get_file_info-one-level", "FileSystem.from_uri", "DataFrame.deserialize", "polars-seed-above", "safe_open-bound-first"]


@pytest.fixture(scope="module")
def lib_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    pl = pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    project = make_project("libreads")
    project.write("script.py", LIB_SCRIPT.replace("import polars as pl", "import polars as pl\n"
                                                  "pl.set_random_seed(int(os.environ['SEED']))"))
    tensors = importlib.util.find_spec("safetensors") is not None

    def write(version: int) -> None:
        project.write("lazy.csv", "x\n1\n" if version == 1 else "x,z\n2,3\n")
        project.write("sized.bin", "ab" * version)
        (project.root / "top" / "sub").mkdir(parents=True, exist_ok=True)
        project.write(f"top/f{version}", "")  # a new name in the folder listed
        pl.DataFrame({"x": [version]}).serialize(str(project.root / "frame.bin"))
        project.write("top/sub/deeper", str(version))  # below the one level: no change
        if tensors:
            import numpy as np
            from safetensors.numpy import save_file

            save_file({"w": np.array([version, 2], dtype=np.int64)}, str(project.root / "w.safetensors"))

    write(1)
    cases = [case for case in LIB_CASES if tensors or not case.startswith("safe")]
    return run_cases(project, "script.py", cases, lambda: write(2), env={"SEED": "1"}, env_after={"SEED": "2"})


@pytest.mark.parametrize("case", LIB_CASES)
def test_what_a_compiled_library_read_listed_or_drew(lib_outcomes: dict[str, Outcome], case: str) -> None:
    if case not in lib_outcomes:
        pytest.skip("safetensors is not installed")
    assert_case(lib_outcomes, case)


# -- in process: the stand-ins behave as what they stand for --------------------------------


def test_a_scandir_entry_stand_in_is_a_dir_entry_to_the_standard_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache.key.direntries import wrap_scandir

    (tmp_path / "src" / "deep").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "src" / "deep" / "b.txt").write_text("bb")
    looks: list[tuple[str, bool]] = []
    seen = wrap_scandir(os.scandir, lambda: True, lambda path, frame, type_only: looks.append((path, type_only)),
                        lambda frame: False)
    entries = sorted(seen(tmp_path / "src"), key=lambda e: e.name)
    real = sorted(os.scandir(tmp_path / "src"), key=lambda e: e.name)
    assert all(isinstance(e, os.DirEntry) for e in entries)
    assert [(e.name, e.path, e.inode(), e.is_dir(), e.is_file(), e.is_symlink(), os.fspath(e)) for e in entries] == [
        (e.name, e.path, e.inode(), e.is_dir(), e.is_file(), e.is_symlink(), os.fspath(e)) for e in real]
    assert [e.stat().st_size for e in entries] == [e.stat().st_size for e in real]
    assert (str(tmp_path / "src" / "a.txt"), False) in looks  # the stat, told with its path
    assert (str(tmp_path / "src" / "deep"), True) in looks  # a type test of the user's code
    # what the standard library does with entries still works on the stand-ins
    monkeypatch.setattr(os, "scandir", seen)
    walked = sorted(os.path.relpath(os.path.join(r, n), tmp_path) for r, _, ns in os.walk(tmp_path / "src") for n in ns)
    assert walked == [os.path.join("src", "a.txt"), os.path.join("src", "deep", "b.txt")]
    assert sorted(glob.glob(str(tmp_path / "src" / "**" / "*.txt"), recursive=True)) == [
        str(tmp_path / "src" / "a.txt"), str(tmp_path / "src" / "deep" / "b.txt")]
    shutil.copytree(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "deep" / "b.txt").read_text() == "bb"
    with seen(tmp_path / "src") as it:
        assert len(list(it)) == 2


def test_a_stand_in_for_a_class_that_cannot_be_subclassed_makes_its_objects() -> None:
    safetensors = pytest.importorskip("safetensors")
    import statecache  # noqa: F401  (wraps safetensors' safe_open when it loads)
    from statecache.key import readers

    stand_in = safetensors.safe_open
    original = stand_in.__wrapped__
    assert original is not stand_in and getattr(stand_in, readers.READER_WRAPPER)
    assert stand_in.__name__ == original.__name__ and stand_in.__doc__ == original.__doc__
    with pytest.raises(Exception) as raised:  # what the original raises, for the same call
        stand_in("no-such-file.safetensors", framework="np")
    with pytest.raises(type(raised.value)):
        original("no-such-file.safetensors", framework="np")
    assert not isinstance(object(), stand_in) and issubclass(original, stand_in)


def test_a_local_filesystem_pyarrow_makes_or_unpickles_is_the_one_that_notes() -> None:
    pafs = pytest.importorskip("pyarrow.fs")
    import pickle

    import statecache  # noqa: F401  (stands in for pyarrow.fs's classes when it loads)

    made, path = pafs.FileSystem.from_uri("file:///tmp")
    assert type(made) is pafs.LocalFileSystem and path == "/tmp"
    assert type(pickle.loads(pickle.dumps(pafs.LocalFileSystem()))) is pafs.LocalFileSystem
    assert isinstance(made, pafs.FileSystem) and issubclass(pafs.LocalFileSystem, pafs.FileSystem)
    subtree = pafs.SubTreeFileSystem("/tmp", made)
    assert isinstance(subtree, pafs.FileSystem) and type(subtree) is pafs.SubTreeFileSystem
    again = pickle.loads(pickle.dumps(subtree))
    assert type(again) is pafs.SubTreeFileSystem and again.base_path == subtree.base_path


def test_polars_seed_counts_once_set_and_a_block_that_seeds_replays_it() -> None:
    pl = pytest.importorskip("polars")
    import statecache  # noqa: F401  (wraps pl.set_random_seed when polars loads)
    from statecache.key import rng

    def draw() -> list[int]:
        return list(pl.DataFrame({"x": list(range(50))}).sample(3, shuffle=True)["x"].to_list())

    pl.set_random_seed(7)
    before = rng.capture()
    assert before["polars"][0] == 7
    recorded = rng.records(before, rng.capture())  # a block that may have drawn: it counts
    assert "polars" in recorded and rng.changed(recorded) is None
    pl.set_random_seed(8)
    assert rng.changed(recorded) is not None  # another seed above the block: a miss
    before = rng.capture()
    pl.set_random_seed(9)  # the block seeds
    seeded = rng.records(before, rng.capture())
    pl.set_random_seed(8)
    rng.restore(seeded)  # its hit: the block's seed, and the count of seedings
    assert rng.capture()["polars"] == seeded["polars"]["after"]
    restored = draw()
    pl.set_random_seed(9)
    assert draw() == restored


def test_collect_all_of_a_generator_runs_every_frame() -> None:
    pl = pytest.importorskip("polars")
    import statecache  # noqa: F401  (wraps pl.collect_all when polars loads)

    frames = [pl.LazyFrame({"x": [1]}), pl.LazyFrame({"x": [2]})]
    assert getattr(pl.collect_all, "__wrapped__", None) is not None
    assert [df["x"][0] for df in pl.collect_all(f for f in frames)] == [1, 2]

