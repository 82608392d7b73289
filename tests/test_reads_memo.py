"""A memo of a user function filled above a block returns in the block what the function read
then: the block opens nothing, so it is keyed on the files the functions it reaches read
earlier in the run (``key/readlog.py``). Real scripts in subprocesses, run twice or more; the
value after an edit is compared with a fresh run under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from test_redteam import HEAD, assert_recomputes, first

# src/vocab.py: a memoised loader of vocab.txt, and the call the block makes
MEMOS = {
    "lru_cache": (
        "import functools\n\n@functools.lru_cache(maxsize=None)\ndef load():\n"
        "    with open('vocab.txt') as f:\n        return f.read().split()\n",
        "load()",
    ),
    "cache-with-an-argument": (
        "import functools\n\n@functools.cache\ndef load(path):\n"
        "    with open(path) as f:\n        return f.read().split()\n",
        "load('vocab.txt')",
    ),
    "called-through-a-helper": (
        "import functools\n\n@functools.lru_cache\ndef _read():\n    return open('vocab.txt').read().split()\n\n"
        "def load():\n    return sorted(_read())\n",
        "load()",
    ),
    "method-of-a-class": (
        "import functools\n\nclass Vocab:\n    @functools.lru_cache(maxsize=4)\n    def words(self):\n"
        "        return open('vocab.txt').read().split()\n\nV = Vocab()\n\ndef load():\n    return V.words()\n",
        "load()",
    ),
    "module-level-dict": (
        "_MEMO = {}\n\ndef load():\n    if 'v' not in _MEMO:\n        _MEMO['v'] = open('vocab.txt').read().split()\n"
        "    return _MEMO['v']\n",
        "load()",
    ),
}


@pytest.mark.parametrize("memo", list(MEMOS))
def test_a_memo_filled_above_the_block_is_keyed_on_what_it_read(project: Project, memo: str) -> None:
    module, call = MEMOS[memo]
    project.write("src/__init__.py", "")
    project.write("src/vocab.py", module)
    project.write("vocab.txt", "a b c")
    project.write("script.py", HEAD + f"from src.vocab import load\nprint('size', len({call}))\n"
                  f"with sc.checkpoint('a'):\n    y = sorted({call})\nprint(y)\n")
    computed = first(project, "script.py")
    again = project.run("script.py")
    assert again.hit("a") and again.stdout == computed.stdout, again.stderr
    project.write("vocab.txt", "a b c d")
    assert_recomputes(project, "script.py")


def test_a_file_an_unreached_helper_read_above_the_block_is_no_input(project: Project) -> None:
    # results.json is rewritten by every run; the block never calls the helper that reads it
    project.write("helpers.py", "import json\n\ndef previous():\n    try:\n        return json.load(open('results.json'))\n"
                  "    except FileNotFoundError:\n        return None\n\ndef square(n):\n    return n * n\n")
    project.write("script.py", HEAD + """
import json, time
from helpers import previous, square
print('before', previous() is not None)
with sc.checkpoint('a'):
    y = square(7)
json.dump({'y': y, 'at': time.time_ns()}, open('results.json', 'w'))
print(y)
""")
    first(project, "script.py")
    for _ in range(2):
        again = project.run("script.py")
        assert again.hit("a") and again.stdout.endswith("49\n"), again.stderr


def test_the_read_log_notes_the_reads_of_user_functions_with_their_stamp(tmp_path: Path) -> None:
    """In-process: an open from a user function is noted under its code (and its callers'),
    with the file's stamp at that read; a file outside the user's data (the stdlib) is not."""
    import os
    import sys

    from statecache.key import readlog
    from statecache.key.stamps import stat_stamp

    data = tmp_path / "d.txt"
    data.write_text("x")
    scope: dict[str, Any] = {"sys": sys, "remember": readlog.remember}
    source = "def load(p):\n    remember(p, sys._getframe())\n    return open(p).read()\n\ndef outer(p):\n    return load(p)\n"
    exec(compile(source, str(tmp_path / "user.py"), "exec"), scope)
    assert scope["outer"](str(data)) == "x"
    stamp = stat_stamp(os.stat(data))
    for name in ("load", "outer"):
        assert readlog.earlier_reads(scope[name].__code__) == ((str(data), stamp),)
    scope["load"](os.__file__)  # the stdlib's own file: no data
    assert readlog.earlier_reads(scope["load"].__code__) == ((str(data), stamp),)
    data.write_text("yy")
    scope["load"](str(data))  # the latest read's stamp counts
    assert readlog.earlier_reads(scope["load"].__code__) == ((str(data), stat_stamp(os.stat(data))),)


@pytest.mark.parametrize("memo", ["lru_cache", "module-level-dict"])
def test_a_memo_helpers_key_is_the_same_in_a_copy_of_the_project(tmp_path: Path, memo: str) -> None:
    """What a memo read earlier keys by its path inside the project and its content, so a copy
    of the project (new inodes, ctimes and absolute paths: another clone, another machine)
    hits on the cache it brought; an edit in the copy still recomputes."""
    import shutil

    module, call = MEMOS[memo]
    one = Project(tmp_path / "one")
    one.write("pyproject.toml", "[project]\nname = 'exp'\n")
    one.write("src/__init__.py", "")
    one.write("src/vocab.py", module)
    one.write("vocab.txt", "a b c")
    one.write("script.py", HEAD + f"from src.vocab import load\nprint('size', len({call}))\n"
              f"with sc.checkpoint('a'):\n    y = sorted({call})\nprint(y)\n")
    computed = first(one, "script.py")
    shutil.copytree(one.root, tmp_path / "two")
    two = Project(tmp_path / "two")
    hit = two.run("script.py")
    assert hit.hit("a") and hit.stdout == computed.stdout, hit.stderr
    two.write("vocab.txt", "a b c d")
    assert_recomputes(two, "script.py")
