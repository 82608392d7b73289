"""Data files a block reads, seen whatever way they change and whoever opens them (issue 11
item 3). Every case runs a real script twice or more; the value after a hit or a miss is
compared with a fresh run under ``STATECACHE_DISABLE=1``, and an unchanged rerun must hit."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
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


def test_a_directory_pattern_expands_to_every_file_under_it(tmp_path: Path) -> None:
    from statecache.key.files import expand_files_pattern

    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.csv").write_text("1")
    (tmp_path / "data" / "sub" / "b.csv").write_text("2")
    (tmp_path / "data" / ".statecache").mkdir()
    (tmp_path / "data" / ".statecache" / "x.sc").write_text("entry")
    (tmp_path / "empty").mkdir()
    data = tmp_path / "data"
    assert expand_files_pattern("data", str(tmp_path)) == [str(data / "a.csv"), str(data / "sub" / "b.csv")]
    assert expand_files_pattern("d*", str(tmp_path)) == [str(data / "a.csv"), str(data / "sub" / "b.csv")]
    assert expand_files_pattern("data/*.csv", str(tmp_path)) == [str(data / "a.csv")]
    assert expand_files_pattern("empty", str(tmp_path)) == []
    assert expand_files_pattern("missing", str(tmp_path)) == []


@pytest.mark.xfail(strict=True, reason=(
    "until key/components.py files_component takes each pattern's files from "
    "key.files.expand_files_pattern (a change for the lead)"))
def test_files_naming_a_directory_keys_on_its_contents(project: Project) -> None:
    project.write("data/sub/b.txt", "b")
    project.write("script.py", """
import statecache as sc
with sc.checkpoint("a", files=["data"]):
    y = 1  # reads nothing itself: only files= can make it miss
print("y", y)
""")
    assert value(project.run("script.py")) == "y 1"
    assert project.run("script.py").hit("a")
    project.write("data/sub/b.txt", "bb")
    check_miss(project)
    project.write("data/c.txt", "c")
    check_miss(project)
