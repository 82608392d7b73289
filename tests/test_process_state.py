"""Process state and the running code: a key must describe the code that ran and the process
state the block read, and a hit must leave the process as the computing run left it (issue 11
items 1, 2, 7, 10). Each test runs real scripts in subprocesses, twice or more, and compares
with a run where caching is off."""

from __future__ import annotations

import subprocess
import sys

from conftest import Project, Run, subprocess_env
from multicase import assert_cases, case_values, fresh_values


def fresh(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    """What the script prints when nothing is cached."""
    return project.run(*args, env={**(env or {}), "STATECACHE_DISABLE": "1"}).stdout


EDITS_ITSELF = """
import os
import statecache as sc
if os.environ.get("EDIT"):
    # the user saves the file while the slow part above the block runs
    with open(__file__) as f:
        text = f.read()
    with open(__file__, "w") as f:
        f.write(text.replace("6 * " + "7", "6 * " + "80"))
with sc.checkpoint("a"):
    y = 6 * 7
print("y", y)
"""


def test_a_block_edited_while_the_script_runs_keys_the_code_that_ran(project: Project) -> None:
    project.write("script.py", EDITS_ITSELF)
    first = project.run("script.py", env={"EDIT": "1"})
    assert "y 42" in first.stdout and first.computed("a")
    assert "6 * 80" in (project.root / "script.py").read_text()
    second = project.run("script.py")
    assert "y 480" in second.stdout and second.computed("a")
    assert second.stdout == fresh(project, "script.py")
    third = project.run("script.py")
    assert "y 480" in third.stdout and third.hit("a")


# four blocks, each changing its own part of the process (the arguments last: sys.argv[1:] is
# an input of every block after it), in one script run twice
REPLAYED = """
import os, sys
import statecache as sc
here = os.path.dirname(os.path.abspath(__file__))
with sc.checkpoint("path"):
    sys.path.insert(0, os.path.join(here, "lib"))
    sys.path.append(os.path.join(here, "vendor"))
    n = 1
import mylib, other
print("values", mylib.VALUE, other.VALUE, n)
print("front", sys.path[0].endswith("lib"), "end", sys.path[-1].endswith("vendor"))
with sc.checkpoint("env"):
    os.environ["MODE"] = "eval"
    os.environ.update(THREADS="4", SEED="1")
    del os.environ["DROP_ME"]
    n = 1
print("env", os.environ.get("MODE"), os.environ.get("THREADS"), os.environ.get("SEED"),
      "DROP_ME" in os.environ, n)

@sc.cached_setup(name="setup")
def setup():
    sys.path.insert(0, os.path.join(here, "lib2"))
    os.environ["STAGE"] = "eval"
    return 1

n = setup()
import mylib2
print("setup values", mylib2.VALUE, os.environ.get("STAGE"), n)
with sc.checkpoint("argv"):
    n = len(sys.argv)
    del sys.argv[1:]
    sys.argv.append("--quiet")
print("argv", sys.argv[1:], n)
"""


def test_process_changes_made_by_a_block_are_replayed_on_a_hit(project: Project) -> None:
    """sys.path (front and end), environment variables (set, updated, deleted), sys.argv, and the
    same through a cached_setup function: the hit leaves the process as the computing run did."""
    project.write("lib/mylib.py", "VALUE = 7\n")
    project.write("vendor/other.py", "VALUE = 8\n")
    project.write("lib2/mylib2.py", "VALUE = 9\n")
    project.write("script.py", REPLAYED)
    args, env = ("script.py", "--n", "3"), {"DROP_ME": "x"}
    first = project.run(*args, env=env)
    second = project.run(*args, env=env)
    for name in ("path", "env", "setup", "argv"):
        assert first.computed(name), first.stderr
        assert second.hit(name), second.stderr
    assert second.stdout == first.stdout == fresh(project, *args, env=env)
    for line in ("values 7 8 1", "front True end True", "env eval 4 1 False 1", "setup values 9 eval 1", "argv ['--quiet'] 3"):
        assert line in second.stdout, second.stdout


def reruns(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    """Run once more after a change: it must compute, and a run after it must hit and print
    the same. Returns what it printed."""
    second = project.run(*args, env=env)
    assert second.computed("a"), second.stderr
    third = project.run(*args, env=env)
    assert third.hit("a") and third.stdout == second.stdout, third.stderr
    return second.stdout


def run_in(project: Project, folder: str, script: str) -> Run:
    """``python script`` from another working directory (the same cache: beside the script)."""
    proc = subprocess.run(
        [sys.executable, script], cwd=project.root / folder, env=subprocess_env(),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr)


ARGPARSE = """
import argparse
import statecache as sc
from helpers import options
with sc.checkpoint("in_block"):
    parser = argparse.ArgumentParser()
    parser.add_argument('--n', type=int)
    n = parser.parse_args().n * 10
print("in_block", n)
with sc.checkpoint("helper"):
    n = options().n * 10
print("helper", n)
"""


def test_arguments_read_through_a_library_are_inputs(project: Project) -> None:
    # argparse reads sys.argv inside the standard library, in the block or through a helper
    project.write("helpers.py", """
import argparse
def options():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1)
    return parser.parse_args()
""")
    project.write("script.py", ARGPARSE)
    first = project.run("script.py", "--n", "3")
    unchanged = project.run("script.py", "--n", "3")
    second = project.run("script.py", "--n", "5")
    third = project.run("script.py", "--n", "5")
    for name in ("in_block", "helper"):
        assert f"{name} 30" in first.stdout.splitlines() and first.computed(name), (name, first.stderr)
        assert unchanged.hit(name), (name, unchanged.stderr)
        assert f"{name} 50" in second.stdout.splitlines() and second.computed(name), (name, second.stderr)
        assert third.hit(name), (name, third.stderr)
    assert third.stdout == second.stdout == fresh(project, "script.py", "--n", "5")


ENV_READS = {
    "in": "n = 'FAST' in os.environ",
    "not_in": "n = 'FAST' not in os.environ",
    "whole": "n = sorted(k for k in dict(os.environ) if k.startswith('FAST'))",
    "loop": "n = [k for k in os.environ if k == 'FAST']",
    "setdefault": "n = os.environ.setdefault('FAST', 'no')",  # sets FAST: after the others
}
# pop takes FAST away from what a later block reads: a script of its own
ENV_POP = {"pop": "n = os.environ.pop('FAST', 'no')"}


def test_environment_variables_tested_or_defaulted_are_inputs(project: Project) -> None:
    for script, bodies in (("s0.py", ENV_READS), ("s1.py", ENV_POP)):
        project.write(script, "import os\nimport statecache as sc\n" + "".join(
            f"with sc.checkpoint({name!r}):\n    {body}\nprint({name!r}, n)\n" for name, body in bodies.items()
        ))
        first = project.run(script)
        unchanged = project.run(script)
        changed = project.run(script, env={"FAST": "yes"})
        again = project.run(script, env={"FAST": "yes"})
        expected = fresh(project, script, env={"FAST": "yes"})
        for name, body in bodies.items():
            assert first.computed(name) and unchanged.hit(name), (body, unchanged.stderr)
            assert changed.computed(name), (body, changed.stderr)
            assert again.hit(name), (body, again.stderr)
            line = [ln for ln in changed.stdout.splitlines() if ln.split()[0] == name]
            assert line and line[0] not in first.stdout.splitlines(), (body, changed.stdout, first.stdout)
        assert changed.stdout == again.stdout == expected


def test_a_volatile_variable_does_not_change_a_block_reading_the_whole_environment(project: Project) -> None:
    project.write("script.py", """
import os
import statecache as sc
with sc.checkpoint("a"):
    n = len([k for k in os.environ if k.startswith("X_")])
print("n", n)
""")
    assert project.run("script.py", env={"OLDPWD": "/a"}).computed("a")
    assert project.run("script.py", env={"OLDPWD": "/b"}).hit("a")


CWD_READS = {
    "getcwd": "n = os.getcwd()",
    "abspath": "n = os.path.abspath('data')",
    "realpath": "n = os.path.realpath('.')",
    "resolve": "n = str(Path('data').resolve())",
    "cwd": "n = str(Path.cwd())",
}


def test_the_working_directory_is_an_input_when_the_block_resolves_paths(project: Project) -> None:
    (project.root / "sub").mkdir()
    project.write("script.py", "import os\nfrom pathlib import Path\nimport statecache as sc\n" + "".join(
        f"with sc.checkpoint({name!r}):\n    {body}\nprint({name!r}, n)\n" for name, body in CWD_READS.items()
    ))
    first = project.run("script.py")
    unchanged = project.run("script.py")
    other = run_in(project, "sub", "../script.py")
    again = run_in(project, "sub", "../script.py")
    for name, body in CWD_READS.items():
        assert first.computed(name) and unchanged.hit(name), (body, unchanged.stderr)
        assert other.computed(name), (body, other.stderr)
        line = [ln for ln in other.stdout.splitlines() if ln.split()[0] == name]
        assert line and line[0] not in first.stdout.splitlines(), (body, other.stdout)
        assert again.hit(name), (body, again.stderr)


SEEDS = {
    "random": ("import random", "random.seed(0)", "random.random()"),
    "numpy": ("import numpy as np", "np.random.seed(0)", "float(np.random.rand())"),
    "numpy Generator": ("import numpy as np", "rng = np.random.default_rng(0)", "float(rng.random())"),
}
# torch's generator: tests/test_torch_keys.py, in the script that pays for import torch anyway


def test_a_block_seeding_its_own_generator_hits(project: Project) -> None:
    generators = list(SEEDS)
    script = "import statecache as sc\n"
    for i, generator in enumerate(generators):
        imports, seed, draw = SEEDS[generator]
        script += f"{imports}\nwith sc.checkpoint('g{i}'):\n    {seed}\n    x{i} = {draw}\nprint({generator!r}, 'x', x{i}, 'next', {draw})\n"
    project.write("script.py", script)
    first = project.run("script.py")
    second = project.run("script.py")
    for i, generator in enumerate(generators):
        assert first.computed(f"g{i}"), (generator, first.stderr)
        assert second.hit(f"g{i}"), (generator, second.stderr)
    assert second.stdout == first.stdout == fresh(project, "script.py")
    assert len(second.stdout.splitlines()) == len(generators)


def test_a_generator_drawn_from_before_it_is_seeded_still_counts(project: Project) -> None:
    project.write("script.py", """
import os, random
import statecache as sc
random.seed(int(os.environ["S"]))
with sc.checkpoint("a"):
    x = random.random()
    random.seed(0)
print("x", x)
""")
    assert project.run("script.py", env={"S": "1"}).computed("a")
    assert project.run("script.py", env={"S": "1"}).hit("a")
    second = project.run("script.py", env={"S": "2"})
    assert second.computed("a") and second.stdout == fresh(project, "script.py", env={"S": "2"})


IDENTITY = """
import helpers
from helpers import Model
import statecache as sc

class Corpus:
    def __init__(self, words):
        self.words = words

    def build(self):
        with sc.checkpoint("corpus"):
            self.vocab = sorted(set(self.words))
        return self

corpus = Corpus(["b", "a", "b"])
other_name = corpus
corpus.build()
print("y corpus", other_name.vocab, other_name is corpus)

class Config:
    def __init__(self):
        self.n = 1

@sc.cached_setup(name="setup_argument")
def prepare(config):
    config.n = 2
    config.ready = True
    return config.n * 10

config = Config()
alias = config
print("y setup_argument", prepare(config), alias.n, getattr(alias, "ready", False))

with sc.checkpoint("class_attribute"):
    Model.default = 5
    helpers.Model.table["k"] = 2
    n = Model().size()
print("y class_attribute", Model.default, Model.table, helpers.Model is Model, n)
"""


def test_objects_and_classes_the_block_mutates_keep_their_identity_after_a_hit(project: Project) -> None:
    """An instance a method's block sets an attribute on, an argument a cached_setup function
    mutates, and a class of a local module given class attributes: after a hit every other name
    for them sees what the computing run left. One script, a checkpoint per case. (A fitted
    estimator held under another name: tests/test_in_place.py, the pipeline cases.)"""
    project.write("helpers.py", "class Model:\n    default = 1\n    table = {}\n\n    def size(self):\n        return 3\n")
    project.write("script.py", IDENTITY)
    expected = {"corpus": "['a', 'b'] True", "setup_argument": "20 2 True", "class_attribute": "5 {'k': 2} True 3"}
    computed = project.run("script.py")
    assert_cases(computed, list(expected), hit=False)
    assert case_values(computed) == expected, computed.stdout
    assert_cases(project.run("script.py"), list(expected), hit=True, fresh=fresh_values(project))
