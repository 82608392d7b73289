"""The one classifier of paths: the interpreter's, installed packages', statecache's and the
user's files are told apart by where this interpreter keeps its files, never by prefixes such
as /usr; a project inside a Python prefix and data under /dev/shm behave as under a home
directory; directory listings count only when the user's code lists a directory."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, Project, Run

import statecache
from statecache.key.provenance import Kind, classify, is_data_path, is_import_system, is_user_file


def test_classify_by_the_interpreters_real_directories(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("x = 1\n")
    assert classify(str(script)) is Kind.USER
    assert classify(os.__file__) is Kind.STDLIB
    assert classify(np.__file__) is Kind.INSTALLED
    assert classify(pytest.__file__) is Kind.INSTALLED
    assert classify(statecache.__file__) is Kind.STATECACHE
    assert classify("<ipython-input-3-0123abcd>") is Kind.USER
    for pseudo in ("<string>", "<frozen os>", "", None, "/proc/self/stat", "/sys/kernel/mm"):
        assert classify(pseudo) is Kind.PSEUDO
    assert classify("/elsewhere/venv/lib/python3.12/site-packages/pkg/mod.py") is Kind.INSTALLED
    assert classify("/usr/lib/python3/dist-packages/pkg/mod.py") is Kind.INSTALLED


@pytest.mark.parametrize("root", ["/usr/src/app", "/usr/local/src/app", "/opt/app", "/srv/app", "/dev/shm/app"])
def test_a_project_under_a_system_prefix_is_the_users(root: str) -> None:
    """The prefix itself decides nothing: only the stdlib and site-packages directories do."""
    assert classify(f"{root}/main.py") is Kind.USER
    assert is_user_file(f"{root}/helpers.py")
    assert is_data_path(f"{root}/data.csv")


def test_a_project_inside_this_interpreters_prefix_is_the_users() -> None:
    assert classify(os.path.join(sys.prefix, "src", "app", "main.py")) is Kind.USER
    assert classify(os.path.join(sys.base_prefix, "src", "app", "main.py")) is Kind.USER


def test_data_paths_leave_out_bytecode_devices_and_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n")
    assert is_data_path(str(data))
    assert is_data_path(str(tmp_path / "not-yet.csv"))  # appearing later is a change
    assert is_data_path(str(tmp_path))  # a directory the user listed
    assert not is_data_path(str(tmp_path / "__pycache__" / "m.cpython-311.pyc"))
    assert not is_data_path(str(data), cache_dirs=[str(tmp_path)])
    assert not is_data_path("/dev/null")
    assert not is_data_path("/proc/self/status")
    assert not is_data_path(os.__file__)
    assert not is_data_path(np.__file__)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not is_data_path(str(fifo))


def test_the_import_system_is_known_by_its_files() -> None:
    import importlib.metadata
    import importlib.util
    import zipimport

    for mod in (importlib.metadata, importlib.util, zipimport):
        assert is_import_system(mod.__file__)
    assert is_import_system("<frozen importlib._bootstrap_external>")
    assert not is_import_system(os.__file__)
    assert not is_import_system(__file__)


# ------------------------------------------------------------ real scripts, run twice or more

SCRIPT = """
import statecache, helpers
with statecache.checkpoint("load"):
    text = open({data!r}).read()
    value = helpers.scale(len(text))
print("value", value)
"""


def _edit_cycle(run, main: Path, data: Path, helpers: Path) -> None:
    """Data edit and helper edit are each seen; an unchanged rerun hits."""
    data.write_text("abc")
    helpers.write_text("def scale(n):\n    return n * 10\n")
    first = run()
    assert first.computed("load") and "value 30" in first.stdout, first.stderr
    second = run()
    assert second.hit("load") and "value 30" in second.stdout, second.stderr
    data.write_text("abcd")
    third = run()
    assert third.computed("load") and "value 40" in third.stdout, third.stderr
    helpers.write_text("def scale(n):\n    return n * 100\n")
    fourth = run()
    assert fourth.computed("load") and "value 400" in fourth.stdout, fourth.stderr
    assert run().hit("load")


def _site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def test_a_project_inside_a_venvs_prefix_sees_data_and_helper_edits(tmp_path: Path) -> None:
    """The Docker layout (/usr/src/app run by a /usr Python), reproduced without root: a project
    at <venv>/src/app, run by that venv's python, is the user's code and data."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    app = venv / "src" / "app"
    app.mkdir(parents=True)
    data, helpers, main = app / "data.txt", app / "helpers.py", app / "main.py"
    main.write_text(textwrap.dedent(SCRIPT.format(data="data.txt")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATECACHE_", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *_site_dirs()])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    prefix = subprocess.run(
        [str(python), "-c", "import sys; print(sys.prefix)"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert os.path.realpath(prefix) == os.path.realpath(venv)  # the project is under sys.prefix



    def run() -> Run:
        proc = subprocess.run([str(python), str(main)], cwd=app, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return Run(proc.returncode, proc.stdout, proc.stderr)

    _edit_cycle(run, main, data, helpers)


def test_data_under_dev_shm_is_recorded(project: Project) -> None:
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm here")
    shm = Path("/dev/shm") / f"statecache-test-{uuid.uuid4().hex}"
    shm.mkdir()
    try:
        data = shm / "data.txt"
        main = project.write("main.py", SCRIPT.format(data=str(data)))
        _edit_cycle(lambda: project.run("main.py"), main, data, project.root / "helpers.py")
    finally:
        shutil.rmtree(shm, ignore_errors=True)


WRITES_BESIDE = """
import time
with open(f"out-{time.time_ns()}.txt", "w") as f:   # a new file beside the script each run
    f.write("done")
"""


def test_entry_points_lookup_in_a_block_is_no_directory_dependency(project: Project) -> None:
    project.write(
        "main.py",
        textwrap.dedent("""
        import importlib.metadata, statecache
        with statecache.checkpoint("eps"):
            n = len(importlib.metadata.entry_points().select(group="console_scripts")) >= 0
        print("n", n)
        """) + WRITES_BESIDE,
    )
    assert project.run("main.py").computed("eps")
    for _ in range(2):
        run = project.run("main.py")
        assert run.hit("eps") and "n True" in run.stdout, run.stderr


def test_a_fitted_random_forest_beside_its_outputs_hits(project: Project) -> None:
    pytest.importorskip("sklearn")
    project.write(
        "main.py",
        textwrap.dedent("""
        import numpy as np, statecache
        from sklearn.ensemble import RandomForestClassifier
        X = np.arange(40, dtype=float).reshape(20, 2)
        y = np.arange(20) % 2
        with statecache.checkpoint("fit"):
            clf = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
        print("pred", clf.predict(X[:4]).tolist())
        """) + WRITES_BESIDE,
    )
    first = project.run("main.py")
    assert first.computed("fit")
    disabled = project.run("main.py", env={"STATECACHE_DISABLE": "1"})
    for _ in range(2):
        run = project.run("main.py")
        assert run.hit("fit"), run.stderr
        assert run.stdout.split("pred")[1] == disabled.stdout.split("pred")[1]


def test_a_directory_the_users_code_lists_still_counts(project: Project) -> None:
    project.write(
        "main.py",
        """
        import os, statecache
        def names(d):
            return sorted(n for n in os.listdir(d) if n.endswith(".csv"))
        with statecache.checkpoint("ls"):
            found = names(".")
        print("found", found)
        """,
    )
    project.write("a.csv", "1\n")
    assert project.run("main.py").computed("ls")
    assert project.run("main.py").hit("ls")
    project.write("b.csv", "2\n")
    run = project.run("main.py")
    assert run.computed("ls") and "'a.csv', 'b.csv'" in run.stdout, run.stderr


def test_a_library_listing_a_data_folder_counts_its_scan_of_sys_path_at_import_does_not(project: Project) -> None:
    """An installed library that lists the user's folder (a dataset class reading an image
    folder) lists data; a library scanning every sys.path entry for plugins while it is
    imported in the block (as pkg_resources does) does not. (A library listing the script's
    folder when called does: tests/test_reads_outputs.py.)"""
    site_dir = project.root / "venv" / "lib" / "site-packages"
    (site_dir / "fakelib").mkdir(parents=True)
    (site_dir / "fakelib" / "__init__.py").write_text(
        "import os\n"
        "def folder(d):\n    return sorted(os.listdir(d))\n"
    )
    (site_dir / "fakeplugins.py").write_text(
        "import os, sys\n"
        "FOUND = [n for p in sys.path if os.path.isdir(p or '.') for n in os.listdir(p or '.')]\n"
    )
    project.write(
        "main.py",
        textwrap.dedent("""
        import fakelib, statecache
        with statecache.checkpoint("data"):
            images = fakelib.folder("images")
            import fakeplugins
            n = len(fakeplugins.FOUND) > 0
        print("images", images)
        """) + WRITES_BESIDE,
    )
    project.write("images/a.png", "a")
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(site_dir)])}
    assert project.run("main.py", env=env).computed("data")
    assert project.run("main.py", env=env).hit("data")  # new files beside the script: no change
    project.write("images/b.png", "b")
    run = project.run("main.py", env=env)
    assert run.computed("data") and "'a.png', 'b.png'" in run.stdout, run.stderr
