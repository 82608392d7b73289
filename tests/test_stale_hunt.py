"""Red team, second pass: stale hits (and needless misses) found by running research scripts
as a user does. Each hole is a strict xfail naming the code that does not see it, so that the
fix turns the xfail into a failure asking for the mark to go. Every case runs a real script in
subprocesses against a cache under tmp_path, checks that an unchanged rerun hits (so a library
that never caches cannot pass), makes one change a user makes, and compares the next run with a
fresh run under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project
from test_redteam import HEAD, assert_recomputes, first, fresh


def hits_unchanged(project: Project, *args: str, env: dict[str, str] | None = None) -> None:
    """The first run computes 'a' and an unchanged rerun hits it."""
    first(project, *args, env=env)
    again = project.run(*args, env=env)
    assert again.hit("a"), again.stderr


def write_parquet(path: Path, value: int) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": [value]}), path)


# -- a compiled reader held by something other than a module-level name ----------------------

HELD_READERS = {
    "dispatch-dict": "LOADERS = {'.csv': pl.read_csv}\ndef load(p):\n    return LOADERS['.csv'](p)\n",
    "partial": "import functools\nread = functools.partial(pl.read_csv, separator=',')\ndef load(p):\n    return read(p)\n",
    "default-argument": "def load(p, reader=pl.read_csv):\n    return reader(p)\n",
    "class-attribute": "class Loader:\n    read = staticmethod(pl.read_csv)\ndef load(p):\n    return Loader.read(p)\n",
    "closure": "def make():\n    r = pl.read_csv\n    return lambda p: r(p)\nload = make()\n",
}


def test_a_reader_held_in_a_dispatch_table_partial_default_or_closure(project: Project) -> None:
    """One script, one checkpoint per holder (each its own module under src/): an unchanged
    rerun hits every one, and after an edit of the file they read each recomputes and prints
    what a fresh run prints."""
    pytest.importorskip("polars")
    project.write("src/__init__.py", "")
    script = HEAD
    for holder, code in HELD_READERS.items():
        module = holder.replace("-", "_")
        project.write(f"src/{module}.py", "import polars as pl\n" + code)
        script += (f"from src.{module} import load\nwith sc.checkpoint({holder!r}):\n"
                   f"    y = load('d.csv')['x'].to_list()\nprint({holder!r}, y)\n")
    project.write("script.py", script)
    project.write("d.csv", "x\n1\n")
    computed = project.run("script.py")
    unchanged = project.run("script.py")
    for holder in HELD_READERS:
        assert computed.computed(holder), f"{holder}: the first run did not compute\n{computed.stderr}"
        assert unchanged.hit(holder), f"{holder}: an unchanged rerun did not hit\n{unchanged.stderr}"
    project.write("d.csv", "x\n22\n")
    changed = project.run("script.py")
    expected = fresh(project, "script.py").splitlines()
    again = project.run("script.py")
    for holder in HELD_READERS:
        line = f"{holder} [22]"
        assert line in expected, expected
        assert changed.computed(holder) and line in changed.stdout.splitlines(), f"{holder}: stale after the edit\n{changed.stdout}"
        assert again.hit(holder), f"{holder}: the rerun after the edit did not hit\n{again.stderr}"
    assert changed.stdout.splitlines() == expected


# -- memoised helpers ------------------------------------------------------------------------


def test_an_lru_cache_helper_warmed_above_the_block(project: Project) -> None:
    project.write("src/__init__.py", "")
    project.write("src/vocab.py", "import functools\n\n@functools.lru_cache(maxsize=None)\n"
                  "def load_vocab():\n    with open('vocab.txt') as f:\n        return f.read().split()\n")
    project.write("vocab.txt", "a b c")
    project.write("script.py", HEAD + "from src.vocab import load_vocab\nprint('size', len(load_vocab()))\n"
                  "with sc.checkpoint('a'):\n    y = sorted(load_vocab())\nprint(y)\n")
    hits_unchanged(project, "script.py")
    project.write("vocab.txt", "a b c d")
    assert_recomputes(project, "script.py")


# -- a user module saved while the script runs (bac63e1, key/code.py) -----------------------


def test_a_module_saved_while_running_and_recompiled_by_another_run(project: Project) -> None:
    # key/importwatch.py keeps the text each module loaded from: the shared .pyc is not trusted
    project.write("helpers.py", "import sys\nsys.setrecursionlimit(5000)\n\n\ndef f():\n    return sys.getrecursionlimit()\n")
    project.write("script.py", HEAD + """
import pathlib, subprocess
import helpers
if os.environ.get("EDIT"):  # the user saves helpers.py and starts a second run meanwhile
    p = pathlib.Path(helpers.__file__)
    p.write_text(p.read_text().replace("5000", "60000"))
    subprocess.run([sys.executable, "-c", "import helpers"], check=True)
with sc.checkpoint('a'):
    y = helpers.f()
print(y)
""")
    env = {"PYTHONDONTWRITEBYTECODE": ""}  # import writes the .pyc, as a user's python does
    edited = project.run("script.py", env={**env, "EDIT": "1"})
    assert edited.computed("a") and edited.stdout == "5000\n", edited.stderr
    assert_recomputes(project, "script.py", env=env)


# (a tensor read with torch.from_file or safetensors: tests/test_torch_keys.py, beside torch's
# other inputs, so that one script pays for import torch)
