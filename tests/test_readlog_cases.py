"""The read log (key/readlog.py) on what scripts do: statecache's own reads of its cache made
under a user function are not that function's reads (else a helper calling a cached_setup
function misses on every run), and a memo that read one file before and after an edit keys it
as changed (else the next run, with the new content, restores what the old content gave)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from conftest import Project
from test_redteam import HEAD, fresh

BLOCKS = ("plain", "memo", "module", "nested")

# four helpers above their blocks, each reaching a cached_setup function (here, in a module)
CACHED_SETUP_SCRIPT = HEAD + """
import functools
from tables import table, prepare_there

@sc.cached_setup
def squares(n):
    return [i * i for i in range(n)]

def plain():
    return sum(squares(5))

@functools.lru_cache(maxsize=None)
def memo():
    return sum(squares(6))

def nested():
    return plain() + prepare_there()

warm = plain(), memo(), prepare_there(), nested()
with sc.checkpoint('plain'):
    a = plain() * 2
with sc.checkpoint('memo'):
    b = memo() * 2
with sc.checkpoint('module'):
    c = prepare_there() * 2
with sc.checkpoint('nested'):
    d = nested() * 2
print(a, b, c, d)
"""

TABLES = """
import statecache as sc

@sc.cached_setup
def table(n):
    return list(range(n))

def prepare_there():
    return sum(table(7))
"""


def test_helpers_calling_cached_setup_functions_keep_their_hits(project: Project) -> None:
    project.write("tables.py", TABLES)
    project.write("script.py", CACHED_SETUP_SCRIPT)
    oracle = fresh(project, "script.py")
    for env in ({}, {"STATECACHE_DIR": str(project.root / "elsewhere")}):
        computed = project.run("script.py", env=env)
        assert computed.stdout == oracle and all(computed.computed(b) for b in BLOCKS), computed.stderr
        for _ in range(2):  # the first rerun loads the cached_setup entries, the second sees the same
            again = project.run("script.py", env=env)
            assert again.stdout == oracle, again.stderr
            assert all(again.hit(b) for b in BLOCKS), again.stderr


MEMOS = """
import functools
import numpy as np

@functools.lru_cache(maxsize=None)
def by_lru(i):
    with open('one.txt') as f:
        return f.read().split()[i]

@functools.cache
def by_cache(i):
    return int(np.loadtxt('two.txt')[i])

_SEEN = {}

def by_dict(i):
    if i not in _SEEN:
        with open('three.txt') as f:
            _SEEN[i] = f.read().split()[i]
    return _SEEN[i]
"""

MEMO_SCRIPT = HEAD + """
from memos import by_lru, by_cache, by_dict
early = by_lru(0), by_cache(0), by_dict(0)
if os.path.exists('edit.flag'):  # stands for an editor saving the files during the slow setup
    os.remove('edit.flag')
    for name, text in (('one.txt', '9 2'), ('two.txt', '8 2'), ('three.txt', '7 2')):
        with open(name, 'w') as f:
            f.write(text)
late = by_lru(1), by_cache(1), by_dict(1)
with sc.checkpoint('lru'):
    x = by_lru(0)
with sc.checkpoint('cache'):
    y = by_cache(0)
with sc.checkpoint('dict'):
    z = by_dict(0)
print(x, y, z)
"""


def test_memos_filled_before_an_edit_and_read_again_after_it_recompute(project: Project) -> None:
    project.write("memos.py", MEMOS)
    for name in ("one.txt", "two.txt", "three.txt"):
        project.write(name, "1 2")
    project.write("edit.flag", "")
    project.write("script.py", MEMO_SCRIPT)
    first = project.run("script.py")  # saw the edits while it ran: what it saved must not be reused
    assert first.stdout.split() == ["1", "1", "1"], first.stderr
    after = project.run("script.py")
    assert after.stdout == fresh(project, "script.py") and after.stdout.split() == ["9", "8", "7"], after.stderr
    again = project.run("script.py")
    assert again.stdout == after.stdout and all(again.hit(b) for b in ("lru", "cache", "dict")), again.stderr


def _user_function(tmp_path: Path, name: str) -> Any:
    """A function of a user's file ``tmp_path/<name>.py`` that notes its reads as the audit
    hook would (code objects of equal source compare equal: each name is its own code)."""
    from statecache.key import readlog

    scope: dict[str, Any] = {"sys": sys, "remember": readlog.remember}
    source = f"def {name}(p):\n    remember(p, sys._getframe())\n    return open(p).read()\n"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    exec(compile(source, str(path), "exec"), scope)
    return scope[name]


def test_a_file_read_under_two_stamps_keys_as_changed(tmp_path: Path) -> None:
    """In-process: the digest after reads under two stamps differs from the digest of a
    function that read the file once, as it is now, and from the one of the first stamp."""
    from statecache.key import readlog

    data = tmp_path / "d.txt"
    data.write_text("old")
    twice, once = _user_function(tmp_path, "twice"), _user_function(tmp_path, "once")
    twice(str(data))
    before = readlog.earlier_reads_digest(twice.__code__)
    data.write_text("new!")
    twice(str(data))
    once(str(data))
    assert b"changed since read" in readlog.earlier_reads_digest(twice.__code__)
    assert readlog.earlier_reads_digest(twice.__code__) not in (before, readlog.earlier_reads_digest(once.__code__))
    assert b"changed since read" not in readlog.earlier_reads_digest(once.__code__)


def test_statecaches_own_files_in_a_cache_directory_are_no_reads(tmp_path: Path) -> None:
    """In-process: an entry and a lock in the default cache directory beside the function's
    file are left out; a file of the same name elsewhere is a read like any other."""
    from statecache.key import readlog

    load = _user_function(tmp_path, "load_own")
    key = "0123456789abcdef" * 2
    inside = tmp_path / ".statecache" / "table"
    outside = tmp_path / "data"
    for folder in (inside, outside):
        folder.mkdir(parents=True)
        for name in (f"{key}.sc", f"{key}.sc.lock"):
            (folder / name).write_text("x")
            load(str(folder / name))
    assert [os.path.dirname(p) for p, _ in readlog.earlier_reads(load.__code__)] == [str(outside)] * 2
