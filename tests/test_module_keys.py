"""A user module reached through its attributes (``helpers.f()`` in a helper) counts by what
is read from it, not its whole file (issue 11 item 12): an edit of an unrelated function or of
the docstring, and data only other functions use, keep the hit; whatever the called code can
reach still counts, and a module used on its own (``getattr`` with a computed name) counts
whole. Real scripts, run twice or more; each value is compared with a fresh run under
``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import pytest
from conftest import Project, Run

HELPERS = '''"""Helpers."""
import sys
import time

LAST = {}
SCALE = 2
sys.setrecursionlimit(5000)


def f(x):
    return k(x) * SCALE


def k(x):
    return x + 1


def unrelated():
    return "old"


def stamp():
    LAST["t"] = time.time()
'''

MAIN = """
import statecache as sc
import helpers

def run():
    return helpers.f(3)

helpers.stamp()  # an unrelated function updates a timing dict of the module
with sc.checkpoint("a"):
    y = run()
print("y", y)
"""


def value(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


def setup(project: Project, main: str = MAIN) -> str:
    project.write("helpers.py", HELPERS)
    project.write("main.py", main)
    first = project.run("main.py")
    assert first.computed("a")
    second = project.run("main.py")
    assert second.hit("a") and value(second) == value(first), second.stderr
    return value(first)


def edit(project: Project, old: str, new: str) -> None:
    text = (project.root / "helpers.py").read_text()
    assert old in text
    project.write("helpers.py", text.replace(old, new))


def outcome(project: Project, main: str = "main.py") -> tuple[bool, str]:
    run = project.run(main)
    fresh = project.run(main, env={"STATECACHE_DISABLE": "1"})
    assert value(run) == value(fresh), run.stderr
    again = project.run(main)
    assert again.hit("a") and value(again) == value(run), again.stderr
    return run.hit("a"), value(run)


def test_edits_the_called_code_cannot_see_keep_the_hit(project: Project) -> None:
    assert setup(project) == "y 8"
    edit(project, 'return "old"', 'return "new"')
    assert outcome(project) == (True, "y 8")
    edit(project, '"""Helpers."""', '"""Helpers, documented."""')
    assert outcome(project) == (True, "y 8")


def test_what_the_called_code_reaches_still_counts(project: Project) -> None:
    setup(project)
    edit(project, "SCALE = 2", "SCALE = 3")  # a global of the called function
    assert outcome(project) == (False, "y 12")
    edit(project, "return x + 1", "return x + 2")  # a function it calls
    assert outcome(project) == (False, "y 15")
    edit(project, "setrecursionlimit(5000)", "setrecursionlimit(6000)")  # what importing it does
    assert outcome(project) == (False, "y 15")


def test_a_module_used_on_its_own_counts_whole(project: Project) -> None:
    main = MAIN.replace("return helpers.f(3)", "return getattr(helpers, NAME)(3)").replace(
        "def run():", 'NAME = "f"\n\ndef run():'
    )
    setup(project, main.replace("helpers.stamp()", "pass"))
    edit(project, 'return "old"', 'return "new"')
    assert outcome(project) == (False, "y 8")


def test_bare_names_are_the_reads_that_are_not_attribute_roots() -> None:
    import ast

    from statecache.key.source import bare_names

    body = ast.parse("y = helpers.f(x)\nz = pkg.sub.g()\nh = getattr(other, n)\nhelpers.X = 1\n").body
    assert set(bare_names(body)) == {"x", "getattr", "other", "n"}
    assert "helpers" in bare_names(ast.parse("g(helpers)\nhelpers.f()").body)


def test_the_block_itself_calling_helpers_f_keys_on_what_it_reads(project: Project) -> None:
    main = MAIN.replace("    y = run()", "    y = helpers.f(3)")
    assert setup(project, main) == "y 8"
    edit(project, 'return "old"', 'return "new"')
    assert outcome(project) == (True, "y 8")
    edit(project, "SCALE = 2", "SCALE = 3")
    assert outcome(project) == (False, "y 12")
    edit(project, "setrecursionlimit(5000)", "setrecursionlimit(6000)")
    assert outcome(project) == (False, "y 12")


TOP_HELPERS = '''import sys
sys.setrecursionlimit(5000)


def f():
    return sys.getrecursionlimit()
'''

# The script saves helpers.py after importing it, as a user does while a run goes on: what the
# old top level did (a recursion limit) shows in no function or value the block reads.
EDITS_WHILE_RUNNING = """
import os
import pathlib
import statecache as sc
import helpers

if os.environ.get("EDIT"):
    p = pathlib.Path(helpers.__file__)
    p.write_text(p.read_text().replace("5000", "60000"))
with sc.checkpoint("a"):
    y = helpers.f()
print("y", y)
"""


def _edited_while_running(project: Project, bytecode: str) -> None:
    project.write("helpers.py", TOP_HELPERS)
    project.write("main.py", EDITS_WHILE_RUNNING)
    env = {"PYTHONDONTWRITEBYTECODE": bytecode}
    first = project.run("main.py", env={**env, "EDIT": "1"})
    assert value(first) == "y 5000"
    run = project.run("main.py", env=env)
    fresh = project.run("main.py", env={**env, "STATECACHE_DISABLE": "1"})
    assert value(fresh) == "y 60000"
    assert value(run) == value(fresh), run.stderr


def test_a_module_saved_after_loading_does_not_key_the_old_top_levels_result(project: Project) -> None:
    _edited_while_running(project, bytecode="")  # import writes the .pyc that stamps the text


def test_a_module_saved_after_loading_without_bytecode(project: Project) -> None:
    # no .pyc holds a stamp: the import watch kept the text the module loaded from
    _edited_while_running(project, bytecode="1")


# -- the .pyc stamps of bac63e1, re-checked with and without bytecode files ---------------------

FRONTS = {
    "block": "with sc.checkpoint('a'):\n    y = helpers.f()\n",
    "import in the block": "with sc.checkpoint('a'):\n    import helpers\n    y = helpers.f()\n",
    "cached_setup": "@sc.cached_setup(name='a')\ndef load():\n    return helpers.f()\ny = load()\n",
}
SAVED_WHILE_RUNNING = """
import os
import pathlib
import statecache as sc
import helpers
if os.environ.get("EDIT"):  # the user saves helpers.py while the run goes on
    p = pathlib.Path(helpers.__file__)
    p.write_text(p.read_text().replace("42", os.environ["EDIT"]))
{front}print("y", y)
"""


@pytest.mark.parametrize("bytecode", ["", "1"], ids=["pyc", "no-pyc"])
@pytest.mark.parametrize("new", ["480", "47"], ids=["new-size", "same-size"])
@pytest.mark.parametrize("front", list(FRONTS))
def test_a_module_saved_during_the_run_keys_the_code_that_ran(
    project: Project, front: str, new: str, bytecode: str
) -> None:
    """(a) an edit saved during a run never saves the old code's result under the new text's
    key; (b) a rerun of unchanged files hits, whether or not the first run wrote a .pyc."""
    project.write("helpers.py", "def f():\n    return 42\n")
    project.write("main.py", SAVED_WHILE_RUNNING.format(front=FRONTS[front]))
    env = {"PYTHONDONTWRITEBYTECODE": bytecode}
    first = project.run("main.py", env=env)
    assert first.computed("a") and "y 42" in first.stdout
    assert project.run("main.py", env=env).hit("a"), "a .pyc written by the first run made the rerun miss"
    edited = project.run("main.py", env={**env, "EDIT": new})
    assert "y 42" in edited.stdout  # the code loaded before the save ran
    after = project.run("main.py", env=env)
    fresh = project.run("main.py", env={**env, "STATECACHE_DISABLE": "1"})
    assert after.stdout == fresh.stdout, after.stderr
    if new == "480" or bytecode:
        assert f"y {new}" in fresh.stdout and after.computed("a"), after.stderr
    else:
        # a same-size save within the second of the .pyc: Python itself may run the old code
        # from the .pyc; then the key is that code's, as in the edited run (a hit of 42 is right)
        assert fresh.stdout in (f"y {new}\n", "y 42\n")
    again = project.run("main.py", env=env)
    assert again.hit("a") and again.stdout == fresh.stdout


RUNTIME_DATA = """
import os
import statecache as sc
import helpers

class Opt:
    def __init__(self, v):
        self.v = v

v = float(os.environ.get("V", "0.1"))
{change}

def run():
    import helpers
    return helpers.read()

with sc.checkpoint("a"):
    {body}
print("y", y)
"""
CHANGES = {
    "item set to an object": ("helpers.CONFIG['opt'] = Opt(v)", "return CONFIG['opt'].v"),
    "literal rebound to an object": ("helpers.SCALE = Opt(v)", "return SCALE.v"),
    "list given an object": ("helpers.ITEMS.append(Opt(v))", "return ITEMS[-1].v"),
    "item set to a number": ("helpers.CONFIG['lr'] = v", "return CONFIG['lr']"),
}


@pytest.mark.parametrize("body", ["y = run()", "import helpers\n    y = helpers.read()"], ids=["local-import", "import-in-block"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_module_literals_the_script_changes_at_run_time(project: Project, change: str, body: str) -> None:
    """A top-level literal of a user module that the script changes before the block (to an
    object without a stable repr too) keys by its value: the same value hits every run, another
    value computes what a fresh run does."""
    script_change, read = CHANGES[change]
    project.write("helpers.py", f"CONFIG = {{'lr': 0.01}}\nSCALE = 1\nITEMS = []\n\n\ndef read():\n    {read}\n")
    project.write("main.py", RUNTIME_DATA.format(change=script_change, body=body))
    first = project.run("main.py")
    assert "y 0.1" in first.stdout and first.computed("a")
    second = project.run("main.py")
    assert second.hit("a"), second.stderr
    other = project.run("main.py", env={"V": "0.2"})
    assert other.computed("a") and "y 0.2" in other.stdout
    assert other.stdout == project.run("main.py", env={"V": "0.2", "STATECACHE_DISABLE": "1"}).stdout
    assert project.run("main.py", env={"V": "0.2"}).hit("a")


# -- a module imported inside a helper counts by what the helper reads of it (issue 11 item 12) --

LOCAL_IMPORTS = {
    # name -> (where the helpers live, the module holding run(), its text)
    "import inside": ("helpers.py", "main.py", "def run():\n    import helpers\n    return helpers.f(3)\n"),
    "import a.b as c": ("pkg/helpers.py", "main.py", "def run():\n    import pkg.helpers as h\n    return h.f(3)\n"),
    "import a.b": ("pkg/helpers.py", "main.py", "def run():\n    import pkg.helpers\n    return pkg.helpers.f(3)\n"),
    "from . import x": ("pkg/helpers.py", "pkg/runner.py", "def run():\n    from . import helpers\n    return helpers.f(3)\n"),
    "from m import f": ("helpers.py", "main.py", "def run():\n    from helpers import f\n    return f(3)\n"),
    "in a nested function": ("helpers.py", "main.py",
                             "def run():\n    import helpers\n    def inner():\n        return helpers.f(3)\n    return inner()\n"),
}
LOCAL_MAIN = """
import statecache as sc
import {module} as loaded
{run}
loaded.stamp()  # an unrelated function fills a timing dict of the module
with sc.checkpoint("a"):
    y = run()
print("y", y)
"""


def write_local_import(project: Project, case: str) -> str:
    helpers, holder, run = LOCAL_IMPORTS[case]
    module = helpers[:-3].replace("/", ".")
    project.write(helpers, HELPERS)
    if holder == "main.py":
        project.write("main.py", LOCAL_MAIN.format(module=module, run=run))
    else:
        project.write("pkg/__init__.py", "")
        project.write(holder, run)
        project.write("main.py", LOCAL_MAIN.format(module=module, run="from pkg.runner import run"))
    return helpers


def edit_file(project: Project, path: str, old: str, new: str) -> None:
    text = (project.root / path).read_text()
    assert old in text
    project.write(path, text.replace(old, new))


@pytest.mark.parametrize("case", list(LOCAL_IMPORTS))
def test_a_module_imported_inside_a_helper_counts_by_what_the_helper_reads(project: Project, case: str) -> None:
    """Loaded already, it counts as ``import helpers`` at the top does: an unchanged rerun hits
    though a timing dict of the module changes each run, so does an edit of a function the
    helper never calls; the data and code it reaches count."""
    helpers = write_local_import(project, case)
    first = project.run("main.py")
    assert first.computed("a") and value(first) == "y 8"
    second = project.run("main.py")
    assert second.hit("a") and value(second) == "y 8", second.stderr
    edit_file(project, helpers, 'return "old"', 'return "new"')
    assert outcome(project) == (True, "y 8")
    edit_file(project, helpers, "SCALE = 2", "SCALE = 3")
    assert outcome(project) == (False, "y 12")
    edit_file(project, helpers, "return x + 1", "return x + 2")  # k, which f calls
    assert outcome(project) == (False, "y 15")


def test_a_module_imported_inside_a_helper_before_it_is_loaded_counts_by_its_files(project: Project) -> None:
    # nothing imported helpers before the block: the import runs its top level, so the whole
    # file (and what it imports) counts; a hit, which never imports it, keys the same
    project.write("helpers.py", HELPERS)
    project.write("main.py", MAIN.replace("import helpers\n", "", 1).replace("helpers.stamp()", "")
                  .replace("def run():\n", "def run():\n    import helpers\n"))
    first = project.run("main.py")
    assert first.computed("a") and value(first) == "y 8"
    assert project.run("main.py").hit("a")
    edit(project, "SCALE = 2", "SCALE = 3")
    assert outcome(project) == (False, "y 12")
    edit(project, "setrecursionlimit(5000)", "setrecursionlimit(6000)")
    assert outcome(project) == (False, "y 12")


def test_a_module_imported_inside_a_helper_and_passed_on_counts_whole(project: Project) -> None:
    # use(helpers) reads the module itself, as a global passed on does: every function and
    # every data value of it count (an edit of an unrelated function computes again)
    main = MAIN.replace("helpers.stamp()", "").replace(
        "def run():\n    return helpers.f(3)\n",
        "def use(m):\n    return m.f(3)\n\ndef run():\n    import helpers\n    return use(helpers)\n")
    assert setup(project, main) == "y 8"
    edit(project, "return x + 1", "return x + 2")
    assert outcome(project) == (False, "y 10")
    edit(project, 'return "old"', 'return "new"')
    assert outcome(project) == (False, "y 10")


def test_a_module_imported_inside_a_helper_that_sets_its_attribute_counts_whole(project: Project) -> None:
    # ``helpers.SCALE = 5`` in the helper changes the module: not a read-only use
    main = MAIN.replace("helpers.stamp()", "").replace(
        "def run():\n    return helpers.f(3)\n",
        "def run():\n    import helpers\n    helpers.SCALE = helpers.SCALE + 1\n    return helpers.f(3)\n")
    assert setup(project, main) == "y 12"
    edit(project, "SCALE = 2", "SCALE = 4")
    assert outcome(project) == (False, "y 20")
