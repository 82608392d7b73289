"""Stale hits: changes a user makes between runs that must make a checkpoint recompute. Each
test runs real scripts twice against the same cache directory, with the change in between, and
checks the second run prints what a fresh computation prints."""

from __future__ import annotations

import pytest
from conftest import Project


def fresh(project: Project, script: str = "script.py") -> str:
    """What the script prints when nothing is cached."""
    return project.run(script, env={"STATECACHE_DISABLE": "1"}).stdout


HELPERS = """
SCALE = 2
TABLE = {}

def compute():
    return 10
"""


def test_a_module_imported_again_inside_the_block_counts_by_its_source(project: Project) -> None:
    # ``import helpers`` in the body binds the name, so it is no input; the module was already
    # imported above, so the body opens no file either: only the import itself can tell.
    for body in ("import helpers\n    y = helpers.compute()", "from helpers import compute\n    y = compute()"):
        project.write("helpers.py", HELPERS)
        project.write("script.py", f"""
import statecache as sc
import helpers
with sc.checkpoint("a"):
    {body}
print("y", y)
""")
        assert "y 10" in project.run("script.py").stdout
        project.write("helpers.py", HELPERS.replace("return 10", "return 11"))
        second = project.run("script.py")
        assert "y 11" in second.stdout and second.stdout == fresh(project)
        assert not second.hit("a")


def test_a_module_imported_inside_the_block_follows_its_own_imports(project: Project) -> None:
    project.write("helpers.py", "from more import K\n\ndef compute():\n    return K\n")
    project.write("more.py", "K = 1\n")
    project.write("script.py", """
import statecache as sc
import helpers
with sc.checkpoint("a"):
    from helpers import compute
    y = compute()
print("y", y)
""")
    assert "y 1" in project.run("script.py").stdout
    project.write("more.py", "K = 2\n")
    second = project.run("script.py")
    assert "y 2" in second.stdout and not second.hit("a")


def test_module_attributes_set_at_run_time_and_read_by_the_block_are_inputs(project: Project) -> None:
    # ``config.lr = args.lr`` style: the module's source is unchanged, its value is not.
    project.write("helpers.py", HELPERS)
    script = """
import statecache as sc
import helpers
helpers.SCALE = 3
helpers.TABLE["k"] = 5
with sc.checkpoint("a"):
    y = helpers.SCALE * 2
    z = helpers.TABLE["k"]
print("y", y, z)
"""
    project.write("script.py", script)
    assert "y 6 5" in project.run("script.py").stdout
    project.write("script.py", script.replace("SCALE = 3", "SCALE = 4"))
    second = project.run("script.py")
    assert "y 8 5" in second.stdout and "input 'helpers.SCALE' changed" in second.stderr
    project.write("script.py", script.replace('["k"] = 5', '["k"] = 6'))
    third = project.run("script.py")
    assert "y 6 6" in third.stdout and not third.hit("a")


def test_a_module_value_loaded_from_a_file_at_import_time_is_an_input(project: Project) -> None:
    project.write("helpers.py", "import json\nwith open('cfg.json') as f:\n    CFG = json.load(f)\n")
    project.write("cfg.json", '{"x": 1}')
    project.write("script.py", """
import statecache as sc
import helpers
with sc.checkpoint("a"):
    y = helpers.CFG["x"]
print("y", y)
""")
    assert "y 1" in project.run("script.py").stdout
    project.write("cfg.json", '{"x": 22}')
    second = project.run("script.py")
    assert "y 22" in second.stdout and not second.hit("a")


def test_a_submodule_reached_through_its_package_counts_by_its_code(project: Project) -> None:
    project.write("pkg/__init__.py", "")
    project.write("pkg/sub.py", "def compute():\n    return 1\n")
    project.write("script.py", """
import statecache as sc
import pkg.sub
with sc.checkpoint("a"):
    y = pkg.sub.compute()
print("y", y)
""")
    assert "y 1" in project.run("script.py").stdout
    project.write("pkg/sub.py", "def compute():\n    return 2\n")
    second = project.run("script.py")
    assert "y 2" in second.stdout and not second.hit("a")


def test_a_method_defined_in_the_block_reads_globals_not_class_attributes(project: Project) -> None:
    # Class scope is invisible to the methods: ``x`` in f() is the global, an input.
    script = """
import statecache as sc
x = 1
with sc.checkpoint("a"):
    class A:
        x = 0
        def f(self):
            return x
        g = [x for _ in range(1)]
    y = A().f(), A.g
print("y", y)
"""
    project.write("script.py", script)
    assert "y (1, [1])" in project.run("script.py").stdout
    project.write("script.py", script.replace("x = 1", "x = 2"))
    second = project.run("script.py")
    assert "y (2, [2])" in second.stdout and "input 'x' changed" in second.stderr


def test_attributes_of_a_module_that_the_block_sets_or_mutates_are_restored(project: Project) -> None:
    # ``config.model = train()``, ``registry.TABLE[k] = v``: a hit must leave the module as the
    # computing run left it.
    project.write("helpers.py", "MODEL = None\nTABLE = {}\n")
    project.write("script.py", """
import statecache as sc
import helpers
with sc.checkpoint("a"):
    helpers.MODEL = "trained"
    helpers.TABLE["k"] = 1
print("after", helpers.MODEL, helpers.TABLE)
""")
    expected = "after trained {'k': 1}"
    assert expected in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("a") and expected in second.stdout


def test_a_file_the_block_only_checks_for_is_recorded(project: Project) -> None:
    script = """
import os
import statecache as sc
with sc.checkpoint("a"):
    y = os.path.exists("extra.csv"), os.path.getsize("data.txt")
print("y", y)
"""
    project.write("script.py", script)
    project.write("data.txt", "a")
    assert "y (False, 1)" in project.run("script.py").stdout
    project.write("extra.csv", "x\n")
    project.write("data.txt", "abc")
    second = project.run("script.py")
    assert "y (True, 3)" in second.stdout and not second.hit("a")


def test_a_module_held_by_a_closure_counts_its_data_attributes_by_value(project: Project) -> None:
    project.write("helpers.py", "SCALE = 1\n")
    script = """
import statecache as sc
import helpers
helpers.SCALE = 3
def make(module):
    return lambda: module.SCALE
get_scale = make(helpers)
with sc.checkpoint("a"):
    y = get_scale()
print("y", y)
"""
    project.write("script.py", script)
    assert "y 3" in project.run("script.py").stdout
    project.write("script.py", script.replace("SCALE = 3", "SCALE = 4"))
    second = project.run("script.py")
    assert "y 4" in second.stdout and not second.hit("a")
    third = project.run("script.py")
    assert third.hit("a") and third.stdout == second.stdout


def test_a_helper_reading_a_module_attribute_through_a_local_import(project: Project) -> None:
    project.write("helpers.py", "SCALE = 1\n")
    script = """
import statecache as sc
import helpers
helpers.SCALE = 3
def get_scale():
    import helpers
    return helpers.SCALE
with sc.checkpoint("a"):
    y = get_scale()
print("y", y)
"""
    project.write("script.py", script)
    assert "y 3" in project.run("script.py").stdout
    project.write("script.py", script.replace("SCALE = 3", "SCALE = 4"))
    second = project.run("script.py")
    assert "y 4" in second.stdout and not second.hit("a")
    third = project.run("script.py")
    assert third.hit("a") and third.stdout == second.stdout


@pytest.mark.xfail(strict=True, reason=(
    "another program started by the block reads files statecache cannot see (no audit event in "
    "this process); untracked by design and listed in the README"))
def test_a_file_read_by_a_subprocess_of_the_block(project: Project) -> None:
    project.write("data.txt", "a")
    project.write("script.py", """
import subprocess
import sys
import statecache as sc
with sc.checkpoint("a"):
    y = subprocess.run([sys.executable, "-c", "print(open('data.txt').read())"],
                       capture_output=True, text=True).stdout.strip()
print("y", y)
""")
    assert "y a" in project.run("script.py").stdout
    project.write("data.txt", "bb")
    second = project.run("script.py")
    assert "y bb" in second.stdout and not second.hit("a")


def test_files_read_by_multiprocessing_workers_of_the_block(project: Project) -> None:
    project.write("d1.txt", "a")
    project.write("d2.txt", "b")
    project.write("script.py", """
from multiprocessing import Pool
import statecache as sc

def load(path):
    with open(path) as f:
        return f.read()

if __name__ == "__main__":
    with sc.checkpoint("a"):
        with Pool(2) as pool:
            y = pool.map(load, ["d1.txt", "d2.txt"])
        del pool
    print("y", y)
""")
    assert "y ['a', 'b']" in project.run("script.py").stdout
    project.write("d2.txt", "bbb")
    second = project.run("script.py")
    assert "y ['a', 'bbb']" in second.stdout and not second.hit("a")


def test_globals_set_by_a_helper_called_in_the_block_are_restored(project: Project) -> None:
    project.write("helpers.py", "STATE = None\n\ndef init():\n    global STATE\n    STATE = 'ready'\n")
    project.write("script.py", """
import statecache as sc
import helpers
VOCAB = None

def build():
    global VOCAB
    VOCAB = ["a", "b"]

with sc.checkpoint("a"):
    build()
    helpers.init()

@sc.cached_setup
def load():
    build()
    return 1

load()
print("after", VOCAB, helpers.STATE)
""")
    expected = "after ['a', 'b'] ready"
    assert expected in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("a") and expected in second.stdout


def test_a_data_file_changed_while_the_block_runs_is_not_recorded_as_read(project: Project) -> None:
    # The user saves data.txt while a long setup runs: the result was computed from the old
    # content, so the new content must not be recorded as what the block read.
    project.write("data.txt", "orig")
    project.write("script.py", """
import os
import statecache as sc

with sc.checkpoint("a"):
    with open("data.txt") as f:
        y = f.read()
    if os.path.exists("edit.flag"):  # stands for an editor saving the file meanwhile
        with open("data.txt", "w") as f:
            f.write("edited")
print("y", y)
""")
    (project.root / "edit.flag").touch()
    assert "y orig" in project.run("script.py").stdout
    (project.root / "edit.flag").unlink()
    second = project.run("script.py")
    assert "y edited" in second.stdout and not second.hit("a")


def test_a_hit_does_not_reopen_files_that_the_block_wrote(project: Project) -> None:
    # ``with open("out.txt", "w") as f:`` leaves ``f`` bound to a closed file; dill pickles it
    # as a handle and reopens it, mode "w", when the entry is loaded: a hit emptied out.txt.
    project.write("script.py", """
import statecache as sc
with sc.checkpoint("a"):
    result = 42
    with open("out.txt", "w") as f:
        f.write(str(result))
print("result", result, "f" in globals())
""")
    assert "result 42 True" in project.run("script.py").stdout
    assert (project.root / "out.txt").read_text() == "42"
    second = project.run("script.py")
    assert second.hit("a")
    assert (project.root / "out.txt").read_text() == "42"


def test_a_relative_path_read_from_another_working_directory(project: Project) -> None:
    # ``python ../script.py`` from a/ then from b/: the cache beside the script is shared, and
    # open("data.csv") is another file.
    project.write("script.py", """
import os
import statecache as sc
with sc.checkpoint("a"):
    with open("data.csv") as f:
        y = f.read()
    names = sorted(os.listdir("."))
print("y", y, names)
""")
    project.write("a/data.csv", "AAA")
    project.write("b/data.csv", "BBB")
    script = str(project.root / "script.py")
    first = project.run("-c", f"import os, runpy; os.chdir('a'); runpy.run_path({script!r}, run_name='__main__')")
    assert "y AAA" in first.stdout
    second = project.run("-c", f"import os, runpy; os.chdir('b'); runpy.run_path({script!r}, run_name='__main__')")
    assert "y BBB" in second.stdout and not second.hit("a")


def test_inputs_mutated_by_the_block_are_restored_in_place(project: Project) -> None:
    # The block mutates objects that other names also refer to: a hit must change the objects
    # themselves, not rebind the names to copies.
    project.write("helpers.py", "TABLE = {}\n")
    project.write("script.py", """
import numpy as np
import statecache as sc
import helpers
from helpers import TABLE
cfg = {"model": {"lr": 1}}
model_cfg = cfg["model"]
arr = np.zeros(3)
holder = [arr]
seen = []
log = seen
with sc.checkpoint("a"):
    model_cfg["lr"] = 5
    arr[0] = 7
    log.append("x")
    helpers.TABLE["k"] = 1
print("after", cfg, holder[0][0], seen, TABLE)
""")
    expected = "after {'model': {'lr': 5}} 7.0 ['x'] {'k': 1}"
    assert expected in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("a") and expected in second.stdout


def test_a_name_bound_to_a_mutated_input_stays_the_same_object(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
items = []
with sc.checkpoint("a"):
    items.append(1)
    same = items
items.append(2)
print("after", same, same is items)
""")
    expected = "after [1, 2] True"
    assert expected in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("a") and expected in second.stdout


# --- cached_setup gets the same implicit inputs and state rules as a checkpoint -------------


def test_an_environment_variable_read_by_a_cached_setup_body_is_an_input(project: Project) -> None:
    project.write("script.py", """
import os
import statecache as sc

@sc.cached_setup
def load():
    return int(os.environ["N"]) * 10

print("value", load())
""")
    assert "value 10" in project.run("script.py", env={"N": "1"}).stdout
    assert project.run("script.py", env={"N": "1"}).hit("load")
    third = project.run("script.py", env={"N": "2"})
    assert "value 20" in third.stdout and not third.hit("load")
    assert "os.environ['N']" in third.stderr  # the miss says which input changed


def test_argv_and_user_module_attributes_read_by_a_cached_setup_body(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", """
import sys
import helpers
import statecache as sc

if len(sys.argv) > 2:
    helpers.SCALE = int(sys.argv[2])

@sc.cached_setup
def load():
    return sys.argv[1] * helpers.SCALE

print("value", load())
""")
    assert "value aa" in project.run("script.py", "a").stdout
    assert project.run("script.py", "a").hit("load")
    assert "value bb" in project.run("script.py", "b").stdout
    assert "value bbb" in project.run("script.py", "b", "3").stdout


def test_a_cached_setup_hit_does_not_reopen_a_file_it_wrote(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
f = None

@sc.cached_setup
def load():
    global f
    with open("out.txt", "w") as f:
        f.write("42")
    return 42

print("value", load())
""")
    assert "value 42" in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("load") and "value 42" in second.stdout
    assert (project.root / "out.txt").read_text() == "42"


def test_an_argument_a_cached_setup_function_mutates_is_restored_in_place(project: Project) -> None:
    project.write("script.py", """
import statecache as sc

@sc.cached_setup
def load(registry, n):
    registry["n"] = n
    registry.setdefault("seen", []).append(n)
    return n * 2

registry = {}
alias = registry
print("value", load(registry, 3), alias, alias is registry)
""")
    first = project.run("script.py")
    assert "value 6 {'n': 3, 'seen': [3]} True" in first.stdout
    second = project.run("script.py")
    assert second.hit("load") and second.stdout == first.stdout


def test_a_global_a_cached_setup_function_mutates_is_restored_in_place(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
data = [1, 2]
alias = data

@sc.cached_setup
def grow():
    data.append(3)
    return len(data)

@sc.cached_setup
def total():
    return sum(data) * 2

print("out", grow(), total(), data, alias is data)
""")
    first = project.run("script.py")
    assert "out 3 12 [1, 2, 3] True" in first.stdout
    second = project.run("script.py")
    assert second.hit("grow") and second.hit("total") and second.stdout == first.stdout
