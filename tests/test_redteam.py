"""Red-team cases for the one-engine rebuild: stale hits (and needless misses) found by trying
what research scripts do. Each hole is a strict xfail naming what is not seen, so that the fix
turns it into a failure asking for the mark to go. Every case runs real scripts in
subprocesses against a cache under tmp_path, checks the value after the change against a fresh
run with ``STATECACHE_DISABLE=1``, and checks that an unchanged rerun hits (so a library that
never caches cannot pass)."""

from __future__ import annotations

import pytest
from conftest import Project, Run

HEAD = "import os, sys\nimport statecache as sc\n"


def fresh(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    """What the script prints when nothing is cached."""
    return project.run(*args, env={**(env or {}), "STATECACHE_DISABLE": "1"}).stdout


def assert_recomputes(project: Project, *args: str, env: dict[str, str] | None = None) -> None:
    """After a change: the run prints what a fresh run prints, and the rerun hits."""
    second = project.run(*args, env=env)
    assert second.stdout == fresh(project, *args, env=env), second.stderr
    assert project.run(*args, env=env).hit("a")


def first(project: Project, *args: str, env: dict[str, str] | None = None) -> Run:
    run = project.run(*args, env=env)
    assert run.computed("a"), run.stderr
    return run


# -- source-keyed helpers ---------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "key/code.py _source_node: a lambda's statement is found by its first line, so with two "
    "statements on one line ('f = lambda: 1; g = lambda: 2') f's code is looked up in g's "
    "statement, matched against the WHOLE file's compile (which holds f's code) and keyed by "
    "g's source: an edit of f is not seen (bytecode keying saw it)"))
@pytest.mark.parametrize("where", ["script", "module"])
def test_two_lambdas_on_one_line_each_key_their_own_source(project: Project, where: str) -> None:
    defs = "f = lambda: 1; g = lambda: 2\n"
    if where == "module":
        project.write("helpers.py", defs)
        project.write("script.py", HEAD + "from helpers import f\nwith sc.checkpoint('a'):\n    y = f()\nprint(y)\n")
    else:
        project.write("script.py", HEAD + defs + "with sc.checkpoint('a'):\n    y = f()\nprint(y)\n")
    assert first(project, "script.py").stdout == "1\n"
    target = "helpers.py" if where == "module" else "script.py"
    path = project.root / target
    path.write_text(path.read_text().replace("lambda: 1", "lambda: 3"))
    assert_recomputes(project, "script.py")


def test_lambdas_in_one_statement_on_separate_lines_key_their_own_source(project: Project) -> None:
    # Held: each lambda of a list is found by its own line.
    body = "FNS = [lambda: 1,\n       lambda: 2]\nwith sc.checkpoint('a'):\n    y = FNS[0]()\nprint(y)\n"
    project.write("script.py", HEAD + body)
    first(project, "script.py")
    project.write("script.py", HEAD + body.replace("lambda: 1", "lambda: 5"))
    assert_recomputes(project, "script.py")


# -- a user module edited between its import and the block -----------------------------------

EDITOR = """
if os.path.exists("edit.flag"):  # stands for an editor saving helpers.py while the script runs
    os.remove("edit.flag")
    with open("helpers.py", "w") as f:
        f.write("SCALE = 3\\n")
"""


@pytest.mark.xfail(strict=True, reason=(
    "key/code.py edited_after_loading looks only at functions and methods: a module-level value "
    "edited after the module was loaded (SCALE = 2 -> 3) leaves every function matching, so the "
    "import is keyed by the new text alone and the old value's result is saved under it"))
@pytest.mark.parametrize("body", [
    "from helpers import SCALE\n    y = SCALE * 10",
    "y = load()",
])
def test_module_data_edited_after_import_does_not_key_the_new_text(project: Project, body: str) -> None:
    project.write("helpers.py", "SCALE = 2\n")
    project.write("edit.flag", "")
    project.write("script.py", HEAD + "import helpers\n" + EDITOR + """
def load():
    import helpers
    return helpers.SCALE * 10
with sc.checkpoint('a'):
    """ + body + "\nprint(y)\n")
    assert first(project, "script.py").stdout == "20\n"
    assert_recomputes(project, "script.py")


# -- mutation of objects that are not list/dict/array ---------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "an instance of a user class mutated by attribute assignment in the block comes back "
    "rebound: other names for it (alias, a container holding it) keep the old state after a "
    "hit (_binders restore in place only for list/dict/array)"))
def test_a_user_object_mutated_in_the_block_is_updated_in_place(project: Project) -> None:
    project.write("helpers.py", "class Box:\n    def __init__(self):\n        self.v = 0\n")
    project.write("script.py", HEAD + """
from helpers import Box
b = Box()
alias = b
with sc.checkpoint('a'):
    b.v = 2
print(b.v, alias.v, alias is b)
""")
    assert first(project, "script.py").stdout == "2 2 True\n"
    hit = project.run("script.py")
    assert hit.hit("a") and hit.stdout == fresh(project, "script.py")


# -- process state read by the block ---------------------------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "key/source.py implicit_reads counts os.environ['K'], .get('K') and getenv('K'), not the "
    "other constant-key reads the README promises: 'K' in os.environ, setdefault, pop"))
@pytest.mark.parametrize("expr", [
    "'N' in os.environ",
    "os.environ.setdefault('N', '1')",
    "os.environ.pop('N', None)",
])
def test_constant_key_environment_reads_are_inputs(project: Project, expr: str) -> None:
    project.write("script.py", HEAD + f"with sc.checkpoint('a'):\n    y = {expr}\nprint(y)\n")
    first(project, "script.py", env={"N": "3"} if not expr.startswith("'N' in") else {})
    assert_recomputes(project, "script.py", env={"N": "5"})


@pytest.mark.xfail(strict=True, reason=(
    "process state read inside the standard library is not an input: argparse reads sys.argv, "
    "os.getcwd/os.path.abspath/Path.cwd the working directory (issue 11 item 2)"))
@pytest.mark.parametrize("expr", [
    "argparse",
    "os.getcwd()",
    "os.path.abspath('x')",
])
def test_process_state_read_through_the_standard_library(project: Project, expr: str) -> None:
    if expr == "argparse":
        block = "import argparse\n    p = argparse.ArgumentParser()\n    p.add_argument('--n')\n    y = p.parse_args().n"
        runs = [(["script.py", "--n", "3"], "."), (["script.py", "--n", "5"], ".")]
    else:
        block = f"y = {expr}"
        runs = [(["script.py"], "sub1"), (["script.py"], "sub2")]
    project.write("script.py", HEAD + f"with sc.checkpoint('a'):\n    {block}\nprint(y)\n")
    (project.root / "sub1").mkdir()
    (project.root / "sub2").mkdir()
    env = {"STATECACHE_DIR": str(project.cache)}

    def args(argv: list[str], cwd: str) -> tuple[str, ...]:
        script = str(project.root / argv[0])
        code = (f"import os, runpy, sys; os.chdir({cwd!r}); sys.argv = {[script, *argv[1:]]!r}; "
                f"runpy.run_path({script!r}, run_name='__main__')")
        return ("-c", code)

    first(project, *args(*runs[0]), env=env)
    assert_recomputes(project, *args(*runs[1]), env=env)


# -- directory listings ----------------------------------------------------------------------

FAKELIB = """
import os

def read_all(folder):
    return sorted(open(os.path.join(folder, n)).read() for n in os.listdir(folder) if n.endswith(".txt"))
"""
USES_FAKELIB = HEAD + """
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor", "site-packages"))
import fakelib
with sc.checkpoint('a'):
    y = fakelib.read_all({folder!r})
print(y)
"""


@pytest.mark.xfail(strict=True, reason=(
    "key/files.py _audit/_on_sys_path: an installed library listing a sys.path entry is taken "
    "for a module scan, but the script's own folder is sys.path[0] and is where many scripts "
    "keep their data: a library reading every *.txt of '.' misses a new file (listing dropped)"))
def test_an_installed_library_listing_the_scripts_folder_for_data(project: Project) -> None:
    project.write("vendor/site-packages/fakelib.py", FAKELIB)
    project.write("a.txt", "A")
    project.write("script.py", USES_FAKELIB.format(folder="."))
    first(project, "script.py")
    project.write("b.txt", "B")
    assert_recomputes(project, "script.py")


def test_an_installed_library_listing_a_data_folder(project: Project) -> None:
    # Held: a folder that is not on sys.path counts when a library lists it.
    project.write("vendor/site-packages/fakelib.py", FAKELIB)
    project.write("data/a.txt", "A")
    project.write("script.py", USES_FAKELIB.format(folder="data"))
    first(project, "script.py")
    project.write("data/b.txt", "B")
    assert_recomputes(project, "script.py")


# -- code reached dynamically (README: not tracked) ------------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "documented as not tracked: a helper dispatching through globals()[name] reaches a "
    "function its code never names, so an edit of that function is not seen"))
def test_a_helper_dispatching_through_globals(project: Project) -> None:
    helpers = "def step_a():\n    return 1\n\ndef run(name):\n    return globals()['step_' + name]()\n"
    project.write("helpers.py", helpers)
    project.write("script.py", HEAD + "from helpers import run\nwith sc.checkpoint('a'):\n    y = run('a')\nprint(y)\n")
    first(project, "script.py")
    project.write("helpers.py", helpers.replace("return 1", "return 2"))
    assert_recomputes(project, "script.py")
