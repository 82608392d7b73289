"""statecache.register_fingerprint: a type statecache cannot fingerprint counts by what the
user's function returns, in real scripts run twice or more."""

from __future__ import annotations

import pytest
from conftest import Project

SCRIPT = """
import os, threading
import statecache as sc

class Model:
    def __init__(self, n):
        self.config = {"n": n}
        self.lock = threading.Lock()  # cannot be pickled, so not fingerprinted either

REGISTER

m = Model(int(os.environ["N"]))
holder = {"models": [m]}
with sc.checkpoint("a"):
    y = holder["models"][0].config["n"] * 2
print("y", y)
"""


def script(register: str) -> str:
    return SCRIPT.replace("REGISTER", register)


@pytest.mark.parametrize("register", [
    "sc.register_fingerprint(Model, lambda m: m.config)",
    "sc.register_fingerprint(Model, lambda m: m.config)\nModel = type('SubModel', (Model,), {})",
], ids=["the-type", "a-subclass"])
def test_a_registered_type_counts_by_what_its_function_returns(project: Project, register: str) -> None:
    project.write("script.py", script(register))
    first = project.run("script.py", env={"N": "3"})
    assert first.computed("a") and "y 6" in first.stdout, first.stderr
    again = project.run("script.py", env={"N": "3"})
    assert again.hit("a") and again.stdout == first.stdout, again.stderr
    changed = project.run("script.py", env={"N": "4"})
    fresh = project.run("script.py", env={"N": "4", "STATECACHE_DISABLE": "1"})
    assert not changed.hit("a") and changed.stdout == fresh.stdout == "y 8\n", changed.stderr


def test_without_registration_the_error_names_register_fingerprint(project: Project) -> None:
    project.write("script.py", script(""))
    run = project.run("script.py", env={"N": "3"}, check=False)
    assert run.returncode != 0
    assert "register_fingerprint(" in run.stderr and "ignore=" in run.stderr, run.stderr


def test_a_failing_function_is_named(project: Project) -> None:
    project.write("script.py", script("sc.register_fingerprint(Model, lambda m: m.missing)"))
    run = project.run("script.py", env={"N": "3"}, check=False)
    assert run.returncode != 0 and "register_fingerprint" in run.stderr and "missing" in run.stderr


def test_bad_arguments_are_refused(project: Project) -> None:
    project.write("script.py", "import statecache as sc\nsc.register_fingerprint('Model', len)\n")
    run = project.run("script.py", check=False)
    assert "ConfigError" in run.stderr and "takes a type first" in run.stderr
