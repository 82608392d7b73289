"""Process state read inside the user's helpers (issue 11 class 2): an environment variable or
the working directory that a function of the user's reads, called by a block or a
``cached_setup`` function, directly or through other helpers, is an input as it is when the
block reads it itself. Real scripts in subprocesses, run twice or more, compared with a run
with caching off."""

from __future__ import annotations

import pytest
from conftest import Project
from test_process_state import fresh, reruns, run_in

HELPERS = """
import os
from pathlib import Path

def item():
    return os.environ["MODE"]

def get():
    return os.environ.get("MODE", "none")

def getenv():
    return os.getenv("MODE", "none")

def tested():
    return "MODE" in os.environ

def defaulted():
    return os.environ.setdefault("MODE", "dflt")

def whole():
    return sorted(k for k in os.environ if k.startswith("MODE"))

def deeper():
    return "via " + item()

class Settings:
    def mode(self):
        return os.environ.get("MODE")
"""

# (how the script reaches the helper, the call in the block)
CALLS = {
    "item, module attribute": ("import helpers", "helpers.item()"),
    "get, imported name": ("from helpers import get", "get()"),
    "getenv": ("from helpers import getenv", "getenv()"),
    "in": ("import helpers", "helpers.tested()"),
    "setdefault": ("import helpers", "helpers.defaulted()"),
    "whole environment": ("import helpers", "helpers.whole()"),
    "through another helper": ("import helpers", "helpers.deeper()"),
    "a method": ("from helpers import Settings", "Settings().mode()"),
    "a helper in the script": ("from helpers import item\ndef local():\n    return item() * 2", "local()"),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_an_environment_variable_read_by_a_helper_is_an_input(project: Project, call: str) -> None:
    imports, expr = CALLS[call]
    project.write("helpers.py", HELPERS)
    project.write("script.py", f"""
import statecache as sc
{imports}
with sc.checkpoint("a"):
    n = {expr}
print("n", repr(n))
""")
    env = {"MODE": "fast"}
    first = project.run("script.py", env=env)
    assert first.computed("a") and first.stdout == fresh(project, "script.py", env=env)
    assert project.run("script.py", env=env).hit("a")
    # a test or a default sees the variable go, a scan of all of them a new one, the others
    # its value change
    other = {"in": {}, "setdefault": {}, "whole environment": {**env, "MODE_2": "1"}}.get(call, {"MODE": "slow"})
    out = reruns(project, "script.py", env=other)
    assert out == fresh(project, "script.py", env=other) != first.stdout, call


def test_a_cached_setup_helper_reading_the_environment(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", """
import statecache as sc
import helpers

def describe():
    return helpers.deeper() + "!"

@sc.cached_setup(name="a")
def load(k):
    return describe() * k

print("n", load(2))
""")
    first = project.run("script.py", env={"MODE": "fast"})
    assert "n via fast!via fast!" in first.stdout and first.computed("a")
    assert project.run("script.py", env={"MODE": "fast"}).hit("a")
    out = reruns(project, "script.py", env={"MODE": "slow"})
    assert "n via slow!via slow!" in out and out == fresh(project, "script.py", env={"MODE": "slow"})


def test_a_variable_a_helper_does_not_read_does_not_count(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", """
import statecache as sc
import helpers
with sc.checkpoint("a"):
    n = helpers.item()
print("n", n)
""")
    assert project.run("script.py", env={"MODE": "x", "OTHER": "1"}).computed("a")
    assert project.run("script.py", env={"MODE": "x", "OTHER": "2"}).hit("a")


def test_an_ignored_variable_read_by_a_helper_does_not_count(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", """
import statecache as sc
import helpers
with sc.checkpoint("a", ignore=["os.environ['MODE']"]):
    n = len(helpers.item())
print("n", n)
""")
    assert project.run("script.py", env={"MODE": "abc"}).computed("a")
    assert project.run("script.py", env={"MODE": "xyz"}).hit("a")


CWD_HELPERS = """
import os
from pathlib import Path

def here():
    return os.getcwd()

def absolute(name):
    return os.path.abspath(name)

def resolved(name):
    return str(Path(name).resolve())

def real():
    return os.path.realpath(".")
"""


@pytest.mark.parametrize("expr", ["helpers.here()", "helpers.absolute('data')", "helpers.resolved('data')",
                                  "helpers.real()", "wrapped()"])
def test_the_working_directory_read_by_a_helper_is_an_input(project: Project, expr: str) -> None:
    project.write("helpers.py", CWD_HELPERS)
    project.write("script.py", f"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statecache as sc
import helpers

def wrapped():
    return helpers.resolved("x") + "/"

with sc.checkpoint("a"):
    n = {expr}
print("n", n)
""")
    (project.root / "sub").mkdir()
    first = project.run("script.py")
    assert first.computed("a") and project.run("script.py").hit("a")
    other = run_in(project, "sub", "../script.py")
    assert other.computed("a"), other.stderr
    assert other.stdout != first.stdout
    again = run_in(project, "sub", "../script.py")
    assert again.hit("a") and again.stdout == other.stdout


def test_run_magic_arguments_are_inputs_and_an_unchanged_run_hits(project: Project) -> None:
    # %run sets sys.argv to the script's own arguments: argparse in the block (or in a helper)
    # reads them, so they count, while a kernel's launch line does not (see test_ipython)
    from test_ipython import ipython_c

    project.write("helpers.py", "import argparse\n\ndef n():\n    p = argparse.ArgumentParser()\n"
                  "    p.add_argument('--n', type=int)\n    return p.parse_args().n\n")
    project.write("script.py", "import statecache as sc\nimport helpers\nwith sc.checkpoint('a'):\n"
                  "    y = helpers.n() * 2\nprint('y', y)\n")
    root = project.root
    first = ipython_c(root, "%run script.py --n 1")
    assert "y 2" in first.stdout and "'a' computing" in first.stderr
    again = ipython_c(root, "%run script.py --n 1")
    assert again.stdout == first.stdout and "'a' restored" in again.stderr
    other = ipython_c(root, "%run script.py --n 3")
    assert "'a' computing" in other.stderr
    assert other.stdout == ipython_c(root, "%run script.py --n 3", env={"STATECACHE_DISABLE": "1"}).stdout
    assert "y 6" in other.stdout and "'a' restored" in ipython_c(root, "%run script.py --n 3").stderr


GLOBALS_MODULE = """
STATE = None
COUNT = 0

def init():
    global STATE
    STATE = "ready"

class Registry:
    @classmethod
    def fill(cls):
        global COUNT
        COUNT = COUNT + 5
"""


@pytest.mark.parametrize("where", ["module", "function", "cached_setup"])
def test_globals_that_helpers_assign_are_restored(project: Project, where: str) -> None:
    # a helper of the script, one of a module, a classmethod of a module's class, and one that
    # reaches another through a closure: what each assigns with `global` is back after a hit
    project.write("pkg/__init__.py", "")
    project.write("pkg/state.py", GLOBALS_MODULE)
    calls = "build()\n    later()\n    registry.fill()\n    from_pkg()"
    body = {
        "module": f"with sc.checkpoint('a'):\n    {calls}\n",
        "function": f"def main():\n    with sc.checkpoint('a'):\n        {calls.replace(chr(10), chr(10) + '    ')}\nmain()\n",
        "cached_setup": f"@sc.cached_setup(name='a')\ndef setup():\n    {calls}\nsetup()\n",
    }[where]
    project.write("script.py", f"""
import statecache as sc
from pkg.state import Registry as registry
from pkg import state as st
VOCAB = None

def build():
    global VOCAB
    VOCAB = ["a", "b"]

def make():
    def inner():
        global LATE
        LATE = len(VOCAB)
    return inner
later = make()

def from_pkg():
    st.init()

{body}
import pkg.state
print("after", VOCAB, LATE, pkg.state.STATE, pkg.state.COUNT)
""")
    first = project.run("script.py")
    assert "after ['a', 'b'] 2 ready 5" in first.stdout and first.computed("a")
    second = project.run("script.py")
    assert second.hit("a") and second.stdout == first.stdout == fresh(project, "script.py")


def test_a_global_a_helper_assigns_is_no_reason_to_miss(project: Project) -> None:
    # the value before the block is what the key sees: the same in every run, so it hits, and
    # another value there (set above the block) is another computation
    project.write("script.py", """
import os
import statecache as sc
TOTAL = int(os.environ.get("START", "0"))

def add(n):
    global TOTAL
    TOTAL = TOTAL + n

with sc.checkpoint("a"):
    add(3)
print("after", TOTAL)
""")
    assert "after 3" in project.run("script.py").stdout
    assert project.run("script.py").hit("a")
    out = reruns(project, "script.py", env={"START": "10"})
    assert "after 13" in out and out == fresh(project, "script.py", env={"START": "10"})
