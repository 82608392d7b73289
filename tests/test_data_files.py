"""Data files a block reads, seen whatever way they change and whoever opens them (issue 11
item 3). Every case runs a real script twice or more; the value after a hit or a miss is
compared with a fresh run under ``STATECACHE_DISABLE=1``, and an unchanged rerun must hit."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from conftest import Project, Run

OLD = time.time_ns() - 600 * 1_000_000_000  # well outside the racily-clean window


def age(path: Path, ns: int = OLD) -> None:
    """Give a file an old mtime, so that a hit trusts its stat (no racily-clean re-read)."""
    os.utime(path, ns=(ns, ns))


def value(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


def fresh(project: Project, script: str = "script.py") -> str:
    return value(project.run(script, env={"STATECACHE_DISABLE": "1"}))


def check_miss(project: Project, script: str = "script.py") -> Run:
    """A run that must recompute and agree with a fresh run; the next one must hit."""
    run = project.run(script)
    assert run.computed("a") and not run.hit("a"), run.stderr
    assert value(run) == fresh(project, script)
    again = project.run(script)
    assert again.hit("a") and value(again) == value(run), again.stderr
    return run


READ = """
import statecache as sc
with sc.checkpoint("a"):
    with open("data.txt") as f:
        y = f.read()
print("y", y)
"""


def first_run(project: Project, script: str = READ) -> Path:
    data = project.write("data.txt", "aaaa")
    age(data)
    project.write("script.py", script)
    assert value(project.run("script.py")) == "y aaaa"
    second = project.run("script.py")
    assert second.hit("a") and value(second) == "y aaaa", second.stderr
    return data


def test_a_same_size_edit_with_its_mtime_put_back_is_seen(project: Project) -> None:
    data = first_run(project)
    data.write_text("bbbb")
    age(data)  # as touch -r or unpacking an archive does
    assert check_miss(project).stdout.count("y bbbb") == 1


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_seen(project: Project) -> None:
    data = first_run(project)
    other = project.write("other.txt", "cccc")
    age(other)
    os.replace(other, data)  # another inode, same size and mtime
    assert value(check_miss(project)) == "y cccc"
    shutil.copy2(project.write("third.txt", "dddd"), data)  # cp -p: same inode, content copied
    age(data)
    assert value(check_miss(project)) == "y dddd"


def test_a_chmod_alone_rereads_the_content_and_still_hits(project: Project) -> None:
    data = first_run(project)
    data.chmod(0o600)  # moves the ctime; the content decides
    run = project.run("script.py")
    assert run.hit("a") and value(run) == fresh(project)
