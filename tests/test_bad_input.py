"""Input that is wrong, not hostile: garbage settings, a cache directory that is a file, inputs
that cannot be fingerprinted, a state of no variables, a state bigger than the free disk. Each
gets a message that names the problem and the fix, and nothing worse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, Project, subprocess_env
from faults._util import run_unprivileged, tiny_tmpfs

SCRIPT = """
import statecache as sc

with sc.checkpoint("data"):
    values = [1, 2, 3]
print("VALUES", values)
"""


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "StateCacheWarning" in line]


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("var", "value", "fix"),
    [
        ("STATECACHE_DISABLE", "maybe", "set it to 1 or 0"),
        ("STATECACHE_DISABLE", "2", "set it to 1 or 0"),
        ("STATECACHE_QUIET", "loud", "set it to 1 or 0"),
        ("STATECACHE_QUIET", "2", "set it to 1 or 0"),
        ("STATECACHE_MMAP", "sometimes", "set it to 1 or 0"),
        ("STATECACHE_REFRESH", "../etc", "comma list of checkpoint names"),
        ("STATECACHE_REFRESH", "a b", "comma list of checkpoint names"),
        ("STATECACHE_MAX_SIZE", "lots", "500M or 20G"),
        ("STATECACHE_MAX_SIZE", "-5G", "500M or 20G"),
        ("STATECACHE_MAX_SIZE", "1.5X", "500M or 20G"),
        ("STATECACHE_MAX_SIZE", "0", "a size above 0 such as 500M or 20G (or unset it for no cap)"),
    ],
)
def test_garbage_environment_values(project: Project, var: str, value: str, fix: str) -> None:
    project.write("script.py", SCRIPT)
    run = project.run("script.py", env={var: value}, check=False)
    assert run.returncode == 1 and "VALUES" not in run.stdout
    message = last_line(run.stderr)
    assert message.startswith("statecache._errors.ConfigError: "), message
    assert f"{var}={value!r}" in message and fix in message, message
    assert "script.py" in run.stderr  # the traceback points at the user's line
    cli = subprocess.run([sys.executable, "-m", "statecache", "ls", "--dir", str(project.cache)],
                         capture_output=True, text=True, env=subprocess_env(**{var: value}), cwd=REPO)
    assert "Traceback" not in cli.stderr, cli.stderr  # the command line: one line, exit 0 or 2
    assert cli.returncode in (0, 2)


@pytest.mark.parametrize("value", ["", "   ", "0", "off", "no"])
def test_empty_or_off_values_mean_unset(project: Project, value: str) -> None:
    project.write("script.py", SCRIPT)
    env = {v: value for v in ("STATECACHE_DISABLE", "STATECACHE_QUIET", "STATECACHE_REFRESH", "STATECACHE_MMAP")}
    project.run("script.py", env=env)
    assert project.run("script.py", env=env).hit("data")


@pytest.mark.parametrize("how", ["argument", "environment", "below a file"])
def test_cache_dir_that_is_a_file(project: Project, how: str) -> None:
    project.write("data.txt", "a data file, not a directory\n")
    target = "data.txt" if how != "below a file" else "data.txt/cache"
    if how == "argument":
        project.write("script.py", SCRIPT.replace('checkpoint("data")', f'checkpoint("data", cache_dir={target!r})'))
        env = {}
    else:
        project.write("script.py", SCRIPT)
        env = {"STATECACHE_DIR": str(project.root / target)}
    run = project.run("script.py", env=env)
    assert "VALUES [1, 2, 3]" in run.stdout
    [warning] = warnings_in(run.stderr)
    assert "cannot use the cache directory" in warning and "data.txt" in warning
    assert "not a directory" in warning.lower()
    assert "Set STATECACHE_DIR or cache_dir= to a writable directory" in warning
    assert (project.root / "data.txt").read_text() == "a data file, not a directory\n"


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ("cache_dir=123", "cache_dir must be a directory path"),
        ("ignore=5", "ignore must be a name or a list of names"),
        ("ignore=[1]", "ignore must be a name or a list of names"),
        ("files=3.5", "files must be a name or a list of names"),
        ("max_size='lots'", "invalid max_size 'lots'"),
        ("max_size=-1", "invalid max_size -1: a size cap must be above 0"),
        ("max_size=0", "invalid max_size 0: a size cap must be above 0"),
        ("max_size='0'", "invalid max_size '0': a size cap must be above 0"),
        ("max_size=True", "invalid max_size True"),
        ("mmap='no'", "mmap must be True or False, got 'no': write mmap=False"),
        ("verbose='false'", "verbose must be True or False, got 'false': write verbose=False"),
        ("verbose='loud'", "verbose must be True or False, got 'loud'"),
        ("mmap=2", "mmap must be True or False, got 2"),
        ("version=2", "checkpoint 'data': version= takes a string, e.g. version='2'"),
        ("compress='fast'", "checkpoint 'data': compress must be one of 'auto', 'speed', 'size', not 'fast'"),
        ("compress='Size'", "compress must be one of 'auto', 'speed', 'size', not 'Size'"),
        ("compress=True", "compress must be one of 'auto', 'speed', 'size', not True"),
        ("remote=True", "checkpoint 'data': remote= takes a URL such as 's3://bucket/prefix', or False"),
        ("remote=3", "remote= takes a URL such as 's3://bucket/prefix', or False to use no remote"),
        ("remote=''", "remote= takes a URL such as 's3://bucket/prefix'"),
        ("remote='team/cache'", "remote='team/cache' is not understood: give a URL such as s3://bucket/prefix"),
    ],
)
def test_wrong_argument_types(project: Project, argument: str, says: str) -> None:
    project.write("script.py", SCRIPT.replace('checkpoint("data")', f'checkpoint("data", {argument})'))
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and "VALUES" not in run.stdout
    message = last_line(run.stderr)
    assert "ConfigError" in message and says in message, message
    assert not project.entries()  # refused before anything was computed or saved


@pytest.mark.parametrize(
    "argument", ["max_size=-1", "mmap='no'", "verbose='false'", "version=2", "compress='fast'", "remote=True"]
)
def test_wrong_arguments_of_cached_setup(project: Project, argument: str) -> None:
    project.write("script.py", f"""
        import statecache as sc

        @sc.cached_setup({argument})
        def load():
            return [1, 2, 3]

        print("LOADED", load())
        """)
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and "LOADED" not in run.stdout
    message = last_line(run.stderr)
    assert "ConfigError" in message and argument.split("=")[0] in message, message


def test_real_booleans_and_sizes_work(project: Project) -> None:
    project.write("script.py", SCRIPT.replace('checkpoint("data")', 'checkpoint("data", verbose=False, mmap=True, max_size=1 << 30)'))
    first = project.run("script.py")
    assert first.status == [] and "VALUES [1, 2, 3]" in first.stdout  # verbose=False is quiet
    assert len(project.entries("data")) == 1
    project.write("script.py", SCRIPT.replace('checkpoint("data")', 'checkpoint("data", verbose=1, mmap=0, max_size="1G")'))
    assert project.run("script.py").hit("data")


TWO_CHECKPOINTS = """
import statecache as sc

with sc.checkpoint("features"):
    features = [1, 2]
with sc.checkpoint("model"):
    model = sum(features)
print("MODEL", model)
"""


def test_refresh_of_a_name_no_checkpoint_used_is_warned_at_exit(project: Project) -> None:
    project.write("script.py", TWO_CHECKPOINTS)
    project.run("script.py")
    run = project.run("script.py", env={"STATECACHE_REFRESH": "featurs"})
    assert "MODEL 3" in run.stdout and run.returncode == 0
    assert run.hit("features") and run.hit("model")  # the typo refreshed nothing...
    [warning] = warnings_in(run.stderr)  # ...and says so, once, with the names that ran
    assert "STATECACHE_REFRESH names 'featurs', but no checkpoint of that name ran" in warning
    assert "'features', 'model'" in warning and "Check the spelling" in warning


def test_refresh_of_names_that_ran_is_not_warned(project: Project) -> None:
    project.write("script.py", TWO_CHECKPOINTS)
    project.run("script.py")
    run = project.run("script.py", env={"STATECACHE_REFRESH": "features, model"})
    assert run.computed("features") and run.computed("model")
    assert warnings_in(run.stderr) == []
    run = project.run("script.py", env={"STATECACHE_REFRESH": "1"})
    assert run.computed("features") and warnings_in(run.stderr) == []


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        ("(i for i in range(3))", "generator"),
        ("open(__file__)", "TextIOWrapper"),
        ("threading.Lock()", "lock"),
        ("socket.socket()", "socket"),
        ("sys._getframe()", "frame"),
    ],
)
def test_input_that_cannot_be_fingerprinted(project: Project, make: str, kind: str) -> None:
    body = f"""
    import socket
    import sys
    import threading

    import statecache as sc

    thing = {make}
    with sc.checkpoint("uses_thing"{{extra}}):
        description = type(thing).__name__
    print("DESCRIPTION", description)
    """
    project.write("script.py", textwrap.dedent(body).format(extra=""))
    run = project.run("script.py", check=False)
    assert run.returncode == 1
    message = last_line(run.stderr)
    assert "FingerprintError" in message and "'thing'" in message and kind in message, message
    assert "ignore=['thing']" in message and "uses_thing" in message
    project.write("script.py", textwrap.dedent(body).format(extra=", ignore=['thing']"))
    assert "DESCRIPTION" in project.run("script.py").stdout
    assert project.run("script.py").hit("uses_thing")


def test_unhashable_argument_of_cached_setup(project: Project) -> None:
    """The error names the argument and suggests the ignore= form that then works."""
    body = """
        import threading

        import statecache as sc

        @sc.cached_setup{options}
        def load(n, lock):
            return list(range(n))

        print("LOADED", len(load(5, threading.Lock())))
        """
    project.write("script.py", body.format(options=""))
    run = project.run("script.py", check=False)
    assert run.returncode == 1
    message = last_line(run.stderr)
    assert "FingerprintError" in message and "'lock'" in message and "'load'" in message, message
    suggested = re.search(r"ignore=\[[^\]]*\]", message)
    assert suggested and suggested.group(0) == "ignore=['lock']", message
    project.write("script.py", body.format(options=f"({suggested.group(0)})"))
    assert "LOADED 5" in project.run("script.py").stdout
    assert project.run("script.py").hit("load")


def test_state_of_no_variables(project: Project) -> None:
    project.write(
        "script.py",
        """
        import statecache as sc

        with sc.checkpoint("nothing"):
            print("BODY RAN")

        @sc.cached_setup
        def setup():
            pass

        print("RESULT", setup())
        """,
    )
    first = project.run("script.py")
    assert "BODY RAN" in first.stdout and "RESULT None" in first.stdout
    assert warnings_in(first.stderr) == []
    second = project.run("script.py")
    assert second.hit("nothing") and second.hit("setup")
    assert "BODY RAN" not in second.stdout and "RESULT None" in second.stdout


def test_state_bigger_than_the_free_disk(project: Project) -> None:
    with tiny_tmpfs("1m") as mount:
        if mount is None:
            pytest.skip("mounting a tmpfs is not permitted here; tests/faults/test_full_disk.py "
                        "covers a save past the file size limit")
        project.write(
            "script.py",
            """
            import os

            import statecache as sc

            with sc.checkpoint("huge"):
                blob = os.urandom(3 << 20)  # three times the free space
            print("SIZE", len(blob))
            """,
        )
        env = {"STATECACHE_DIR": str(mount)}
        run = project.run("script.py", env=env)
        assert run.returncode == 0 and f"SIZE {3 << 20}" in run.stdout
        [warning] = warnings_in(run.stderr)
        assert "'huge'" in warning and "No space left on device" in warning
        assert "Free some space or point STATECACHE_DIR elsewhere" in warning
        assert [p for p in mount.rglob("*") if p.is_file() and p.suffix in (".sc", ".tmp")] == []
        free = os.statvfs(mount)
        assert free.f_bavail * free.f_frsize > 900 << 10  # the space is given back


def test_cache_dir_on_a_path_with_odd_characters(project: Project, tmp_path: Path) -> None:
    odd = tmp_path / "dir with spaces, ünïcödé & $HOME"
    project.write("script.py", SCRIPT)
    env = {"STATECACHE_DIR": str(odd)}
    project.run("script.py", env=env)
    assert project.run("script.py", env=env).hit("data")
    assert list(odd.glob("data/*.sc"))


def test_cached_setup_on_a_function_whose_name_is_not_a_valid_entry_name(project: Project) -> None:
    project.write(
        "script.py",
        """
        import statecache as sc

        @sc.cached_setup
        def données():
            return 1
        """,
    )
    run = project.run("script.py", check=False)
    assert run.returncode == 1
    message = last_line(run.stderr)
    assert "InvalidNameError" in message and "'données'" in message
    assert "@cached_setup(name='donn_es')" in message
    project.write("script.py", "import statecache as sc\n\n@sc.cached_setup(name='donnees')\n"
                  "def données():\n    return 1\n\nprint('R', données())\n")
    project.run("script.py")
    assert project.run("script.py").hit("donnees")


def test_data_file_that_became_unreadable(project: Project) -> None:
    """A hit re-checks the files the body read; one that can no longer be read is a miss, and
    the body's own open() then says why, at the user's line (not deep inside statecache)."""
    project.write("data.txt", "hello\n")
    project.write("script.py", 'import statecache as sc\n\nwith sc.checkpoint("reads"):\n'
                  '    text = open("data.txt").read()\nprint("TEXT", text.strip())\n')
    assert "TEXT hello" in run_unprivileged(project.root, "script.py").stdout
    data = project.root / "data.txt"
    os.utime(data, (0, 0))
    data.chmod(0)
    try:
        run = run_unprivileged(project.root, "script.py")
    finally:
        data.chmod(0o644)
    assert run.returncode == 1
    assert "computing (file data.txt cannot be read (Permission denied))" in run.stderr
    assert 'text = open("data.txt").read()' in run.stderr  # the traceback ends in the user's code
    assert last_line(run.stderr).startswith("PermissionError")


def test_files_glob_matching_an_unreadable_file(project: Project) -> None:
    project.write("secret.txt", "s\n")
    project.write("script.py", SCRIPT.replace('checkpoint("data")', 'checkpoint("data", files=["*.txt"])'))
    (project.root / "secret.txt").chmod(0)
    try:
        run = run_unprivileged(project.root, "script.py")
    finally:
        (project.root / "secret.txt").chmod(0o644)
    assert run.returncode == 1
    message = last_line(run.stderr)
    assert "ConfigError" in message and "secret.txt" in message and "cannot be read" in message
    assert "leave it out of files=" in message


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_cache_dir_that_is_someone_elses_directory(project: Project, how: str) -> None:
    """cache_dir='.' or STATECACHE_DIR=$HOME: statecache will not turn a directory of other
    files into a cache (a '.gitignore' of '*' and a CACHEDIR.TAG there would hide the user's
    files from git and from backups, and a checkpoint's directory could be one of theirs)."""
    project.write("data/notes.txt", "mine\n")
    if how == "argument":
        project.write("script.py", SCRIPT.replace('checkpoint("data")', 'checkpoint("data", cache_dir=".")'))
        env = {}
    else:
        project.write("script.py", SCRIPT)
        env = {"STATECACHE_DIR": str(project.root)}
    before = sorted(p.relative_to(project.root) for p in project.root.rglob("*"))
    run = project.run("script.py", env=env)
    assert "VALUES [1, 2, 3]" in run.stdout
    [warning] = warnings_in(run.stderr)
    assert "already holds files that are not statecache's" in warning
    assert os.path.join(str(project.root), ".statecache") in warning  # the fix
    assert sorted(p.relative_to(project.root) for p in project.root.rglob("*")) == before


def test_an_empty_existing_directory_becomes_a_cache(project: Project, tmp_path: Path) -> None:
    cache = tmp_path / "empty"
    cache.mkdir()
    project.write("script.py", SCRIPT)
    project.run("script.py", env={"STATECACHE_DIR": str(cache)})
    assert (cache / "CACHEDIR.TAG").exists() and list(cache.glob("data/*.sc"))
    (cache / "CACHEDIR.TAG").unlink()  # markers lost: it still holds only statecache's files
    assert project.run("script.py", env={"STATECACHE_DIR": str(cache)}).hit("data")
    assert (cache / "CACHEDIR.TAG").exists()
