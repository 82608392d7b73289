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
from test_redteam import HEAD, assert_recomputes, first


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


@pytest.mark.parametrize("holder", list(HELD_READERS))
def test_a_reader_held_in_a_dispatch_table_partial_default_or_closure(project: Project, holder: str) -> None:
    pytest.importorskip("polars")
    project.write("src/__init__.py", "")
    project.write("src/io_utils.py", "import polars as pl\n" + HELD_READERS[holder])
    project.write("d.csv", "x\n1\n")
    project.write("script.py", HEAD + "from src.io_utils import load\n"
                  "with sc.checkpoint('a'):\n    y = load('d.csv')['x'].to_list()\nprint(y)\n")
    hits_unchanged(project, "script.py")
    project.write("d.csv", "x\n22\n")
    assert_recomputes(project, "script.py")


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


# -- files read by compiled code that no wrapper sees and no warning names -------------------


def test_a_tensor_read_with_torch_from_file(project: Project) -> None:
    # torch.from_file reads from C++: key/readers.py wraps it (torch.UntypedStorage.from_file,
    # inherited from compiled code, is wrapped on the class: tests/test_reads_held.py)
    pytest.importorskip("torch")
    (project.root / "d.bin").write_bytes(b"abc")
    project.write("script.py", HEAD + "import torch\nwith sc.checkpoint('a'):\n"
                  "    y = torch.from_file('d.bin', size=3, dtype=torch.uint8).tolist()\nprint(y)\n")
    hits_unchanged(project, "script.py")
    (project.root / "d.bin").write_bytes(b"xyz")
    assert_recomputes(project, "script.py")


def test_a_tensor_file_read_with_safetensors(project: Project) -> None:
    pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    import torch

    st.save_file({"w": torch.tensor([1, 2])}, str(project.root / "w.safetensors"))
    project.write("script.py", HEAD + "from safetensors.torch import load_file\n"
                  "with sc.checkpoint('a'):\n    y = load_file('w.safetensors')['w'].tolist()\nprint(y)\n")
    hits_unchanged(project, "script.py")
    st.save_file({"w": torch.tensor([3, 4])}, str(project.root / "w.safetensors"))
    assert_recomputes(project, "script.py")
