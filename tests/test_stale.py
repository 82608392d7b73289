"""Stale hits: changes a user makes between runs that must make a checkpoint recompute, and the
state a hit must leave. Each test runs real scripts against the same cache directory, with the
change in between, and checks what the next run prints against a fresh computation. Cases that
can share a process share one script (a checkpoint per case, asserted by name: tests/multicase.py);
a case whose change is the whole process's (another working directory, workers) has its own."""

from __future__ import annotations

import pytest
from conftest import Project
from multicase import assert_cases, case_values, fresh_values, status

HELPERS = """
SCALE = 2
TABLE = {}

def compute():
    return 10
"""

# -- edits between runs: each case has its own module or file, and its own edit --------------

EDITED_FILES = {
    # ``import m`` in the body binds the name, so it is no input; the module was already imported
    # above, so the body opens no file either: only the import itself can tell
    "helpers_ri.py": HELPERS.replace("compute", "compute_ri"),
    "helpers_rf.py": HELPERS.replace("compute", "compute_rf"),
    "helpers_oi.py": "from more_oi import K\n\ndef compute_oi():\n    return K\n",
    "more_oi.py": "K = 1\n",
    "attrs_m.py": HELPERS,
    "attrs_t.py": HELPERS,
    "cfg_m.py": "import json\nwith open('cfg.json') as f:\n    CFG = json.load(f)\n",
    "cfg.json": '{"x": 1}',
    "pkg/__init__.py": "",
    "pkg/sub.py": "def compute():\n    return 1\n",
    "data.txt": "a",
    "closure_m.py": "SCALE = 1\n",
    "local_m.py": "SCALE = 1\n",
    "data_l.txt": "orig",
}
EDITED = """
import os
import statecache as sc
import helpers_ri, helpers_rf, helpers_oi, attrs_m, attrs_t, cfg_m, pkg.sub, closure_m, local_m

with sc.checkpoint("reimport"):
    import helpers_ri
    v = helpers_ri.compute_ri()
print("y reimport", v)
with sc.checkpoint("reimport_from"):
    from helpers_rf import compute_rf
    v = compute_rf()
print("y reimport_from", v)
# a module imported inside the block follows its own imports
with sc.checkpoint("own_imports"):
    from helpers_oi import compute_oi
    v = compute_oi()
print("y own_imports", v)
# ``config.lr = args.lr`` style: the module's source is unchanged, its value is not
attrs_m.SCALE = 3
attrs_m.TABLE["k"] = 5
with sc.checkpoint("runtime_attr"):
    v = attrs_m.SCALE * 2
    z = attrs_m.TABLE["k"]
print("y runtime_attr", v, z)
attrs_t.SCALE = 3
attrs_t.TABLE["k"] = 5
with sc.checkpoint("runtime_item"):
    v = attrs_t.SCALE * 2
    z = attrs_t.TABLE["k"]
print("y runtime_item", v, z)
# a module value loaded from a file at import time
with sc.checkpoint("import_file"):
    v = cfg_m.CFG["x"]
print("y import_file", v)
with sc.checkpoint("submodule"):
    v = pkg.sub.compute()
print("y submodule", v)
# class scope is invisible to the methods: ``x`` in f() is the global, an input
x = 1
with sc.checkpoint("class_scope"):
    class A:
        x = 0
        def f(self):
            return x
        g = [x for _ in range(1)]
    v = A().f(), A.g
print("y class_scope", v)
# a file the block only checks for
with sc.checkpoint("exists_check"):
    v = os.path.exists("extra.csv"), os.path.getsize("data.txt")
print("y exists_check", v)
# a module held by a closure counts its data attributes by value
closure_m.SCALE = 3
def make(module):
    return lambda: module.SCALE
get_scale = make(closure_m)
with sc.checkpoint("closure_module"):
    v = get_scale()
print("y closure_module", v)
local_m.SCALE = 5
def get_local_scale():
    import local_m
    return local_m.SCALE
with sc.checkpoint("local_import"):
    v = get_local_scale()
print("y local_import", v)
# the user saves data_l.txt while a long setup runs: the result was computed from the old
# content, so the new content must not be recorded as what the block read
with sc.checkpoint("edited_while_running"):
    with open("data_l.txt") as f:
        v = f.read()
    if os.path.exists("edit.flag"):  # stands for an editor saving the file meanwhile
        with open("data_l.txt", "w") as f:
            f.write("edited")
print("y edited_while_running", v)
"""
# each case: its value before and after its edit
EDITS = {
    "reimport": ("10", "11"),
    "reimport_from": ("10", "11"),
    "own_imports": ("1", "2"),
    "runtime_attr": ("6 5", "8 5"),
    "runtime_item": ("6 5", "6 6"),
    "import_file": ("1", "22"),
    "submodule": ("1", "2"),
    "class_scope": ("(1, [1])", "(2, [2])"),
    "exists_check": ("(False, 1)", "(True, 3)"),
    "closure_module": ("3", "4"),
    "local_import": ("5", "6"),
}


def edit(project: Project) -> None:
    """Every case's edit at once: module sources, data files, and the script's own lines."""
    project.write("helpers_ri.py", EDITED_FILES["helpers_ri.py"].replace("return 10", "return 11"))
    project.write("helpers_rf.py", EDITED_FILES["helpers_rf.py"].replace("return 10", "return 11"))
    project.write("more_oi.py", "K = 2\n")
    project.write("cfg.json", '{"x": 22}')
    project.write("pkg/sub.py", "def compute():\n    return 2\n")
    project.write("extra.csv", "x\n")
    project.write("data.txt", "abc")
    script = EDITED
    for old, new in (("attrs_m.SCALE = 3", "attrs_m.SCALE = 4"), ('attrs_t.TABLE["k"] = 5', 'attrs_t.TABLE["k"] = 6'),
                     ("\nx = 1\n", "\nx = 2\n"), ("closure_m.SCALE = 3", "closure_m.SCALE = 4"),
                     ("local_m.SCALE = 5", "local_m.SCALE = 6")):
        assert script.count(old) == 1, old
        script = script.replace(old, new)
    project.write("script.py", script)


def test_each_input_a_user_edits_between_runs_makes_its_block_recompute(project: Project) -> None:
    """An unchanged rerun hits every case (but the block whose file was saved while it ran);
    after the edits each case recomputes, prints what a fresh run prints, and hits again."""
    for name, text in EDITED_FILES.items():
        project.write(name, text)
    project.write("script.py", EDITED)
    project.write("edit.flag", "")
    computed = project.run("script.py")
    assert_cases(computed, [*EDITS, "edited_while_running"], hit=False)
    values = case_values(computed)
    for case, (before, _) in EDITS.items():
        assert values[case] == before, (case, values[case])
    assert values["edited_while_running"] == "orig"
    (project.root / "edit.flag").unlink()
    unchanged = project.run("script.py")
    assert_cases(unchanged, list(EDITS), hit=True, fresh=values)
    assert_cases(unchanged, ["edited_while_running"], hit=False)
    assert case_values(unchanged)["edited_while_running"] == "edited"
    edit(project)
    changed = project.run("script.py")
    expected = fresh_values(project)
    assert_cases(changed, list(EDITS), hit=False, fresh=expected)
    assert_cases(changed, ["edited_while_running"], hit=True, fresh=expected)
    for case, (_, after) in EDITS.items():
        assert expected[case] == after, (case, expected[case])
    assert "input 'attrs_m.SCALE' changed" in status(changed, "runtime_attr")
    assert "input 'x' changed" in status(changed, "class_scope")
    again = project.run("script.py")
    assert_cases(again, [*EDITS, "edited_while_running"], hit=True, fresh=expected)


# -- what a hit leaves: module attributes, globals, mutated inputs, files the block wrote ------

RESTORED_FILES = {
    "mod_attrs.py": "MODEL = None\nTABLE = {}\n",
    "mod_init.py": "STATE = None\n\ndef init():\n    global STATE\n    STATE = 'ready'\n",
    "mod_table.py": "TABLE = {}\n",
}
RESTORED = """
import numpy as np
import statecache as sc
import mod_attrs, mod_init, mod_table
from mod_table import TABLE

# ``config.model = train()``, ``registry.TABLE[k] = v``: a hit must leave the module as the
# computing run left it
with sc.checkpoint("module_attrs"):
    mod_attrs.MODEL = "trained"
    mod_attrs.TABLE["k"] = 1
print("y module_attrs", mod_attrs.MODEL, mod_attrs.TABLE)

VOCAB = None
def build():
    global VOCAB
    VOCAB = ["a", "b"]
with sc.checkpoint("helper_globals"):
    build()
    mod_init.init()
@sc.cached_setup
def load_vocab():
    build()
    return 1
load_vocab()
print("y helper_globals", VOCAB, mod_init.STATE)

# ``with open("out.txt", "w") as f:`` leaves ``f`` bound to a closed file; dill pickles it as a
# handle and reopens it, mode "w", when the entry is loaded: a hit emptied out.txt
with sc.checkpoint("wrote_file"):
    result = 42
    with open("out.txt", "w") as f:
        f.write(str(result))
print("y wrote_file", result)
print("y wrote_file_f", "f" in globals())  # a hit leaves a closed file unbound: not compared

# the block mutates objects that other names also refer to: a hit must change the objects
# themselves, not rebind the names to copies
cfg = {"model": {"lr": 1}}
model_cfg = cfg["model"]
arr = np.zeros(3)
holder = [arr]
seen = []
log = seen
with sc.checkpoint("mutated_inputs"):
    model_cfg["lr"] = 5
    arr[0] = 7
    log.append("x")
    mod_table.TABLE["k"] = 1
print("y mutated_inputs", cfg, holder[0][0], seen, TABLE)

items = []
with sc.checkpoint("same_object"):
    items.append(1)
    same = items
items.append(2)
print("y same_object", same, same is items)

# cached_setup gets the same state rules as a checkpoint
fw = None
@sc.cached_setup
def load_out():
    global fw
    with open("out_setup.txt", "w") as fw:
        fw.write("42")
    return 42
print("y load_out", load_out())

@sc.cached_setup
def load_registry(registry, n):
    registry["n"] = n
    registry.setdefault("seen", []).append(n)
    return n * 2
registry = {}
alias = registry
print("y load_registry", load_registry(registry, 3), alias, alias is registry)

data = [1, 2]
data_alias = data
@sc.cached_setup
def grow():
    data.append(3)
    return len(data)
@sc.cached_setup
def total():
    return sum(data) * 2
print("y grow", grow(), total(), data, data_alias is data)
"""
RESTORES = {
    "module_attrs": "trained {'k': 1}",
    "helper_globals": "['a', 'b'] ready",
    "wrote_file": "42",
    "mutated_inputs": "{'model': {'lr': 5}} 7.0 ['x'] {'k': 1}",
    "same_object": "[1, 2] True",
    "load_out": "42",
    "load_registry": "6 {'n': 3, 'seen': [3]} True",
    "grow": "3 12 [1, 2, 3] True",
}


def test_a_hit_leaves_modules_globals_mutated_inputs_and_written_files_as_the_computing_run(project: Project) -> None:
    for name, text in RESTORED_FILES.items():
        project.write(name, text)
    project.write("script.py", RESTORED)
    names = [*RESTORES, "load_vocab", "total"]
    computed = project.run("script.py")
    assert_cases(computed, list(RESTORES), hit=False)
    assert all(computed.computed(n) for n in names), computed.stderr
    assert (project.root / "out.txt").read_text() == "42"
    assert case_values(computed).pop("wrote_file_f") == "True"
    hit = project.run("script.py")
    assert all(hit.hit(n) for n in names), hit.stderr
    assert_cases(hit, list(RESTORES), hit=True, fresh=case_values(computed))
    assert {k: v for k, v in case_values(hit).items() if k in RESTORES} == RESTORES, hit.stdout
    for written in ("out.txt", "out_setup.txt"):  # a hit does not reopen a file the block wrote
        assert (project.root / written).read_text() == "42", written
    assert {k: v for k, v in fresh_values(project).items() if k in RESTORES} == RESTORES


# -- cached_setup gets the same implicit inputs as a checkpoint ------------------------------

SETUP_INPUTS = """
import os
import sys
import helpers
import statecache as sc

if len(sys.argv) > 2:
    helpers.SCALE = int(sys.argv[2])

@sc.cached_setup
def load_env():
    return int(os.environ["N"]) * 10

@sc.cached_setup
def load_argv():
    return sys.argv[1] * helpers.SCALE

print("y load_env", load_env())
print("y load_argv", load_argv())
"""


def test_the_environment_argv_and_module_attributes_a_cached_setup_body_reads_are_inputs(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", SETUP_INPUTS)
    runs = [  # (arguments, N, the values printed, which functions hit)
        (("a",), "1", {"load_env": "10", "load_argv": "aa"}, set()),
        (("a",), "1", {"load_env": "10", "load_argv": "aa"}, {"load_env", "load_argv"}),
        (("a",), "2", {"load_env": "20", "load_argv": "aa"}, {"load_argv"}),
        # the script reads sys.argv above both: its arguments are an input of each
        (("b",), "2", {"load_env": "20", "load_argv": "bb"}, set()),
        (("b",), "2", {"load_env": "20", "load_argv": "bb"}, {"load_env", "load_argv"}),
        (("b", "3"), "2", {"load_env": "20", "load_argv": "bbb"}, set()),
    ]
    for args, n, values, hits in runs:
        run = project.run("script.py", *args, env={"N": n})
        assert case_values(run) == values, (args, n, run.stdout, run.stderr)
        for name in values:
            assert run.hit(name) == (name in hits), (args, n, name, status(run, name))
            assert name in hits or run.computed(name), (args, n, name, status(run, name))
        if args == ("a",) and n == "2":
            assert "os.environ['N']" in status(run, "load_env")  # the miss says which input changed
    fresh = project.run("script.py", "b", "3", env={"N": "2", "STATECACHE_DISABLE": "1"})
    assert case_values(fresh) == runs[-1][2], fresh.stdout


# -- changes of the whole process: a program the block starts, workers, the working directory --


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
