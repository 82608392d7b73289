"""The import watch (key/importwatch.py): the text a user module ran is the one it loaded, seen
at import, not read back from a shared ``.pyc`` (another run rewrites it) or from nothing
(PYTHONDONTWRITEBYTECODE); and the after-import registry calls its callbacks when, and only
when, the watched module is imported. Real scripts in subprocesses; values compared with a
fresh run under ``STATECACHE_DISABLE=1``; unchanged reruns hit."""

from __future__ import annotations

import pytest
from conftest import Project, Run

HELPERS = "import sys\nsys.setrecursionlimit(5000)\n\n\ndef f():\n    return sys.getrecursionlimit()\n"

# The user saves helpers.py while the run goes on; with REBUILD another run starts meanwhile and
# recompiles it, rewriting the .pyc this run loaded.
SCRIPT = """
import os, pathlib, subprocess, sys
{before}import statecache as sc
import helpers
if os.environ.get("EDIT"):
    p = pathlib.Path(helpers.__file__)
    p.write_text(p.read_text().replace("5000", "60000"))
    if os.environ.get("REBUILD"):
        subprocess.run([sys.executable, "-c", "import helpers"], check=True)
{front}print("y", y)
"""
FRONTS = {
    "block": "with sc.checkpoint('a'):\n    y = helpers.f()\n",
    "import in the block": "with sc.checkpoint('a'):\n    import helpers\n    y = helpers.f()\n",
    "cached_setup": "@sc.cached_setup(name='a')\ndef load():\n    return helpers.f()\ny = load()\n",
    "helper's local import": "def run():\n    import helpers\n    return helpers.f()\n"
    "with sc.checkpoint('a'):\n    y = run()\n",
}
BYTECODE = {
    "no-pyc": {"PYTHONDONTWRITEBYTECODE": "1"},
    "pyc-rewritten": {"PYTHONDONTWRITEBYTECODE": "", "REBUILD": "1"},
}


def y(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


def edited_while_running(project: Project, env: dict[str, str]) -> None:
    """The run during which helpers.py is saved runs (and may save) the old top level's
    result; the next run computes what a fresh run does, and the one after hits it."""
    edited = project.run("main.py", env={**env, "EDIT": "1"})
    assert edited.computed("a") and y(edited) == "y 5000", edited.stderr
    after = project.run("main.py", env=env)
    fresh = project.run("main.py", env={**env, "STATECACHE_DISABLE": "1"})
    assert y(fresh) == "y 60000"
    assert y(after) == y(fresh) and after.computed("a"), after.stderr
    again = project.run("main.py", env=env)
    assert again.hit("a") and y(again) == y(fresh), again.stderr


@pytest.mark.parametrize("bytecode", list(BYTECODE))
@pytest.mark.parametrize("front", list(FRONTS))
def test_a_module_saved_while_running_keys_the_text_it_loaded(project: Project, front: str, bytecode: str) -> None:
    project.write("helpers.py", HELPERS)
    project.write("main.py", SCRIPT.format(before="", front=FRONTS[front]))
    edited_while_running(project, BYTECODE[bytecode])


def test_a_module_of_a_package_saved_while_running(project: Project) -> None:
    project.write("pkg/__init__.py", "")
    project.write("pkg/helpers.py", HELPERS)
    script = SCRIPT.replace("import helpers\n", "from pkg import helpers\n", 1)
    project.write("main.py", script.format(before="", front=FRONTS["block"]))
    edited_while_running(project, BYTECODE["no-pyc"])


def test_unchanged_modules_hit_with_and_without_bytecode(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("main.py", SCRIPT.format(before="", front=FRONTS["block"]))
    for env in ({"PYTHONDONTWRITEBYTECODE": "1"}, {"PYTHONDONTWRITEBYTECODE": ""}, {"PYTHONDONTWRITEBYTECODE": ""}):
        run = project.run("main.py", env=env)
        assert y(run) == "y 5000"
    assert run.hit("a"), "a .pyc written by an earlier run, or its absence, made an unchanged rerun miss"


def test_a_module_imported_before_statecache_keeps_the_pyc_rule(project: Project) -> None:
    # the watch sees only imports after ``import statecache``: helpers loaded earlier is judged
    # by the stamp its .pyc holds (README "What is not tracked": import statecache first)
    project.write("helpers.py", HELPERS)
    project.write("main.py", SCRIPT.format(before="import helpers\n", front=FRONTS["block"]))
    edited_while_running(project, {"PYTHONDONTWRITEBYTECODE": ""})


# -- the after-import registry ---------------------------------------------------------------

CALLBACK = "CALLS = []\n\n\ndef seen(module):\n    CALLS.append(module.__name__)\n"


def test_a_callback_runs_after_its_module_is_imported_and_loads_only_then(project: Project) -> None:
    project.write("cb.py", CALLBACK)
    project.write("watched.py", "VALUE = 1\nprint('watched runs')\n")
    project.write("main.py", """
import sys
import statecache
from statecache.key.importwatch import after_import
after_import("watched", "cb:seen")
after_import("watched", "cb:seen")  # registered twice: called once
print("callback module loaded before:", "cb" in sys.modules)
import watched
import cb
print("calls", cb.CALLS)
after_import("watched", cb.seen)  # the module is loaded: called at once
print("calls", cb.CALLS)
""")
    out = project.run("main.py").stdout.splitlines()
    assert out == ["callback module loaded before: False", "watched runs", "calls ['watched']",
                   "calls ['watched', 'watched']"]


def test_a_failing_callback_warns_and_the_import_succeeds(project: Project) -> None:
    project.write("watched.py", "VALUE = 7\n")
    project.write("main.py", """
import statecache
from statecache.key.importwatch import after_import
def broken(module):
    raise RuntimeError("boom")
after_import("watched", broken)
import watched
print("value", watched.VALUE)
""")
    run = project.run("main.py")
    assert "value 7" in run.stdout
    assert "StateCacheWarning" in run.stderr and "boom" in run.stderr and "'watched'" in run.stderr


def test_import_statecache_loads_no_classifier_until_a_module_loads(project: Project) -> None:
    project.write("main.py", """
import sys
before = set(sys.modules)
import statecache
heavy = ("statecache.key.provenance", "statecache.key.code", "xxhash", "sysconfig")
print("loaded", sorted(m for m in heavy if m in sys.modules and m not in before))
print("first finder", type(sys.meta_path[0]).__name__)
""")
    out = project.run("main.py").stdout
    assert "loaded []" in out and "first finder ImportWatch" in out, out
