"""A user module reached through its attributes (``helpers.f()`` in a helper) counts by what
is read from it, not its whole file (issue 11 item 12): an edit of an unrelated function or of
the docstring, and data only other functions use, keep the hit; whatever the called code can
reach still counts, and a module used on its own (``getattr`` with a computed name) counts
whole. Real scripts, run twice or more; each value is compared with a fresh run under
``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import Project, Run
from multicase import case_values, status

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
SAVED_CASES = [(front, new) for front in FRONTS for new in ("480", "47")]  # new size, same size


def case_id(*parts: str) -> str:
    """A checkpoint name (and ``y <case>`` word) for a case."""
    return re.sub(r"\W+", "-", "-".join(parts)).strip("-")


def saved_while_running_script() -> str:
    """Every (front, new value) case on its own module ``helpers<i>`` (``return 42``), each
    front's copy under checkpoint ``<front>-<new>``; with EDIT set, the script saves every
    module with its case's new value after importing them, as a user does while a run goes on."""
    lines = ["import os", "import pathlib", "import statecache as sc"]
    lines += [f"import helpers{i}" for i in range(len(SAVED_CASES))]
    lines += ["if os.environ.get('EDIT'):"]
    for i, (_, new) in enumerate(SAVED_CASES):
        lines += [f"    p = pathlib.Path(helpers{i}.__file__)", f"    p.write_text(p.read_text().replace('42', {new!r}))"]
    for i, (front, new) in enumerate(SAVED_CASES):
        code = re.sub(r"\bhelpers\b", f"helpers{i}", FRONTS[front]).replace("'a'", repr(case_id(front, new)))
        lines += [re.sub(r"\b(y|load)\b", rf"\g<1>{i}", code) + f"print('y {case_id(front, new)}', y{i})"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", params=["", "1"], ids=["pyc", "no-pyc"])
def saved_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The script run twice, once saving the modules while it runs, then after the save (with
    a fresh run beside it) and again; with and without .pyc files (PYTHONDONTWRITEBYTECODE)."""
    project = Project(tmp_path_factory.mktemp("saved"))
    for i in range(len(SAVED_CASES)):
        project.write(f"helpers{i}.py", "def f():\n    return 42\n")
    project.write("main.py", saved_while_running_script())
    env = {"PYTHONDONTWRITEBYTECODE": request.param}
    names = ["first", "second", "edited", "after", "fresh", "again"]
    envs = [env, env, {**env, "EDIT": "1"}, env, {**env, "STATECACHE_DISABLE": "1"}, env]
    return {"bytecode": request.param} | {name: project.run("main.py", env=e) for name, e in zip(names, envs, strict=True)}


@pytest.mark.parametrize("front, new", SAVED_CASES, ids=[case_id(f, n) for f, n in SAVED_CASES])
def test_a_module_saved_during_the_run_keys_the_code_that_ran(saved_runs: dict[str, Any], front: str, new: str) -> None:
    """(a) an edit saved during a run never saves the old code's result under the new text's
    key; (b) a rerun of unchanged files hits, whether or not the first run wrote a .pyc."""
    case = case_id(front, new)
    values = {name: case_values(run).get(case) for name, run in saved_runs.items() if name != "bytecode"}
    first, second, after, again = (saved_runs[name] for name in ("first", "second", "after", "again"))
    assert first.computed(case) and values["first"] == "42", status(first, case)
    assert second.hit(case), f"a .pyc written by the first run made the rerun miss\n{status(second, case)}"
    assert values["edited"] == "42"  # the code loaded before the save ran
    assert values["after"] == values["fresh"], status(after, case)
    if new == "480" or saved_runs["bytecode"]:
        assert values["fresh"] == new and after.computed(case), status(after, case)
    else:
        # a same-size save within the second of the .pyc: Python itself may run the old code
        # from the .pyc; then the key is that code's, as in the edited run (a hit of 42 is right)
        assert values["fresh"] in (new, "42")
    assert again.hit(case) and values["again"] == values["fresh"], status(again, case)


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


BODIES = {"local-import": "y = run()", "import-in-block": "import helpers\n    y = helpers.read()"}
LITERAL_CASES = [(change, body) for change in CHANGES for body in BODIES]


def runtime_data_script() -> str:
    """Every (change, body) case on its own module ``helpers<i>``, under checkpoint
    ``<change>-<body>``, all reading the one value ``v`` (env V) the script sets."""
    head, _, tail = RUNTIME_DATA.partition("{change}")
    lines = [head.replace("import helpers\n", "")]
    for i, (change, body) in enumerate(LITERAL_CASES):
        section = f"import helpers\n{CHANGES[change][0]}\n{tail.replace('{body}', BODIES[body])}"
        section = re.sub(r"\b(helpers|run|y)\b", rf"\g<1>{i}", section.replace('"a"', repr(case_id(change, body))))
        lines.append(section.replace(f'print("y{i}", y{i})', f"print('y {case_id(change, body)}', y{i})"))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def literal_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    project = Project(tmp_path_factory.mktemp("literals"))
    for i, (change, _) in enumerate(LITERAL_CASES):
        read = CHANGES[change][1]
        project.write(f"helpers{i}.py", f"CONFIG = {{'lr': 0.01}}\nSCALE = 1\nITEMS = []\n\n\ndef read():\n    {read}\n")
    project.write("main.py", runtime_data_script())
    other = {"V": "0.2"}
    names = ["first", "second", "other", "fresh", "again"]
    envs: list[dict[str, str]] = [{}, {}, other, {**other, "STATECACHE_DISABLE": "1"}, other]
    return {name: project.run("main.py", env=e) for name, e in zip(names, envs, strict=True)}


@pytest.mark.parametrize("change, body", LITERAL_CASES, ids=[case_id(c, b) for c, b in LITERAL_CASES])
def test_module_literals_the_script_changes_at_run_time(literal_runs: dict[str, Run], change: str, body: str) -> None:
    """A top-level literal of a user module that the script changes before the block (to an
    object without a stable repr too) keys by its value: the same value hits every run, another
    value computes what a fresh run does."""
    case = case_id(change, body)
    values = {name: case_values(run).get(case) for name, run in literal_runs.items()}
    first, second, other, again = (literal_runs[name] for name in ("first", "second", "other", "again"))
    assert values["first"] == "0.1" and first.computed(case), status(first, case)
    assert second.hit(case), status(second, case)
    assert other.computed(case) and values["other"] == "0.2", status(other, case)
    assert values["other"] == values["fresh"]
    assert again.hit(case), status(again, case)


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


def local_import_script(project: Project) -> list[str]:
    """Every case on its own copy of HELPERS (``helpers<i>`` or ``pkg<i>.helpers``), under
    checkpoint ``<case>``; returns the helpers' paths, by case."""
    paths, lines = [], ["import statecache as sc"]
    for i, (case, (helpers, holder, run)) in enumerate(LOCAL_IMPORTS.items()):
        mine = lambda text: re.sub(r"\b(helpers|pkg|run)\b", rf"\g<1>{i}", text)  # noqa: E731, B023
        paths.append(mine(helpers))
        project.write(paths[-1], HELPERS)
        if holder != "main.py":
            project.write(f"pkg{i}/__init__.py", "")
            project.write(mine(holder), mine(run))
            run = "from pkg.runner import run\n"
        section = LOCAL_MAIN.format(module=helpers[:-3].replace("/", "."), run=run).replace("import statecache as sc\n", "")
        section = re.sub(r"\b(loaded|y)\b", rf"\g<1>{i}", mine(section.replace('"a"', repr(case_id(case)))))
        lines.append(section.replace(f'print("y{i}", y{i})', f"print('y {case_id(case)}', y{i})"))
    project.write("main.py", "\n".join(lines))
    return paths


def edit_file(project: Project, path: str, old: str, new: str) -> None:
    text = (project.root / path).read_text()
    assert old in text
    project.write(path, text.replace(old, new))


LOCAL_EDITS = [('return "old"', 'return "new"'), ("SCALE = 2", "SCALE = 3"), ("return x + 1", "return x + 2")]  # k, which f calls


@pytest.fixture(scope="module")
def local_import_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[Run]]:
    """The script run twice; then after each edit (made in every case's helpers) a run, a fresh
    run and the same again."""
    project = Project(tmp_path_factory.mktemp("local"))
    paths = local_import_script(project)
    steps = [[project.run("main.py"), project.run("main.py")]]
    for old, new in LOCAL_EDITS:
        for path in paths:
            edit_file(project, path, old, new)
        steps.append([project.run("main.py"), project.run("main.py", env={"STATECACHE_DISABLE": "1"}), project.run("main.py")])
    return steps


@pytest.mark.parametrize("case", list(LOCAL_IMPORTS))
def test_a_module_imported_inside_a_helper_counts_by_what_the_helper_reads(local_import_runs: list[list[Run]], case: str) -> None:
    """Loaded already, it counts as ``import helpers`` at the top does: an unchanged rerun hits
    though a timing dict of the module changes each run, so does an edit of a function the
    helper never calls; the data and code it reaches count."""
    name = case_id(case)
    (first, second), *edits = local_import_runs
    assert first.computed(name) and case_values(first).get(name) == "8", status(first, name)
    assert second.hit(name) and case_values(second).get(name) == "8", status(second, name)
    for (run, fresh, again), (hit, expected) in zip(edits, [(True, "8"), (False, "12"), (False, "15")], strict=True):
        assert (run.hit(name), case_values(run).get(name)) == (hit, expected), status(run, name)
        assert case_values(fresh).get(name) == expected
        assert again.hit(name) and case_values(again).get(name) == expected, status(again, name)


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
