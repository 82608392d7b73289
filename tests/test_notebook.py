"""Real notebooks executed by a real Jupyter kernel (nbclient + ipykernel), each run in a fresh
kernel as after a restart: the second execution restores instead of running the cell (a marker
file counts the runs), shows the same outputs, and runs again when the cell, an input or a
helper cell changes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import REPO, subprocess_env
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

KERNEL = "statecache-test"


@pytest.fixture(scope="session")
def kernel_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A kernel spec that runs this test environment's Python (with this working tree on
    PYTHONPATH through the environment each test passes)."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "statecache tests",
                "language": "python",
            }
        )
    )
    return [str(root)]


class Notebook:
    """A notebook file on disk, edited cell by cell and executed in a fresh kernel each time."""

    def __init__(self, path: Path, kernel_dirs: list[str], cells: list[str]):
        self.path = path
        self.kernel_dirs = kernel_dirs
        self.cells = list(cells)
        self.save()

    def save(self) -> None:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in self.cells])
        nbformat.write(nb, self.path)

    def edit(self, index: int, text: str) -> None:
        self.cells[index] = text
        self.save()

    def run(self, **options: Any) -> Any:
        return execute(self.path, self.kernel_dirs, **options)


def execute(
    path: Path,
    kernel_dirs: list[str],
    *,
    session_name: bool = True,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    allow_errors: bool = False,
) -> Any:
    """Execute a notebook file in a new kernel, as Jupyter would (JPY_SESSION_NAME set to its
    path unless ``session_name`` is false); returns the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    extra = dict(env or {})
    if session_name:
        extra["JPY_SESSION_NAME"] = str(path)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs))
    client = NotebookClient(nb, km=km, timeout=180, allow_errors=allow_errors)
    try:
        client.execute(env=subprocess_env(**extra), cwd=str(cwd or path.parent))
    finally:
        # nbclient leaves a kernel it did not create running: stop it (and remove its
        # connection file), so no kernel outlives its test
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


def streams(cell: Any, name: str) -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == name)


def status(cell: Any) -> list[str]:
    return [line for line in streams(cell, "stderr").splitlines() if line.startswith("statecache:")]


def shown(cell: Any) -> dict[str, Any]:
    """What the user sees in a cell, statecache's own status lines left out."""
    stderr = [line for line in streams(cell, "stderr").splitlines() if not line.startswith("statecache:")]
    return {
        "stdout": streams(cell, "stdout"),
        "stderr": stderr,
        "display": [o["data"] for o in cell.outputs if o["output_type"] == "display_data"],
        "result": [o["data"] for o in cell.outputs if o["output_type"] == "execute_result"],
        "errors": [o["ename"] for o in cell.outputs if o["output_type"] == "error"],
    }


def runs(marker: Path) -> int:
    return marker.read_text().count("ran") if marker.exists() else 0


CELL = """\
%%checkpoint data
with open("marker", "a") as f:
    f.write("ran\\n")
values = [helper(i) for i in range(n)]
total = sum(values)
print("computed", values)
print("a warning on stderr", file=sys.stderr)
display(HTML("<b>bold</b>"))
len(values)
"""


def base_cells(cell: str = CELL, n: int = 3, factor: int = 10) -> list[str]:
    return [
        "%load_ext statecache",
        f"import sys\nfrom IPython.display import display, HTML\nn = {n}",
        f"def helper(x):\n    return x * {factor}",
        cell,
        "print('after', values, total)",
    ]


# two more cells in the same notebook, so that one pair of kernel runs checks them too
PROGRESS = ("%%checkpoint steps\nimport sys\nfor i in range(2000):\n"
            "    print(f'\\rstep {i}', end='', file=sys.stderr)\nprint(file=sys.stderr)\nprint('done')")
DISPLAYS = ("%%checkpoint shows\n"
            "from IPython.display import HTML, clear_output, display\n"
            "print('gone soon')\n"
            "clear_output()\n"
            "handle = display(HTML('<i>v1</i>'), display_id=True)\n"
            "print('kept')\n"
            "handle.update(HTML('<i>v2</i>'))")


def test_cell_magic_restores_replays_and_reruns_when_cell_input_or_helper_changes(
    tmp_path: Path, kernel_dirs: list[str]
) -> None:
    """A restart restores the cell and shows its outputs again, a progress bar as it was left,
    an updated and cleared display as last shown; then each kind of change reruns the cell."""
    nb = Notebook(tmp_path / "analysis.ipynb", kernel_dirs, [*base_cells(), PROGRESS, DISPLAYS])
    marker = tmp_path / "marker"

    first = nb.run()
    assert runs(marker) == 1
    cell = first.cells[3]
    assert any("'data' computing" in s for s in status(cell)), status(cell)
    assert any("'data' saved" in s for s in status(cell)), status(cell)
    seen = shown(cell)
    assert seen["stdout"] == "computed [0, 10, 20]\n"
    assert seen["stderr"] == ["a warning on stderr"]
    assert [d["text/html"] for d in seen["display"]] == ["<b>bold</b>"]
    assert [d["text/plain"] for d in seen["result"]] == ["3"]
    assert streams(first.cells[4], "stdout") == "after [0, 10, 20] 30\n"
    assert "\rstep 1999\n" in streams(first.cells[5], "stderr")
    displayed = shown(first.cells[6])

    second = nb.run()  # a fresh kernel: a restart
    assert runs(marker) == 1, "the cell body ran again"
    cell = second.cells[3]
    assert any("'data' restored" in s for s in status(cell)), status(cell)
    assert shown(cell) == seen
    assert streams(second.cells[4], "stdout") == "after [0, 10, 20] 30\n"
    # beside the notebook, named after the cell
    assert len(list((tmp_path / ".statecache" / "data").glob("*.sc"))) == 1

    steps = second.cells[5]
    assert any("'steps' restored" in s for s in status(steps))
    assert shown(steps)["stderr"] == ["step 1999"], "the bar as it was left, not its 2000 steps"
    assert shown(steps)["stdout"] == "done\n"

    shows = second.cells[6]
    assert any("'shows' restored" in s for s in status(shows))
    assert [d["text/html"] for d in shown(shows)["display"]] == ["<i>v2</i>"]
    assert shown(shows)["stdout"] == "kept\n"
    assert shown(shows) == displayed

    nb.edit(2, "def helper(x):\n    return x * 100")  # the helper cell
    out = nb.run()
    assert runs(marker) == 2
    assert streams(out.cells[4], "stdout") == "after [0, 100, 200] 300\n"
    assert shown(out.cells[3])["stdout"] == "computed [0, 100, 200]\n"

    nb.edit(1, "import sys\nfrom IPython.display import display, HTML\nn = 4")  # an input
    out = nb.run()
    assert runs(marker) == 3
    assert any("input 'n' changed" in s for s in status(out.cells[3])), status(out.cells[3])
    assert streams(out.cells[4], "stdout") == "after [0, 100, 200, 300] 600\n"

    nb.edit(3, CELL.replace("total = sum(values)", "total = sum(values) + 1"))  # the cell
    out = nb.run()
    assert runs(marker) == 4
    assert any("code changed" in s for s in status(out.cells[3])), status(out.cells[3])
    assert streams(out.cells[4], "stdout") == "after [0, 100, 200, 300] 601\n"

    # comments and blank lines are not a change
    nb.edit(3, CELL.replace("total = sum(values)", "\n# one more\ntotal = sum(values) + 1  # note"))
    out = nb.run()
    assert runs(marker) == 4
    assert any("'data' restored" in s for s in status(out.cells[3]))
    assert streams(out.cells[4], "stdout") == "after [0, 100, 200, 300] 601\n"

    # back to the first helper: that version is still cached
    nb.edit(2, "def helper(x):\n    return x * 10")
    nb.edit(3, CELL)
    nb.edit(1, "import sys\nfrom IPython.display import display, HTML\nn = 3")
    out = nb.run()
    assert runs(marker) == 4
    assert streams(out.cells[4], "stdout") == "after [0, 10, 20] 30\n"


def test_mutated_inputs_deleted_names_and_failing_cells(tmp_path: Path, kernel_dirs: list[str]) -> None:
    cells = [
        "%load_ext statecache",
        "items = [1, 2]\ntmp = 'scratch'",
        '%%checkpoint grow\nopen("marker", "a").write("ran\\n")\nitems.append(3)\ndel tmp\ndone = True',
        "print(items, done, 'tmp' in dir())",
        "%%checkpoint fails\nopen('marker-fails', 'a').write('ran\\n')\nraise ValueError('boom')",
    ]
    nb = Notebook(tmp_path / "n.ipynb", kernel_dirs, cells)
    marker = tmp_path / "marker"
    for _ in range(2):
        out = nb.run(allow_errors=True)
        assert streams(out.cells[3], "stdout") == "[1, 2, 3] True False\n"
        assert shown(out.cells[4])["errors"] == ["ValueError"]
    assert runs(marker) == 1
    assert runs(tmp_path / "marker-fails") == 2, "a failing cell is never cached"
    assert not (tmp_path / ".statecache" / "fails").exists() or not list(
        (tmp_path / ".statecache" / "fails").glob("*.sc")
    )


def test_with_checkpoint_and_cached_setup_in_cells(tmp_path: Path, kernel_dirs: list[str]) -> None:
    """Plain ``with checkpoint`` and ``@cached_setup`` in cells: the cache sits beside the
    notebook (from JPY_SESSION_NAME) even when the kernel runs elsewhere, and keys survive a
    kernel restart (ipykernel names cell files after its pid)."""
    cells = [
        "import statecache\nfactor = 5",
        "def scale(x):\n    return x * factor",
        "with statecache.checkpoint('features'):\n"
        "    open('marker', 'a').write('features\\n')\n"
        "    feats = [scale(i) for i in range(4)]",
        "@statecache.cached_setup\n"
        "def load(n):\n"
        "    global loaded_at\n"
        "    open('marker', 'a').write('load\\n')\n"
        "    loaded_at = 'first'\n"
        "    return list(range(n))\n"
        "data = load(3)",
        "print(feats, data, loaded_at)",
    ]
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    elsewhere = tmp_path / "kernel-cwd"
    elsewhere.mkdir()
    nb = Notebook(nbdir / "work.ipynb", kernel_dirs, cells)
    marker = elsewhere / "marker"  # relative paths resolve in the kernel's working directory

    for _ in range(2):
        out = nb.run(cwd=elsewhere)
        assert streams(out.cells[4], "stdout") == "[0, 5, 10, 15] [0, 1, 2] first\n"
    assert marker.read_text() == "features\nload\n"
    assert len(list((nbdir / ".statecache" / "features").glob("*.sc"))) == 1
    assert len(list((nbdir / ".statecache" / "load").glob("*.sc"))) == 1
    assert not (elsewhere / ".statecache").exists()

    nb.edit(1, "def scale(x):\n    return x * factor + 1")  # helper cell changed
    out = nb.run(cwd=elsewhere)
    assert streams(out.cells[4], "stdout") == "[1, 6, 11, 16] [0, 1, 2] first\n"
    assert marker.read_text() == "features\nload\nfeatures\n"


def test_without_a_notebook_path_the_working_directory(tmp_path: Path, kernel_dirs: list[str]) -> None:
    cells = ["%load_ext statecache", "%%checkpoint here\nx = 1"]
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    nb = Notebook(nbdir / "n.ipynb", kernel_dirs, cells)
    nb.run(session_name=False, cwd=cwd)
    assert list((cwd / ".statecache" / "here").glob("*.sc"))
    assert not (nbdir / ".statecache").exists()


def test_vs_code_notebook_path(tmp_path: Path, kernel_dirs: list[str]) -> None:
    """VS Code tells the kernel its notebook through ``__vsc_ipynb_file__`` (no JPY_SESSION_NAME)."""
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cells = [
        f"__vsc_ipynb_file__ = {str(nbdir / 'n.ipynb')!r}\n%load_ext statecache",
        "%%checkpoint magic\nx = 1",
        "import statecache\nwith statecache.checkpoint('block'):\n    y = 2",
    ]
    nb = Notebook(nbdir / "n.ipynb", kernel_dirs, cells)
    nb.run(session_name=False, cwd=cwd)
    assert list((nbdir / ".statecache" / "magic").glob("*.sc"))
    assert list((nbdir / ".statecache" / "block").glob("*.sc"))
    assert not (cwd / ".statecache").exists()


def test_line_magic_quiet_force_and_duplicate_names(tmp_path: Path, kernel_dirs: list[str]) -> None:
    cells = [
        "%load_ext statecache",
        '%%checkpoint first\nopen("marker", "a").write("first\\n")\na = 1',
        '%%checkpoint second --quiet\nopen("marker", "a").write("second\\n")\nb = 2',
        "%statecache ls",
        "%statecache clear first",
        "%statecache ls --json",
        "%statecache show second",
    ]
    nb = Notebook(tmp_path / "n.ipynb", kernel_dirs, cells)
    marker = tmp_path / "marker"
    out = nb.run()
    assert status(out.cells[1]) and not status(out.cells[2]), "--quiet prints no status line"
    listing = streams(out.cells[3], "stdout")
    assert "first" in listing and "second" in listing and "2 entries" in listing
    assert "removed first/" in streams(out.cells[4], "stdout")
    names = [e["name"] for e in json.loads(streams(out.cells[5], "stdout"))["entries"]]
    assert names == ["second"]
    shown_entry = streams(out.cells[6], "stdout")
    assert "kind        cell" in shown_entry
    assert f"source      {nb.path}:3" in shown_entry, "the notebook and the cell's number in it"

    out = nb.run(env={"STATECACHE_QUIET": "1"})
    assert marker.read_text() == "first\nsecond\nfirst\n", "cleared: computed again; kept: restored"
    assert not status(out.cells[1]) and not status(out.cells[2]), "STATECACHE_QUIET=1 is respected"

    nb.edit(2, '%%checkpoint second --force\nopen("marker", "a").write("second\\n")\nb = 2')
    nb.run()
    assert marker.read_text().count("second") == 2, "--force recomputes"

    # two cells of the (saved) notebook with one name: the second is refused
    nb.edit(2, '%%checkpoint first\nopen("marker", "a").write("second\\n")\nb = 2')
    out = nb.run(allow_errors=True)
    errors = [o for o in out.cells[1].outputs if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "StateCacheError"
    assert "cells 2, 3" in errors[0]["evalue"]


def test_bad_magic_lines_are_usage_errors(tmp_path: Path, kernel_dirs: list[str]) -> None:
    cells = [
        "%load_ext statecache",
        "%%checkpoint\nx = 1",
        "%%checkpoint ../escape\nx = 1",
        "%%checkpoint ok --unknown\nx = 1",
        "%statecache live x.py",
    ]
    out = Notebook(tmp_path / "n.ipynb", kernel_dirs, cells).run(allow_errors=True)
    usage = [c for c in out.cells[1:] if "UsageError:" in streams(c, "stderr")]
    # a bad name is one line like the other mistakes, not a traceback
    assert usage == [out.cells[1], out.cells[2], out.cells[3], out.cells[4]], [c.outputs for c in out.cells]
    assert "%%checkpoint NAME" in streams(out.cells[1], "stderr")  # the usage is shown
    assert "invalid checkpoint name '../escape'" in streams(out.cells[2], "stderr")
    assert "Traceback" not in streams(out.cells[2], "stderr") + str(out.cells[2].outputs)
    assert "unrecognized arguments: --unknown" in streams(out.cells[3], "stderr")
    assert "unknown command 'live'" in streams(out.cells[4], "stderr")
    assert not (tmp_path / ".statecache").exists()


def test_example_notebook_runs_and_restores(tmp_path: Path, kernel_dirs: list[str]) -> None:
    path = tmp_path / "notebook.ipynb"
    shutil.copy(REPO / "examples" / "notebook.ipynb", path)
    first = execute(path, kernel_dirs)
    second = execute(path, kernel_dirs)
    code = [i for i, c in enumerate(first.cells) if c.cell_type == "code"]
    statuses = [line for i in code for line in status(second.cells[i])]
    assert any("'corpus' restored" in s for s in statuses), statuses
    assert any("'index' restored" in s for s in statuses), statuses
    assert not any("computing" in s for s in statuses), statuses
    for i in code[:-1]:  # the last one lists the cache: its "last used" column moves on
        assert shown(second.cells[i]) == shown(first.cells[i])
    assert "200000 documents" in "".join(streams(first.cells[i], "stdout") for i in code)
    assert "corpus" in streams(second.cells[code[-1]], "stdout")


def test_definitions_files_ignore_mmap_and_random_state(tmp_path: Path, kernel_dirs: list[str]) -> None:
    """Functions and classes defined in a cached cell come back after a restart; data files
    the cell reads and --files globs are in the key; --ignore leaves an input out; the global
    random generator continues after a restored cell as after a computed one; --mmap restores."""
    cells = [
        "%load_ext statecache",
        "import os, random\nimport numpy as np\nrandom.seed(1)\nstamp = os.getpid()  # differs per kernel",
        "%%checkpoint data --files '*.csv' --ignore stamp --mmap\n"
        "open('marker', 'a').write('ran\\n')\n"
        "text = open('input.txt').read()\n"
        "arr = np.arange(100_000) * len(text)\n"
        "first = random.random()\n"
        "seen_stamp = stamp is not None\n"
        "def shout(s):\n"
        "    return s.upper()\n"
        "class Box:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n"
        "box = Box(text.strip())",
        "print(shout(box.v), int(arr[-1]), type(box).__name__, seen_stamp, first, random.random())",
    ]
    (tmp_path / "input.txt").write_text("abc\n")
    nb = Notebook(tmp_path / "n.ipynb", kernel_dirs, cells)
    marker = tmp_path / "marker"

    def line() -> str:
        return streams(nb.run().cells[3], "stdout")

    computed = line()
    assert computed.startswith("ABC 399996 Box True 0.134")
    assert line() == computed, "restored: same values, same random numbers after the cell"
    assert runs(marker) == 1

    (tmp_path / "input.txt").write_text("xyz\n")  # same size, new content
    assert line().startswith("XYZ 399996 Box True")
    assert runs(marker) == 2

    (tmp_path / "extra.csv").write_text("1,2\n")  # a new file matching --files
    line()
    assert runs(marker) == 3
    line()
    assert runs(marker) == 3


def test_cell_ids_sent_by_the_front_end_keep_names_unique(tmp_path: Path, kernel_dirs: list[str]) -> None:
    """JupyterLab and Notebook 7 send each cell's id with the execute request: re-running (an
    edited) cell is fine, a second cell using the same name is refused even if never saved."""
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs))
    km.start_kernel(env=subprocess_env(), cwd=str(tmp_path))
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)

        def run(code: str, cell_id: str) -> dict[str, Any]:
            content = {"code": code, "silent": False, "store_history": True,
                       "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
            msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
            kc.shell_channel.send(msg)
            reply = kc.get_shell_msg(timeout=120)
            while reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                reply = kc.get_shell_msg(timeout=120)
            return reply["content"]

        assert run("%load_ext statecache", "c0")["status"] == "ok"
        assert run("%%checkpoint shared\nx = 1", "c1")["status"] == "ok"
        assert run("%%checkpoint shared\nx = 2", "c1")["status"] == "ok", "the same cell, edited"
        refused = run("%%checkpoint shared\ny = 3", "c2")
        assert refused["status"] == "error" and refused["ename"] == "StateCacheError"
        assert "another cell of this notebook" in refused["evalue"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


VERSIONED = "%%checkpoint v --version 1\nopen('marker-v', 'a').write('ran\\n')\nprint('log line')\ny = 7"


def test_cells_key_a_helpers_global_the_environment_and_a_version(tmp_path: Path, kernel_dirs: list[str]) -> None:
    """Three cells of one notebook, each with its own marker: a helper's own inputs count (the
    global it reads, defined in yet another cell); a hit must not reopen (and empty) a file the
    cell wrote, and os.environ["N"] read by the cell is an input by value; ``--version`` keeps
    the cache across edits of the cell until the version changes."""
    cells = [
        "%load_ext statecache",
        "SCALE = 2",
        "def helper(x):\n    return x * SCALE",
        '%%checkpoint scaled\nopen("marker-scaled", "a").write("ran\\n")\nresult = helper(21)',
        "print(result)",
        VERSIONED,
        "print('y', y)",
        "%%checkpoint written\nimport os\nresult = int(os.environ['N']) * 10\n"
        "with open('out.txt', 'w') as f:\n    f.write(str(result))\n"
        "open('marker-written', 'a').write('ran\\n')",
        "print('result', result, open('out.txt').read())",
    ]
    nb = Notebook(tmp_path / "n.ipynb", kernel_dirs, cells)
    scaled, versioned, written = (tmp_path / f"marker-{m}" for m in ("scaled", "v", "written"))
    out = tmp_path / "out.txt"

    first = nb.run(env={"N": "1"})
    assert streams(first.cells[4], "stdout") == "42\n"
    assert streams(first.cells[8], "stdout") == "result 10 10\n"

    nb.edit(5, VERSIONED.replace("'log line'", "'log line, edited'"))
    second = nb.run(env={"N": "1"})
    assert streams(second.cells[4], "stdout") == "42\n" and runs(scaled) == 1
    assert runs(versioned) == 1 and streams(second.cells[6], "stdout") == "y 7\n"
    assert runs(written) == 1 and any("'written' restored" in s for s in status(second.cells[7]))
    assert out.read_text() == "10", "the hit emptied the file the cell wrote"
    assert streams(second.cells[8], "stdout") == "result 10 10\n"

    nb.edit(1, "SCALE = 3")
    nb.edit(5, VERSIONED.replace("--version 1", "--version 2"))
    third = nb.run(env={"N": "2"})
    assert streams(third.cells[4], "stdout") == "63\n" and runs(scaled) == 2
    assert runs(versioned) == 2 and any("code changed" in s for s in status(third.cells[5])), status(third.cells[5])
    assert runs(written) == 2, "os.environ['N'] changed: the cell must run again"
    assert any("os.environ['N']" in s for s in status(third.cells[7])), status(third.cells[7])
    assert streams(third.cells[8], "stdout") == "result 20 20\n"
