"""The five wrong results of issue 10 ("Why"), each as a user meets it: real scripts, a real
kernel, ``statecache live``, run twice or more against a real cache directory. Each value after
a miss is checked against a fresh run with ``STATECACHE_DISABLE=1`` (a hit against the computing
run), and an unchanged rerun must hit, so a library that never caches cannot pass."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from _frontends import (
    child_env,
    execute_notebook,
    make_kernel_spec,
    run_live,
    run_script,
    runs,
    write_notebook,
)

KERNEL = "statecache-engine-cases"


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    return make_kernel_spec(tmp_path_factory.mktemp("kernels"), KERNEL)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def fresh(cwd: Path, python: str = sys.executable, **env: str) -> list[str]:
    """What ``python script.py`` prints with caching off, in a copy of the folder (without
    its cache and run log)."""
    copy = cwd.parent / f"{cwd.name}-fresh-{uuid.uuid4().hex[:8]}"
    shutil.copytree(cwd, copy, ignore=shutil.ignore_patterns(".statecache", "runs.log"))
    return run_script(copy, env={**env, "STATECACHE_DISABLE": "1"}, python=python).out


# -- a %%checkpoint cell that writes a file ---------------------------------------------------


def test_notebook_hit_keeps_the_file_the_cell_wrote(tmp_path: Path, kernel_dirs: list[str]) -> None:
    nb = write_notebook(
        tmp_path / "analysis.ipynb",
        [
            "%load_ext statecache",
            "%%checkpoint report\n"
            "open('runs.log', 'a').write('report\\n')\n"
            "with open('out.txt', 'w') as f:\n"
            "    f.write('x')\n"
            "n = 1",
            "print('OUT', n, repr(open('out.txt').read()))",
        ],
    )
    first = execute_notebook(nb, kernel_dirs, KERNEL)
    assert first.computed("report") and first.out == ["OUT 1 'x'"], first.text
    second = execute_notebook(nb, kernel_dirs, KERNEL)
    assert second.hit("report"), second.text
    assert runs(tmp_path, "report") == 1
    assert (tmp_path / "out.txt").read_text() == "x", "the hit emptied the file the cell wrote"
    assert second.out == ["OUT 1 'x'"]


# -- os.environ read by a %%checkpoint cell and by a cached_setup body ------------------------


def test_notebook_cell_reading_an_environment_variable_recomputes(tmp_path: Path, kernel_dirs: list[str]) -> None:
    nb = write_notebook(
        tmp_path / "analysis.ipynb",
        [
            "%load_ext statecache\nimport os",
            "%%checkpoint scaled\nopen('runs.log', 'a').write('scaled\\n')\nvalue = int(os.environ['N']) * 10",
            "print('OUT', value)",
        ],
    )
    assert execute_notebook(nb, kernel_dirs, KERNEL, N="3").out == ["OUT 30"]
    again = execute_notebook(nb, kernel_dirs, KERNEL, N="3")
    assert again.hit("scaled") and again.out == ["OUT 30"], again.text
    changed = execute_notebook(nb, kernel_dirs, KERNEL, N="30")
    assert changed.out == ["OUT 300"], f"N changed, the old value came back\n{changed.text}"
    assert changed.computed("scaled") and runs(tmp_path, "scaled") == 2


CACHED_SETUP_ENV = """
import os
import statecache as sc


@sc.cached_setup
def scaled():
    open('runs.log', 'a').write('scaled\\n')
    return int(os.environ["N"]) * 10


print("OUT", scaled())
"""


def test_cached_setup_reading_an_environment_variable_in_its_body_recomputes(tmp_path: Path) -> None:
    write(tmp_path / "script.py", CACHED_SETUP_ENV)
    assert run_script(tmp_path, env={"N": "3"}).out == ["OUT 30"]
    again = run_script(tmp_path, env={"N": "3"})
    assert again.hit("scaled") and again.out == ["OUT 30"], again.text
    changed = run_script(tmp_path, env={"N": "30"})
    assert changed.out == fresh(tmp_path, N="30") == ["OUT 300"], changed.text
    assert changed.computed("scaled") and runs(tmp_path, "scaled") == 2


# -- a project under a Python prefix, data under /dev/shm --------------------------------------

READS_DATA = """
import statecache as sc
with sc.checkpoint("load"):
    open('runs.log', 'a').write('load\\n')
    with open({path!r}) as fh:
        numbers = [int(w) for w in fh.read().split()]
print("OUT", sum(numbers))
"""


def edit_is_seen(app: Path, data: Path, python: str = sys.executable) -> None:
    """Run, rerun (hit), edit the data file (another size), rerun: the edit must be seen."""
    data.write_text("1 2 3\n")
    assert run_script(app, python=python).out == ["OUT 6"]
    again = run_script(app, python=python)
    assert again.hit("load") and again.out == ["OUT 6"], again.text
    data.write_text("1 2 3 40\n")
    changed = run_script(app, python=python)
    assert changed.out == fresh(app, python=python) == ["OUT 46"], f"the edit of {data} was not seen\n{changed.text}"
    assert changed.computed("load") and runs(app, "load") == 2


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A venv made in a temporary directory (its sys.prefix is that directory), with this
    environment's installed packages reachable through a .pth file (as a system Python's
    dist-packages are); each test makes its own project inside it."""
    venv = tmp_path_factory.mktemp("prefix") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "host-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv, python


USES_HELPERS = """
with sc.checkpoint("scaled"):
    open('runs.log', 'a').write('scaled\\n')
    value = helpers.scale(4)
print("OUT", value)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX venv layout")
def test_project_inside_the_python_prefix_sees_data_edits_and_keys_its_own_modules(venv_python: tuple[Path, str]) -> None:
    """Debian's system Python has sys.prefix /usr and Docker projects live in /usr/src/app:
    the data file there is seen when edited, and the project's own module is user code there,
    not an installed library. One script, one checkpoint for each; both edited at once."""
    venv, python = venv_python
    app = venv / "src" / "app"
    write(app / "helpers.py", "def scale(x):\n    return x * 10\n")
    write(app / "script.py", "import helpers  # loaded before statecache\n" + READS_DATA.format(path="data.txt") + USES_HELPERS)
    check = subprocess.run(
        [python, "-c", "import sys, statecache; print(sys.prefix)"],
        cwd=app,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and Path(check.stdout.strip()) == venv, check.stderr
    (app / "data.txt").write_text("1 2 3\n")
    assert run_script(app, python=python).out == ["OUT 6", "OUT 40"]
    again = run_script(app, python=python)
    assert again.hit("load") and again.hit("scaled") and again.out == ["OUT 6", "OUT 40"], again.text
    (app / "data.txt").write_text("1 2 3 40\n")
    write(app / "helpers.py", "def scale(x):\n    return x * 110\n")
    changed = run_script(app, python=python)
    assert changed.out == fresh(app, python=python) == ["OUT 46", "OUT 440"], f"an edit was not seen\n{changed.text}"
    assert changed.computed("load") and runs(app, "load") == 2, f"the edit of data.txt was not seen\n{changed.text}"
    assert changed.computed("scaled") and runs(app, "scaled") == 2, f"the edit of helpers.py was not seen\n{changed.text}"


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this system")
def test_data_under_dev_shm_is_recorded(tmp_path: Path) -> None:
    shm = Path("/dev/shm") / f"statecache-test-{uuid.uuid4().hex}"
    shm.mkdir()
    try:
        write(tmp_path / "script.py", READS_DATA.format(path=str(shm / "data.txt")))
        edit_is_seen(tmp_path, shm / "data.txt")
    finally:
        for p in shm.iterdir():
            p.unlink()
        shm.rmdir()


# -- statecache live and python share their entries -------------------------------------------

LIVE_HELPER = """
import time
import statecache as sc


def helper():
    time.sleep(0)
    return 42


with sc.checkpoint("setup"):
    open('runs.log', 'a').write('setup\\n')
    value = helper()
print("OUT", value)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="live mode needs fork")
def test_live_then_python_hits_with_a_helper_calling_a_module_function(tmp_path: Path) -> None:
    pytest.importorskip("pexpect")
    pytest.importorskip("watchfiles")
    write(tmp_path / "script.py", LIVE_HELPER)
    live = run_live(tmp_path)
    assert live.computed("setup") and live.out == ["OUT 42"], live.text
    plain = run_script(tmp_path)
    assert plain.hit("setup"), f"python did not reuse the entry that statecache live saved\n{plain.text}"
    assert plain.out == fresh(tmp_path) == ["OUT 42"]
    back = run_live(tmp_path)
    assert back.hit("setup") and back.out == ["OUT 42"], f"statecache live did not reuse python's entry\n{back.text}"
    assert runs(tmp_path, "setup") == 1


# -- an installed library that scans sys.path does not make the script's folder an input --------

WRITES_BESIDE = """
with open("result.txt", "w") as f:
    f.write(repr(found))
print("OUT", found)
# a new output file beside the script on every run (a dated report, a figure)
n = len([p for p in os.listdir(".") if p.startswith("report-")])
with open(f"report-{n}.txt", "w") as f:
    f.write("report")
"""

ENTRY_POINTS = """
import importlib.metadata
import os
import statecache as sc
with sc.checkpoint("scan"):
    open('runs.log', 'a').write('scan\\n')
    found = len(importlib.metadata.entry_points().select(group="console_scripts")) > 0
"""

SKLEARN = """
import os
import numpy as np
from sklearn.ensemble import RandomForestClassifier
import statecache as sc
X = np.arange(40, dtype=float).reshape(20, 2)
y = (X[:, 0] > 20).astype(int)
with sc.checkpoint("scan"):
    open('runs.log', 'a').write('scan\\n')
    clf = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    found = clf.predict(X).tolist()
"""


@pytest.mark.parametrize("library", ["entry_points", "sklearn_fit"])
def test_a_library_scanning_sys_path_does_not_record_the_script_folder(tmp_path: Path, library: str) -> None:
    if library == "sklearn_fit":
        pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    body = ENTRY_POINTS if library == "entry_points" else SKLEARN
    write(tmp_path / "script.py", body + WRITES_BESIDE)
    first = run_script(tmp_path)
    assert first.computed("scan"), first.text
    for n in (2, 3):
        again = run_script(tmp_path)
        assert again.hit("scan"), f"run {n} missed although nothing it reads changed\n{again.text}"
        assert again.out == first.out
    assert runs(tmp_path, "scan") == 1  # the hits showed what the computing run did
