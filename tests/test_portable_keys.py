"""Portable keys (issue 13 item 1): two clones of one project at different paths compute the
same keys, so a copied cache (or one shared through STATECACHE_DIR) is reused; a data file is
still checked in the clone that runs, by content, so an edit there misses. Real scripts run
twice or more; values after a hit are compared with a fresh run under STATECACHE_DISABLE=1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import Project
from test_data_files import age, check_miss, fresh, value

# DATA and the Path built from __file__ are inputs of the block: absolute paths that differ
# between clones, and that must key relative to the project root
SCRIPT = """
import os
from pathlib import Path
import statecache as sc

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "x.csv")
CONFIG = Path(HERE) / "config.txt"
with sc.checkpoint("a"):
    with open(DATA) as f:
        rows = f.read().split()
    y = [int(r) * int(CONFIG.read_text()) for r in rows]
print("y", y, os.path.relpath(DATA, HERE))
"""


def make_clone(root: Path, marker: bool = True) -> Project:
    clone = Project(root)
    clone.write("script.py", SCRIPT)
    clone.write("data/x.csv", "1 2 3\n")
    clone.write("config.txt", "10")
    if marker:
        clone.write("pyproject.toml", "[project]\nname = 'exp'\n")
    for rel in ("data/x.csv", "config.txt"):
        age(root / rel)
    return clone


def test_a_project_copied_with_its_cache_hits_in_the_copy(tmp_path: Path) -> None:
    first = make_clone(tmp_path / "one")
    run = first.run("script.py")
    assert run.computed("a") and value(run) == "y [10, 20, 30] data/x.csv"
    shutil.copytree(first.root, tmp_path / "two")  # new inodes and ctimes: checked by content
    second = Project(tmp_path / "two")
    hit = second.run("script.py")
    assert hit.hit("a"), hit.stderr
    assert value(hit) == fresh(second)
    assert second.run("script.py").hit("a")


def test_a_fresh_clone_sharing_only_the_cache_hits(tmp_path: Path) -> None:
    env = {"STATECACHE_DIR": str(tmp_path / "shared-cache")}
    first, second = make_clone(tmp_path / "alice" / "exp"), make_clone(tmp_path / "bob" / "work" / "exp")
    assert first.run("script.py", env=env).computed("a")
    hit = second.run("script.py", env=env)
    assert hit.hit("a"), hit.stderr
    assert value(hit) == fresh(second)


@pytest.mark.parametrize("edit", ["data/x.csv", "config.txt"])
def test_an_edited_data_file_in_the_clone_misses(tmp_path: Path, edit: str) -> None:
    env = {"STATECACHE_DIR": str(tmp_path / "shared-cache")}
    first, second = make_clone(tmp_path / "one"), make_clone(tmp_path / "two")
    assert first.run("script.py", env=env).computed("a")
    path = second.root / edit
    path.write_text(path.read_text().replace("1", "4"))  # same size
    age(path)
    run = second.run("script.py", env=env)
    assert run.computed("a") and not run.hit("a"), run.stderr
    assert value(run) == fresh(second) != fresh(first)
    assert second.run("script.py", env=env).hit("a")
    # one entry per key: the first clone finds the second's, whose file differs from its own
    back = first.run("script.py", env=env)
    assert back.computed("a") and value(back) == fresh(first), back.stderr


def test_an_edited_data_file_in_a_copy_with_its_cache_misses(tmp_path: Path) -> None:
    first = make_clone(tmp_path / "one")
    first.run("script.py")
    shutil.copytree(first.root, tmp_path / "two")
    second = Project(tmp_path / "two")
    (second.root / "data" / "x.csv").write_text("7 8 9\n")
    assert value(check_miss(second)) == "y [70, 80, 90] data/x.csv"


def test_statecache_root_moves_the_root(tmp_path: Path) -> None:
    # no marker: each script's folder holds its .statecache, so the root is the script's folder
    # and data in a sibling folder is outside it: absolute, and the copy recomputes
    script = SCRIPT.replace('os.path.join(HERE, "data"', 'os.path.join(os.path.dirname(HERE), "data"')
    for name in ("one", "two"):
        clone = make_clone(tmp_path / name, marker=False)
        clone.write("code/script.py", script)
        clone.write("code/config.txt", "10")
        age(clone.root / "code" / "config.txt")
    one, two = Project(tmp_path / "one" / "code"), Project(tmp_path / "two" / "code")
    shared = {"STATECACHE_DIR": str(tmp_path / "shared-cache")}
    assert one.run("script.py", env=shared).computed("a")
    miss = two.run("script.py", env=shared)
    assert miss.computed("a") and "input 'DATA' changed" in miss.stderr, miss.stderr

    for clone in (one, two):
        rooted = {**shared, "STATECACHE_ROOT": str(clone.root.parent)}
        first = clone.run("script.py", env=rooted)
        assert first.computed("a") if clone is one else first.hit("a"), first.stderr
        assert value(first) == fresh(clone)


def test_a_garbage_statecache_root_warns_naming_it_and_keys_still_work(project: Project) -> None:
    make_clone(project.root)
    env = {"STATECACHE_ROOT": str(project.root / "no-such-folder")}
    run = project.run("script.py", env=env)
    assert "STATECACHE_ROOT=" in run.stderr and "not a directory" in run.stderr, run.stderr
    assert run.computed("a") and project.run("script.py", env=env).hit("a")
    (project.root / "data" / "x.csv").write_text("5 5 5\n")
    again = project.run("script.py", env=env)
    assert again.computed("a") and value(again) == fresh(project)


def test_the_root_is_the_nearest_folder_with_a_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache.key.project import find_root

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "sub" / "pkg" / ".statecache").mkdir(parents=True)
    (tmp_path / "loose" / "a" / ".statecache").mkdir(parents=True)
    (tmp_path / "loose" / "a" / "b").mkdir()
    assert find_root(str(tmp_path / "repo" / "sub" / "pkg")) == str(tmp_path / "repo")
    assert find_root(str(tmp_path / "loose" / "a" / "b")) == str(tmp_path / "loose" / "a")
    (tmp_path / "bare").mkdir()
    assert find_root(str(tmp_path / "bare")) == str(tmp_path / "bare")


def _fingerprint(value: object, root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from statecache.key.components import fingerprint_values

    monkeypatch.setenv("STATECACHE_ROOT", str(root))
    return fingerprint_values({"v": value})["v"]


def test_paths_inside_the_root_key_alike_in_two_roots_and_apart_from_all_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()

    def fp(value: object, root: Path = one) -> str:
        return _fingerprint(value, root, monkeypatch)

    inside = os.path.join(one, "data", "x.csv")
    assert fp(inside) == fp(os.path.join(two, "data", "x.csv"), two)
    assert fp(Path(inside)) == fp(Path(two, "data", "x.csv"), two)
    assert fp({"p": [inside]}) == fp({"p": [os.path.join(two, "data", "x.csv")]}, two)
    assert fp({inside}) == fp({os.path.join(two, "data", "x.csv")}, two)
    # never equal to: the same path outside the root, a relative path, the bare suffix, a
    # sibling whose name starts like the root, another file, the other clone's file read
    # from here, or the path as a Path
    others = [
        os.path.join(tmp_path, "data", "x.csv"), os.path.join("data", "x.csv"), "/data/x.csv",
        os.path.join(str(one) + "x", "data", "x.csv"), os.path.join(one, "data", "y.csv"),
        os.path.join(two, "data", "x.csv"), Path(inside), os.path.join(one, "data", "x.csv", ""),
        os.path.join(one, "sub", "..", "data", "x.csv"),
    ]
    prints = [fp(v) for v in others]
    assert fp(inside) not in prints and len(set(prints)) == len(prints)
    assert fp(str(one)) != fp(str(one) + os.sep) != fp("")
    # a path that leaves the root through ".." is outside it: as text, as in another clone
    escaping = os.path.join(one, "code", "..", "..", "two", "x.csv")
    assert fp(escaping) != fp(os.path.join(two, "code", "..", "..", "two", "x.csv"), two)


def test_an_in_place_edit_of_a_path_list_changes_its_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [os.path.join(tmp_path, "a.csv")]
    before = _fingerprint(paths, tmp_path, monkeypatch)
    paths[0] = os.path.join(tmp_path, "b.csv")
    assert _fingerprint(paths, tmp_path, monkeypatch) != before


def test_a_clone_on_another_machine_hits_and_checks_its_own_files(tmp_path: Path) -> None:
    env = {"STATECACHE_DIR": str(tmp_path / "shared-cache")}
    first = make_clone(tmp_path / "laptop" / "exp")
    assert first.run("script.py", env=env).computed("a")
    shutil.copytree(first.root, tmp_path / "node" / "exp")
    shutil.rmtree(first.root)  # the recorded absolute paths do not exist on the other machine
    second = Project(tmp_path / "node" / "exp")
    hit = second.run("script.py", env=env)
    assert hit.hit("a") and value(hit) == fresh(second), hit.stderr
    (second.root / "data" / "x.csv").write_text("9 9 9\n")
    run = second.run("script.py", env=env)
    assert run.computed("a") and value(run) == fresh(second) == "y [90, 90, 90] data/x.csv"


# the block opens the resolved path, while __file__ (and so DATA) names the project through a
# symbolic link: the record must still be checked in the clone that runs
RESOLVED = SCRIPT.replace("with open(DATA)", "with open(os.path.realpath(DATA))")


def test_a_file_opened_by_its_resolved_path_is_checked_in_the_clone(tmp_path: Path) -> None:
    env = {"STATECACHE_DIR": str(tmp_path / "shared-cache")}
    real = tmp_path / "real"
    for name in ("one", "two"):
        make_clone(real / name).write("script.py", RESOLVED)
    (tmp_path / "link").symlink_to(real)
    one, two = tmp_path / "link" / "one" / "script.py", tmp_path / "link" / "two" / "script.py"
    here = Project(tmp_path)  # one working directory for both (realpath makes it an input)
    assert here.run(str(one), env=env).computed("a")
    (real / "two" / "data" / "x.csv").write_text("4 4 4\n")
    run = here.run(str(two), env=env)
    assert run.computed("a") and not run.hit("a"), run.stderr
    assert value(run) == "y [40, 40, 40] data/x.csv"
    assert here.run(str(two), env=env).hit("a")


SETUP = """
from pathlib import Path
import statecache as sc

@sc.cached_setup
def load(path):
    return [int(r) * 3 for r in path.read_text().split()]

y = load(Path(__file__).resolve().parent / "data" / "x.csv")
print("y", y)
"""


def test_cached_setup_with_a_path_argument_hits_in_a_clone(tmp_path: Path) -> None:
    env = {"STATECACHE_DIR": str(tmp_path / "shared-cache")}
    first, second = make_clone(tmp_path / "one"), make_clone(tmp_path / "two")
    for clone in (first, second):
        clone.write("setup.py", SETUP)
    run = first.run("setup.py", env=env)
    assert "'load' computing" in run.stderr, run.stderr
    hit = second.run("setup.py", env=env)
    assert "'load' restored" in hit.stderr and value(hit) == fresh(second, "setup.py"), hit.stderr
    (second.root / "data" / "x.csv").write_text("2 2 2\n")
    miss = second.run("setup.py", env=env)
    assert "'load' computing" in miss.stderr and value(miss) == fresh(second, "setup.py") == "y [6, 6, 6]"
