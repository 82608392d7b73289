"""Process state and the running code: a key must describe the code that ran and the process
state the block read, and a hit must leave the process as the computing run left it (issue 11
items 1, 2, 7, 10). Each test runs real scripts in subprocesses, twice or more, and compares
with a run where caching is off."""

from __future__ import annotations

from conftest import Project


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


def runs_hit_like_fresh(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    """Run twice: the first computes, the second hits and prints what the first printed, and
    that is what a run without caching prints. Returns that output."""
    first = project.run(*args, env=env)
    assert first.computed("a"), first.stderr
    second = project.run(*args, env=env)
    assert second.hit("a"), second.stderr
    assert second.stdout == first.stdout == fresh(project, *args, env=env)
    return second.stdout


def test_sys_path_changes_made_by_the_block_are_replayed_on_a_hit(project: Project) -> None:
    project.write("lib/mylib.py", "VALUE = 7\n")
    project.write("vendor/other.py", "VALUE = 8\n")
    project.write("script.py", """
import os, sys
import statecache as sc
here = os.path.dirname(os.path.abspath(__file__))
with sc.checkpoint("a"):
    sys.path.insert(0, os.path.join(here, "lib"))
    sys.path.append(os.path.join(here, "vendor"))
    n = 1
import mylib, other
print("values", mylib.VALUE, other.VALUE, n)
print("front", sys.path[0].endswith("lib"), "end", sys.path[-1].endswith("vendor"))
""")
    out = runs_hit_like_fresh(project, "script.py")
    assert "values 7 8 1" in out and "front True end True" in out


def test_environment_changes_made_by_the_block_are_replayed_on_a_hit(project: Project) -> None:
    project.write("script.py", """
import os
import statecache as sc
with sc.checkpoint("a"):
    os.environ["MODE"] = "eval"
    os.environ.update(THREADS="4", SEED="1")
    del os.environ["DROP_ME"]
    n = 1
print("env", os.environ.get("MODE"), os.environ.get("THREADS"), os.environ.get("SEED"),
      "DROP_ME" in os.environ, n)
""")
    out = runs_hit_like_fresh(project, "script.py", env={"DROP_ME": "x"})
    assert "env eval 4 1 False 1" in out


def test_sys_argv_changes_made_by_the_block_are_replayed_on_a_hit(project: Project) -> None:
    project.write("script.py", """
import sys
import statecache as sc
with sc.checkpoint("a"):
    n = len(sys.argv)
    del sys.argv[1:]
    sys.argv.append("--quiet")
print("argv", sys.argv[1:], n)
""")
    out = runs_hit_like_fresh(project, "script.py", "--n", "3")
    assert "argv ['--quiet'] 3" in out


def test_cached_setup_replays_process_changes_too(project: Project) -> None:
    project.write("lib/mylib.py", "VALUE = 7\n")
    project.write("script.py", """
import os, sys
import statecache as sc
here = os.path.dirname(os.path.abspath(__file__))

@sc.cached_setup(name="a")
def setup():
    sys.path.insert(0, os.path.join(here, "lib"))
    os.environ["MODE"] = "eval"
    return 1

n = setup()
import mylib
print("values", mylib.VALUE, os.environ.get("MODE"), n)
""")
    out = runs_hit_like_fresh(project, "script.py")
    assert "values 7 eval 1" in out
