"""Version skew: entries written by another Python minor version or another entry format
version are clean misses (the key includes both), never loaded and never a crash; a newer
format's file in this key's place is refused with a warning that says so; the command line
lists and verifies a cache holding entries it cannot read without failing."""

from __future__ import annotations

import glob
import os
import struct
import subprocess
import textwrap

import pytest
import xxhash
from conftest import REPO, Project

from ._util import STATE_SCRIPT, cli, expected_digest, state_digest, warnings_in

# Pretends to be another Python minor version (the key and the metadata take it from
# sys.version_info): what an entry written by Python 3.99 looks like to this one.
FAKE_PYTHON = """
import sys

class _Version(tuple):
    major = property(lambda self: self[0])
    minor = property(lambda self: self[1])
    micro = property(lambda self: self[2])

import cloudpickle, dill, filelock, numpy, statecache, xxhash, zstandard  # noqa: E401, F401 - imported under the real version first
sys.version_info = _Version((3, 99, 0, "final", 0))
"""


def test_entry_of_another_python_minor_version_is_a_clean_miss(project: Project) -> None:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    project.write("fake/sitecustomize.py", FAKE_PYTHON)
    expected = expected_digest(project)
    fake = {"PYTHONPATH": os.pathsep.join([str(project.root / "fake"), str(REPO)])}
    other = project.run("state.py", env=fake)
    assert "saved" in other.stderr and state_digest(other) == expected
    [entry] = project.entries("state")
    assert '"python":"3.99"' in entry.read_bytes()[:4096].decode("latin-1")
    run = project.run("state.py")
    assert state_digest(run) == expected and warnings_in(run.stderr) == []
    assert "computing (Python, statecache format or key schema version changed)" in run.stderr
    assert len(project.entries("state")) == 2  # both versions kept side by side
    assert project.run("state.py").hit("state")
    assert project.run("state.py", env=fake).hit("state")


def _other_pythons() -> list[str]:
    """Interpreters of other minor versions (3.10-3.13) that have statecache's dependencies."""
    import sys

    found = []
    candidates = os.environ.get("STATECACHE_TEST_PYTHONS", "").split(os.pathsep)
    candidates += sorted(glob.glob("/tmp/py3*/bin/python")) + sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-3]*/bin/python"))
    )
    seen = {f"{sys.version_info[0]}.{sys.version_info[1]}"}
    for exe in filter(None, candidates):
        probe = subprocess.run(
            [exe, "-c", "import sys, dill, cloudpickle, zstandard, xxhash, filelock, numpy;"
             "print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
            capture_output=True, text=True,
        )
        version = probe.stdout.strip()
        if probe.returncode == 0 and version not in seen:
            seen.add(version)
            found.append(exe)
    return found


def test_entries_of_real_other_python_versions_coexist(project: Project) -> None:
    others = _other_pythons()
    if not others:
        pytest.skip("no other Python 3.10-3.13 with statecache's dependencies installed "
                    "(set STATECACHE_TEST_PYTHONS); the simulated test above covers the rule")
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project)
    assert "saved" in project.run("state.py").stderr
    for exe in others:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
        env = {k: v for k, v in env.items() if not k.startswith("STATECACHE_")}
        for expect_hit in (False, True):
            proc = subprocess.run([exe, "state.py"], cwd=project.root, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            assert f"STATE {expected}" in proc.stdout
            assert "StateCacheWarning" not in proc.stderr, proc.stderr
            assert ("'state' restored" in proc.stderr) == expect_hit, proc.stderr
    assert len(project.entries("state")) == 1 + len(others)
    assert project.run("state.py").hit("state")


def _as_format(data: bytes, version: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, 8, version)
    struct.pack_into("<Q", out, 56, xxhash.xxh3_64_intdigest(bytes(out[:56])))
    return bytes(out)


def test_newer_format_in_this_keys_place_is_refused_and_replaced(project: Project) -> None:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project)
    project.run("state.py")
    [entry] = project.entries("state")
    entry.write_bytes(_as_format(entry.read_bytes(), 2))
    run = project.run("state.py")
    assert state_digest(run) == expected and run.computed("state")
    [warning] = warnings_in(run.stderr)
    assert "'state'" in warning and entry.name in warning and "format version 2" in warning
    assert project.run("state.py").hit("state")  # replaced by this version's entry


def test_command_line_on_a_cache_with_entries_of_a_newer_format(project: Project) -> None:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    project.run("state.py")
    [entry] = project.entries("state")
    newer = entry.with_name("f" * 32 + ".sc")
    newer.write_bytes(_as_format(entry.read_bytes(), 2))
    newer.chmod(0o600)
    cache = str(project.cache)
    for args in (["ls"], ["ls", "--json"], ["show", "state"], ["gc"], ["verify"]):
        proc = cli(*args, "--dir", cache)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 1), (args, proc.returncode, proc.stderr)
    verify = cli("verify", "--dir", cache)
    assert verify.returncode == 1 and "format version 2" in verify.stdout + verify.stderr
    assert entry.exists() and newer.exists()  # gc does not delete what it cannot read
    assert project.run("state.py").hit("state")
