"""A cache directory that cannot be created or written (no permission, read-only file system):
the program runs without caching, with one warning that names the directory and the fix.

Permission bits do not bind root, so when the tests run as root the program under test runs
with every capability dropped (then they bind it like any user)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import Project

from ._util import run_unprivileged, tiny_tmpfs, warnings_in

TWO = """
import statecache as sc

with sc.checkpoint("one"):
    a = 1
with sc.checkpoint("two"):
    b = a + 1
print("AB", a, b)
"""


def _check_uncached_with_one_warning(run, directory: Path) -> None:  # type: ignore[no-untyped-def]
    assert run.returncode == 0 and "AB 1 2" in run.stdout, run.stderr
    [warning] = warnings_in(run.stderr)
    assert f"cannot use the cache directory {directory}" in warning, warning
    assert "without caching" in warning and "STATECACHE_DIR" in warning
    assert "'one' computing" not in run.stderr  # no status of a cache that is not there


def test_cache_dir_without_write_permission(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(textwrap.dedent(TWO))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o555)
    try:
        run = run_unprivileged(tmp_path, "two.py", env={"STATECACHE_DIR": str(cache)})
    finally:
        cache.chmod(0o755)
    _check_uncached_with_one_warning(run, cache)
    assert list(cache.iterdir()) == []


def test_default_cache_dir_that_cannot_be_created(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "two.py").write_text(textwrap.dedent(TWO))
    project.chmod(0o555)
    try:
        run = run_unprivileged(project, "two.py")
    finally:
        project.chmod(0o755)
    _check_uncached_with_one_warning(run, project / ".statecache")
    assert not (project / ".statecache").exists()


def test_cache_dir_made_read_only_after_use(tmp_path: Path) -> None:
    """A cache that worked, then lost write permission: uncached, one warning, entries intact."""
    (tmp_path / "two.py").write_text(textwrap.dedent(TWO))
    cache = tmp_path / "cache"
    env = {"STATECACHE_DIR": str(cache)}
    first = run_unprivileged(tmp_path, "two.py", env=env)
    assert "'two' saved" in first.stderr and warnings_in(first.stderr) == [], first.stderr
    entries = sorted(p.read_bytes() for p in cache.glob("*/*.sc"))
    dirs = [cache, *(d for d in cache.iterdir() if d.is_dir())]
    for d in dirs:
        d.chmod(0o555)
    try:
        run = run_unprivileged(tmp_path, "two.py", env=env)
    finally:
        for d in dirs:
            d.chmod(0o700)
    _check_uncached_with_one_warning(run, cache)
    assert sorted(p.read_bytes() for p in cache.glob("*/*.sc")) == entries


def test_read_only_file_system(project: Project) -> None:
    with tiny_tmpfs("4m") as mount:
        if mount is None:
            pytest.skip("mounting a tmpfs is not permitted here (needs root)")
        project.write("two.py", TWO)
        cache = mount / "cache"
        env = {"STATECACHE_DIR": str(cache)}
        assert "'two' saved" in project.run("two.py", env=env).stderr
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        run = project.run("two.py", env=env)
        _check_uncached_with_one_warning(run, cache)
        assert "Read-only file system" in warnings_in(run.stderr)[0] or "not writable" in run.stderr
        fresh = project.run("two.py", env={"STATECACHE_DIR": str(mount / "new")})
        _check_uncached_with_one_warning(fresh, mount / "new")


def test_unreadable_entry_is_a_miss_with_a_warning_and_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(textwrap.dedent(TWO))
    env = {"STATECACHE_DIR": str(tmp_path / "cache")}
    run_unprivileged(tmp_path, "two.py", env=env)
    [entry] = (tmp_path / "cache" / "two").glob("*.sc")
    entry.chmod(0o000)
    run = run_unprivileged(tmp_path, "two.py", env=env)
    assert run.returncode == 0 and "AB 1 2" in run.stdout
    [warning] = warnings_in(run.stderr)
    assert "'two'" in warning and entry.name in warning and "Permission denied" in warning
    assert "'two' saved" in run.stderr and entry.stat().st_mode & 0o777 == 0o600
    assert "'two' restored" in run_unprivileged(tmp_path, "two.py", env=env).stderr
