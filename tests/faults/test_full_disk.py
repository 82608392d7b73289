"""Full disk: a save that runs into the file size limit (RLIMIT_FSIZE: EFBIG) or a full file
system (a 1 MiB tmpfs: ENOSPC) leaves the program with its computed state, one warning that
says what to do, and no temporary file; the next run with room caches normally."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Project, Run, subprocess_env

from ._util import STATE_SCRIPT, expected_digest, state_digest, temp_files, tiny_tmpfs, warnings_in

BIG = {"N_RAW": "500000", "N_INT": "500000"}  # about 10 MB on disk


def _limited(project: Project, limit: int, env: dict[str, str]) -> Run:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ

    proc = subprocess.run(
        [sys.executable, "state.py"], cwd=project.root, env=subprocess_env(**env),
        capture_output=True, text=True, timeout=300, preexec_fn=preexec,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_file_size_limit_efbig(project: Project) -> None:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project, BIG)
    run = _limited(project, 1 << 20, BIG)
    assert run.returncode == 0 and state_digest(run) == expected, run.stderr
    [warning] = warnings_in(run.stderr)
    assert "'state'" in warning and "was not saved" in warning and "File too large" in warning
    assert "STATECACHE_DIR" in warning  # the fix
    assert temp_files(project.cache) == [] and project.entries("state") == []
    again = project.run("state.py", env=BIG)
    assert again.computed("state") and "saved" in again.stderr and state_digest(again) == expected
    assert project.run("state.py", env=BIG).hit("state")


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_file_system_enospc(project: Project) -> None:
    with tiny_tmpfs("1m") as mount:
        if mount is None:
            pytest.skip("mounting a tmpfs is not permitted here (needs root); EFBIG is tested above")
        project.write("state.py", textwrap.dedent(STATE_SCRIPT))
        expected = expected_digest(project, BIG)
        cache = mount / "cache"
        env = {**BIG, "STATECACHE_DIR": str(cache)}
        run = project.run("state.py", env=env)
        assert state_digest(run) == expected
        [warning] = warnings_in(run.stderr)
        assert "'state'" in warning and "No space left on device" in warning
        assert "Free some space" in warning and "STATECACHE_DIR" in warning
        assert temp_files(cache) == [] and list(cache.glob("*/*.sc")) == []
        assert _free(mount) > (1 << 20) - (64 << 10)  # the partial temp file's space is back
        # a small state still fits, and then hits
        small = project.run("state.py", env={**env, "N_RAW": "1000", "N_INT": "1000"})
        assert "saved" in small.stderr and warnings_in(small.stderr) == []
        assert project.run("state.py", env={**env, "N_RAW": "1000", "N_INT": "1000"}).hit("state")


def test_file_system_already_full_runs_uncached_with_one_warning(project: Project) -> None:
    with tiny_tmpfs("1m") as mount:
        if mount is None:
            pytest.skip("mounting a tmpfs is not permitted here (needs root)")
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        project.write(
            "two.py",
            """
            import statecache as sc
            with sc.checkpoint("one"):
                a = 1
            with sc.checkpoint("two"):
                b = a + 1
            print("AB", a, b)
            """,
        )
        env = {"STATECACHE_DIR": str(mount / "cache")}
        run = project.run("two.py", env=env)
        assert "AB 1 2" in run.stdout
        [warning] = warnings_in(run.stderr)  # one for the directory, not one per checkpoint
        assert "cannot use the cache directory" in warning and "No space left on device" in warning
        assert "STATECACHE_DIR" in warning
        assert temp_files(mount / "cache") == []
        assert [p.name for p in (mount / "cache").iterdir()] == []  # no empty marker files
        filler.unlink()
        project.run("two.py", env=env)
        assert (mount / "cache" / "CACHEDIR.TAG").read_text().startswith("Signature: ")
        assert project.run("two.py", env=env).hit("two")
