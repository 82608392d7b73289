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
