"""What the audit hook and the file records see (issue 11): the user's classes reached only
through objects a block unpickles, an inbox the block consumes (records taken when the block
first reads or lists, not at its end), files the block only looks at (a stat, an access check:
their answer counts, not their content) and SQLite files past the connect event (the
write-ahead log, ATTACH DATABASE).

One script holds every case as its own checkpoint (``tests/multicase.py``), so that five runs
serve them all: compute, rerun (the inboxes were consumed by the first run: they recompute,
the others hit), change every case's input at once, run (each prints what a fresh
``STATECACHE_DISABLE=1`` run prints), then rerun (everything hits).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Project, Run
from multicase import case_values, fresh_values, status

HAS_JOBLIB = importlib.util.find_spec("joblib") is not None

MODELS = """
class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


class Outer:
    class Inner:
        def apply(self, x):
            return x + 100
"""
BASES = "class Base:\n    def apply(self, x):\n        return x - 1\n"
DERIVED = "import bases\n\n\nclass Derived(bases.Base):\n    pass\n"
LATE = "class Late:\n    def apply(self, x):\n        return x * 7\n"

MAKE = """
import pickle, models, derived, late
pickle.dump(models.Scaler(3), open('m.pkl', 'wb'))
open('m.bytes', 'wb').write(pickle.dumps(models.Scaler(5)))
pickle.dump(models.Outer.Inner(), open('inner.pkl', 'wb'))
pickle.dump(derived.Derived(), open('derived.pkl', 'wb'))
pickle.dump(late.Late(), open('late.pkl', 'wb'))
""" + ("import joblib\njoblib.dump(models.Scaler(4), 'm.joblib')\n" if HAS_JOBLIB else "")

SCRIPT = """
import json, os, pickle, sqlite3, sys
from pathlib import Path
import statecache as sc
import models, derived  # imported above the blocks: nothing of them is read in a block

def show(case, value):
    print('y', case, value)

# -- 1. the user's classes reached only through an unpickled object
with sc.checkpoint('u-pickle-load'):
    with open('m.pkl', 'rb') as f:
        y = pickle.load(f).apply(10)
    del f
show('u-pickle-load', y)
with sc.checkpoint('u-loads'):
    y = pickle.loads(Path('m.bytes').read_bytes()).apply(10)
show('u-loads', y)
with sc.checkpoint('u-nested'):
    y = pickle.load(open('inner.pkl', 'rb')).apply(1)
show('u-nested', y)
with sc.checkpoint('u-base'):
    y = pickle.load(open('derived.pkl', 'rb')).apply(10)
show('u-base', y)
with sc.checkpoint('u-imported-in-block'):
    y = pickle.load(open('late.pkl', 'rb')).apply(2)  # the unpickler imports late.py
show('u-imported-in-block', y)
if JOBLIB:
    import joblib
    with sc.checkpoint('u-joblib'):
        y = joblib.load('m.joblib').apply(10)
    show('u-joblib', y)

# -- 2. an inbox the block consumes
with sc.checkpoint('i-read-removed'):
    jobs = open('in1/job').read().split() if os.path.exists('in1/job') else []
    if jobs:
        os.remove('in1/job')
show('i-read-removed', jobs)
with sc.checkpoint('i-read-moved'):
    jobs = Path('in2/job').read_text().split() if Path('in2/job').exists() else []
    if jobs:
        os.makedirs('done2', exist_ok=True)
        os.replace('in2/job', 'done2/job')
show('i-read-moved', jobs)
with sc.checkpoint('i-listed-emptied'):
    jobs = sorted(p.name for p in Path('in3').iterdir())
    for name in jobs:
        os.remove(os.path.join('in3', name))
show('i-listed-emptied', jobs)
with sc.checkpoint('i-listed-written-into'):
    jobs = sorted(os.listdir('in4'))
    Path('in4/summary.txt').write_text(str(len(jobs)))
show('i-listed-written-into', jobs)
with sc.checkpoint('i-scandir-moved-out'):
    jobs = sorted(e.name for e in os.scandir('in5'))
    os.makedirs('done5', exist_ok=True)
    for name in jobs:
        os.rename(os.path.join('in5', name), os.path.join('done5', name))
show('i-scandir-moved-out', jobs)

# -- a file the block reads and saves back as it read it: no change
with sc.checkpoint('w-config-saved-back'):
    cfg = json.loads(Path('cfg.json').read_text())
    cfg.setdefault('epochs', 3)
    Path('cfg.json').write_text(json.dumps(cfg, sort_keys=True))
show('w-config-saved-back', cfg['epochs'] * cfg['lr'])
with sc.checkpoint('w-config-replaced-back'):
    cfg = json.loads(Path('cfg2.json').read_text())
    Path('cfg2.tmp').write_text(json.dumps(cfg, sort_keys=True))
    os.replace('cfg2.tmp', 'cfg2.json')  # an atomic save
show('w-config-replaced-back', cfg['lr'])

# -- 3. files the block only looks at
with sc.checkpoint('l-getmtime'):
    y = os.path.getmtime('raw.csv') > os.path.getmtime('out.csv')
show('l-getmtime', y)
with sc.checkpoint('l-os-stat'):
    y = os.stat('stamp1').st_mtime_ns // 10**9
show('l-os-stat', y)
with sc.checkpoint('l-path-stat'):
    y = Path('stamp2').stat().st_mtime > 1_700_000_000
show('l-path-stat', y)
with sc.checkpoint('l-access-flag'):
    y = os.access('ready.flag', os.F_OK)
show('l-access-flag', y)
with sc.checkpoint('l-access-exec'):
    y = os.access('tool.sh', os.X_OK)
show('l-access-exec', y)
with sc.checkpoint('l-mode'):
    y = oct(os.stat('private.txt').st_mode & 0o777)
show('l-mode', y)
with sc.checkpoint('l-read-and-mtime'):
    y = (open('both.csv').read().strip(), os.path.getmtime('both.csv') > 1_700_000_000)
show('l-read-and-mtime', y)
with sc.checkpoint('l-exists-only'):
    y = os.path.exists('present.txt') and os.path.getsize('present.txt')
show('l-exists-only', y)

# -- 4. SQLite files past the connect event
with sc.checkpoint('s-wal'):
    con = sqlite3.connect('w.db')
    y = con.execute('select sum(x) from t').fetchone()[0]
    con.close()
    del con
show('s-wal', y)
with sc.checkpoint('s-attach'):
    con = sqlite3.connect(':memory:')
    con.execute("attach database 'a.db' as a")
    y = con.execute('select sum(x) from a.t').fetchone()[0]
    con.close()
    del con
show('s-attach', y)
above = sqlite3.connect(':memory:')  # a connection made above the block that attaches in it
with sc.checkpoint('s-attach-above', ignore=['above']):
    above.execute("attach database 'b.db' as b")
    y = above.execute('select sum(x) from b.t').fetchone()[0]
    above.execute('detach database b')
show('s-attach-above', y)
with sc.checkpoint('s-attach-wal'):
    con = sqlite3.connect(':memory:')
    con.execute("attach database 'w2.db' as w")
    y = con.execute('select sum(x) from w.t').fetchone()[0]
    con.close()
    del con
show('s-attach-wal', y)
"""

UNPICKLED = ["u-pickle-load", "u-loads", "u-nested", "u-base", "u-imported-in-block"] + (
    ["u-joblib"] if HAS_JOBLIB else [])
INBOXES = ["i-read-removed", "i-read-moved", "i-listed-emptied", "i-listed-written-into", "i-scandir-moved-out"]
LOOKS = ["l-getmtime", "l-os-stat", "l-path-stat", "l-access-flag", "l-access-exec", "l-mode", "l-read-and-mtime"]
SQLITE = ["s-wal", "s-attach", "s-attach-above", "s-attach-wal"]
SAVED_BACK = ["w-config-saved-back", "w-config-replaced-back"]
CHANGED = UNPICKLED + LOOKS + SQLITE + SAVED_BACK
CASES = CHANGED + INBOXES + ["l-exists-only"]


def table(path: Path, *values: int, wal: bool = False) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    if wal:
        con.execute("pragma journal_mode=wal")
    con.execute("create table t (x)")
    con.executemany("insert into t values (?)", [(v,) for v in values])
    con.commit()
    return con


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def prepare(project: Project) -> list[sqlite3.Connection]:
    """The project's files; the writers that keep their WAL databases open."""
    project.write("models.py", MODELS)
    project.write("bases.py", BASES)
    project.write("derived.py", DERIVED)
    project.write("late.py", LATE)
    project.write("make.py", MAKE)
    project.run("make.py")  # models trained and saved earlier
    project.write("script.py", f"JOBLIB = {HAS_JOBLIB}\n" + SCRIPT)
    for box in ("in1", "in2", "in3", "in4", "in5"):
        project.write(f"{box}/job", "a b")
    old = 1_600_000_000
    for name in ("raw.csv", "out.csv", "stamp1", "stamp2", "both.csv", "present.txt", "private.txt"):
        project.write(name, "x\n1\n")
        os.utime(project.root / name, (old, old))
    os.utime(project.root / "out.csv", (old + 10, old + 10))
    project.write("tool.sh", "#!/bin/sh\n")
    for name in ("cfg.json", "cfg2.json"):  # already resolved: saved back as it is
        project.write(name, json.dumps({"epochs": 3, "lr": 0.5}, sort_keys=True))
    (project.root / "private.txt").chmod(0o644)
    table(project.root / "a.db", 1).close()
    table(project.root / "b.db", 2).close()
    return [table(project.root / "w.db", 1, wal=True), table(project.root / "w2.db", 3, wal=True)]


def change(project: Project, writers: list[sqlite3.Connection]) -> None:
    """One change a user makes to each case's input (none to the inboxes: their first run
    consumed them)."""
    root = project.root
    edit(root / "models.py", "return x * self.k", "return x * self.k + 1")
    edit(root / "models.py", "return x + 100", "return x + 200")
    edit(root / "bases.py", "return x - 1", "return x - 2")
    edit(root / "late.py", "return x * 7", "return x * 8")
    for name in ("raw.csv", "stamp1", "stamp2", "both.csv"):
        os.utime(root / name)  # touched: same content, a new mtime
    project.write("ready.flag", "")
    (root / "tool.sh").chmod(0o755)
    (root / "private.txt").chmod(0o600)
    project.write("present.txt", "y\n2\n")  # the same size, other content: only looked at
    for name in ("cfg.json", "cfg2.json"):
        project.write(name, json.dumps({"epochs": 3, "lr": 2.0}, sort_keys=True))
    for writer in writers:  # rows committed into the -wal file, the .db untouched
        writer.execute("insert into t values (10)")
        writer.commit()
    for name in ("a.db", "b.db"):
        con = sqlite3.connect(root / name)
        con.execute("insert into t values (5)")
        con.commit()
        con.close()


@dataclass
class Runs:
    rerun: Run  # unchanged, after the first run consumed the inboxes
    rerun_fresh: dict[str, str]
    after: Run  # after the change
    fresh: dict[str, str]
    again: Run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    project = Project(tmp_path_factory.mktemp("records"))
    writers = prepare(project)
    try:
        first = project.run("script.py")
        assert all(first.computed(case) for case in CASES), first.stderr
        rerun = project.run("script.py")
        rerun_fresh = fresh_values(project)
        change(project, writers)
        after = project.run("script.py")
        fresh = fresh_values(project)
        yield Runs(rerun, rerun_fresh, after, fresh, project.run("script.py"))
    finally:
        for writer in writers:
            writer.close()


@pytest.mark.parametrize("case", CHANGED + ["l-exists-only"])
def test_an_unchanged_rerun_hits(runs: Runs, case: str) -> None:
    assert runs.rerun.hit(case), status(runs.rerun, case)


@pytest.mark.parametrize("case", CHANGED)
def test_a_change_recomputes_what_a_fresh_run_computes(runs: Runs, case: str) -> None:
    got = case_values(runs.after)
    assert not runs.after.hit(case), status(runs.after, case)
    assert got[case] == runs.fresh[case], f"{case}: {got[case]} != fresh {runs.fresh[case]}"
    assert runs.again.hit(case), status(runs.again, case)


@pytest.mark.parametrize("case", INBOXES)
def test_an_inbox_the_block_consumed_recomputes_then_hits(runs: Runs, case: str) -> None:
    got = case_values(runs.rerun)
    assert not runs.rerun.hit(case), status(runs.rerun, case)
    assert got[case] == runs.rerun_fresh[case], f"{case}: {got[case]} != fresh {runs.rerun_fresh[case]}"
    assert runs.after.hit(case) and runs.again.hit(case), status(runs.after, case)


def test_a_file_only_looked_at_is_not_read_for_its_content(runs: Runs) -> None:
    # present.txt was rewritten (same size, other bytes): the block saw only that it exists
    # and its size, so the hit is right, and it prints what a fresh run prints
    assert runs.after.hit("l-exists-only"), status(runs.after, "l-exists-only")
    assert case_values(runs.after)["l-exists-only"] == runs.fresh["l-exists-only"]


# -- in-process: the rules themselves -----------------------------------------------------------


def recorded(tmp_path: Path, body: object) -> dict[tuple[str, str], dict[str, object]]:
    """The records a block running ``body()`` leaves (chdir'ed into ``tmp_path``)."""
    from statecache.key.files import FileRecorder, seen_records

    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        with FileRecorder() as recorder:
            body()  # type: ignore[operator]
        return seen_records(recorder)
    finally:
        os.chdir(before)


def test_a_look_is_recorded_by_its_answer_and_a_read_by_its_content(tmp_path: Path) -> None:
    for name in ("exists", "size", "mtime", "read"):
        (tmp_path / name).write_text("data")

    def body() -> None:
        os.path.exists("exists")
        os.path.getsize("size")
        os.path.getmtime("mtime")
        Path("read").read_text()

    records = {Path(path).name: record for (path, _), record in recorded(tmp_path, body).items()}
    assert records["exists"]["stat_only"] and set(records["exists"]["looked"]) == {"type"}  # type: ignore[arg-type]
    assert set(records["size"]["looked"]) == {"type", "size"}  # type: ignore[arg-type]
    assert set(records["mtime"]["looked"]) == {"type", "size", "mtime_ns", "mode"}  # type: ignore[arg-type]
    assert all(records[n]["digest"] == "" for n in ("exists", "size", "mtime"))
    assert len(str(records["read"]["digest"])) == 32 and "looked" not in records["read"]


def test_a_listing_is_what_the_block_saw_when_it_listed(tmp_path: Path) -> None:
    from statecache.key.files import changed_record, listing_record

    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "a").write_text("1")
    records = recorded(tmp_path, lambda: (os.listdir("box"), (tmp_path / "box" / "b").write_text("2")))
    record = records[(str(tmp_path / "box"), "dir")]
    assert record != listing_record(str(tmp_path / "box"))
    assert changed_record(dict(record)) == f"directory {tmp_path / 'box'} changed"
    (tmp_path / "box" / "b").unlink()
    assert changed_record(dict(record)) is None


def test_installed_classes_unpickled_add_no_record(tmp_path: Path) -> None:
    import collections
    import fractions

    data = pickle.dumps([collections.OrderedDict(a=1), fractions.Fraction(1, 3), stat.S_IFREG])
    assert recorded(tmp_path, lambda: pickle.loads(data)) == {}


@pytest.mark.parametrize(("database", "files"), [
    ("d.db", ["d.db", "d.db-wal"]),
    ("file:d.db?mode=ro", ["d.db", "d.db-wal"]),
    ("file:///abs/d.db", ["/abs/d.db", "/abs/d.db-wal"]),
    (":memory:", []),
    ("file:x?mode=memory&cache=shared", []),
    ("", []),
])
def test_the_files_an_sqlite_database_is_read_from(database: str, files: list[str]) -> None:
    from statecache.key.databases import database_files

    assert database_files(database) == files


def test_the_watched_sqlite3_connect_is_one_object_that_pickles_by_name(tmp_path: Path) -> None:
    import statecache.key.files  # noqa: F401  (import statecache wraps sqlite3.connect)

    assert sqlite3.connect is sqlite3.dbapi2.connect
    assert pickle.loads(pickle.dumps(sqlite3.connect)) is sqlite3.connect
    sqlite3.connect(tmp_path / "x.db").close()  # and it still connects
