"""Security: a private cache directory, entries nobody else planted, signatures with
``STATECACHE_SECRET``, and no write or delete outside the cache directory whatever the name,
``--dir`` value, metadata or symbolic links inside the cache.

Loading an entry runs code (it is a pickle), so each refusal is proven with an entry whose
payload would create a file named ``pwned``: the file must never appear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Project, subprocess_env

from statecache.entry.reader import read_meta
from statecache.entry.writer import write_entry

SCRIPT = """
import statecache as sc

with sc.checkpoint("state"):
    value = [1, 2, 3]
print("VALUE", value)
"""
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Payload:
    """Unpickling this runs a shell command: what a hostile entry would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "StateCacheWarning" in line]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statecache", *args], capture_output=True,
                          text=True, env=subprocess_env(**env), cwd=REPO, timeout=120)


def first_run(project: Project, env: dict[str, str] | None = None) -> Path:
    project.write("script.py", SCRIPT)
    run = project.run("script.py", env=env)
    assert "VALUE [1, 2, 3]" in run.stdout and "saved" in run.stderr
    [entry] = project.entries("state")
    return entry


def plant(entry: Path, marker: Path, secret: bytes | None = None) -> None:
    """Replace ``entry`` by a well-formed entry for the same checkpoint and key whose state
    runs a command when loaded."""
    meta = read_meta(entry)
    entry.unlink()
    write_entry(entry, {"value": Payload(marker)},
                {"name": meta["name"], "key": meta["key"], "files": meta.get("files", [])},
                secret=secret)


def assert_refused(project: Project, entry: Path, marker: Path, reason: str, env: dict[str, str] | None = None) -> None:
    run = project.run("script.py", env=env)
    assert not marker.exists(), "the planted entry was loaded: " + run.stderr
    assert "VALUE [1, 2, 3]" in run.stdout and not run.hit("state")
    [warning] = warnings_in(run.stderr)
    assert "'state'" in warning and entry.name in warning and reason in warning, warning


# --------------------------------------------------------------------------- modes and owners


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_cache_dir_is_0700_and_entries_0600_whatever_the_umask(project: Project, umask: int) -> None:
    project.write("script.py", SCRIPT)
    proc = subprocess.run([sys.executable, "script.py"], cwd=project.root, env=subprocess_env(),
                          capture_output=True, text=True, preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(project.cache) == 0o700
    assert mode(project.cache / "state") == 0o700
    [entry] = project.entries("state")
    assert mode(entry) == 0o600
    assert mode(project.cache / ".gitignore") == 0o600
    assert mode(project.cache / "CACHEDIR.TAG") == 0o600
    for lock in (project.cache / "state").glob("*.lock"):
        assert mode(lock) & 0o022 == 0  # nobody else can write even the empty lock file


@pytest.mark.skipif(not IS_ROOT, reason="giving a file to another user needs root (chown)")
def test_entry_owned_by_another_user_is_refused(project: Project) -> None:
    entry = first_run(project)
    marker = project.root / "pwned"
    plant(entry, marker)
    os.chown(entry, 65534, 65534)
    assert_refused(project, entry, marker, "owned by uid 65534")
    assert entry.stat().st_uid == os.getuid()  # replaced by our own entry
    assert project.run("script.py").hit("state")


# --------------------------------------------------------------------------- STATECACHE_SECRET


def test_with_a_secret_entries_are_signed_and_hit(project: Project) -> None:
    entry = first_run(project, {"STATECACHE_SECRET": "k1"})
    assert read_meta(entry)["signed"] is True
    assert project.run("script.py", env={"STATECACHE_SECRET": "k1"}).hit("state")
    # without a secret a signed entry still loads (the signature is simply not checked)
    assert project.run("script.py").hit("state")


def test_with_a_secret_an_unsigned_entry_is_refused(project: Project) -> None:
    entry = first_run(project)
    marker = project.root / "pwned"
    plant(entry, marker)
    env = {"STATECACHE_SECRET": "k1"}
    assert_refused(project, entry, marker, "not signed", env)
    assert read_meta(entry)["signed"] is True
    assert project.run("script.py", env=env).hit("state")


def test_with_a_secret_an_entry_signed_with_another_is_refused(project: Project) -> None:
    entry = first_run(project, {"STATECACHE_SECRET": "k1"})
    marker = project.root / "pwned"
    plant(entry, marker, secret=b"someone else's key")
    assert_refused(project, entry, marker, "wrong signature", {"STATECACHE_SECRET": "k1"})


def test_without_a_secret_a_planted_entry_runs_code_as_documented(project: Project) -> None:
    """The documented limit: without STATECACHE_SECRET, whoever can write the cache directory
    can run code as you (like any pickle). This test keeps the README honest."""
    entry = first_run(project)
    marker = project.root / "pwned"
    plant(entry, marker)
    project.run("script.py", check=False)
    assert marker.exists()
    readme = (REPO / "README.md").read_text()
    assert "STATECACHE_SECRET" in readme and "run code as you" in readme


# --------------------------------------------------------------------------- names and paths


ESCAPING_NAMES = ["../x", "../../etc/passwd", "/tmp/x", "a/b", "a\\b", "..", ".", "", ".hidden",
                  "x\x00y", "a" * 101, "~root", "é", "a b", "$HOME", "x\n"]


def test_names_that_would_escape_the_cache_dir_are_refused(project: Project) -> None:
    project.write(
        "names.py",
        f"""
        import statecache as sc
        for name in {ESCAPING_NAMES!r}:
            try:
                sc.checkpoint(name)
            except sc.StateCacheError as exc:
                assert "invalid checkpoint name" in str(exc), exc
            else:
                print("ACCEPTED", repr(name))
            try:
                sc.cached_setup(name=name)(lambda: 1)
            except sc.StateCacheError as exc:
                assert "invalid" in str(exc), exc
            else:
                print("ACCEPTED", repr(name))
        print("DONE")
        """,
    )
    run = project.run("names.py")
    assert "DONE" in run.stdout and "ACCEPTED" not in run.stdout
    assert sorted(p.name for p in project.root.iterdir()) == ["names.py"]


def _sentinels(root: Path) -> dict[Path, bytes]:
    """Files outside any cache, shaped like what statecache would delete."""
    files = {
        root / "victim.txt": b"precious",
        root / "state" / ("a" * 32 + ".sc"): b"not an entry",
        root / "state" / ("a" * 32 + ".sc.lock"): b"",
        root / "state" / (".%s.sc.999999.abcdef01.tmp" % ("b" * 32)): b"tmp-shaped",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _unchanged(files: dict[Path, bytes]) -> bool:
    return all(p.exists() and p.read_bytes() == data for p, data in files.items())


def test_commands_never_touch_a_dir_that_is_not_a_statecache_cache(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    files = _sentinels(victim)
    for d in (str(victim), str(victim / "state"), str(victim / "state" / ".."), "/"):
        for args in (["clear", "--all"], ["clear", "state"], ["gc"], ["gc", "--max-size", "0"],
                     ["gc", "--keep-versions", "0"], ["ls"], ["verify"], ["show", "state"]):
            proc = cli(*args, "--dir", d)
            assert "Traceback" not in proc.stderr, (args, d, proc.stderr)
        assert _unchanged(files)


def test_hostile_metadata_never_leads_outside_the_cache(project: Project, tmp_path: Path) -> None:
    """A well-formed entry whose metadata names paths outside the cache: the command line and
    a run read it, delete only inside the cache, and never write where the metadata points."""
    entry = first_run(project)
    outside = tmp_path / "outside"
    files = _sentinels(outside)
    key = "c" * 32
    hostile = entry.parent / f"{key}.sc"
    rel = os.path.relpath(outside / "victim.txt", entry.parent)
    write_entry(hostile, {"value": [1, 2, 3]}, {
        "name": "../" * 8 + str(outside / "state"), "key": rel, "created": 0,
        "source": {"file": str(outside / "victim.txt"), "line": 1},
        "files": [{"path": str(outside / "victim.txt"), "kind": "file", "size": 8, "mtime_ns": 0,
                   "digest": "00"}],
        "variables": {"../../victim.txt": {"type": "x", "size": 1}},
    })
    cache = str(project.cache)
    for args in (["ls"], ["ls", "--json"], ["show", "state"], ["show", key[:8]], ["verify"],
                 ["gc", "--keep-versions", "0"], ["gc", "--max-size", "0"], ["clear", "state"]):
        proc = cli(*args, "--dir", cache)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert _unchanged(files), args
    assert not hostile.exists()  # cleared, from inside the cache
    project.run("script.py")
    assert _unchanged(files)


# --------------------------------------------------------------------------- symbolic links


def test_name_dir_that_is_a_symlink_is_not_written_through(project: Project, tmp_path: Path) -> None:
    first_run(project)
    outside = tmp_path / "outside"
    outside.mkdir()
    state_dir = project.cache / "state"
    for f in state_dir.iterdir():
        f.unlink()
    state_dir.rmdir()
    state_dir.symlink_to(outside)
    run = project.run("script.py")
    assert "VALUE [1, 2, 3]" in run.stdout
    assert list(outside.iterdir()) == []
    assert any("symbolic link" in w for w in warnings_in(run.stderr)), run.stderr


def test_entry_that_is_a_symlink_is_replaced_not_written_through(project: Project, tmp_path: Path) -> None:
    entry = first_run(project)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    entry.unlink()
    entry.symlink_to(victim)
    run = project.run("script.py")
    assert "VALUE [1, 2, 3]" in run.stdout and not run.hit("state")
    assert victim.read_bytes() == b"precious"
    assert not entry.is_symlink() and project.run("script.py").hit("state")


def test_lock_file_that_is_a_symlink_is_not_written_through(project: Project, tmp_path: Path) -> None:
    entry = first_run(project)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    lock = entry.with_name(entry.name + ".lock")
    entry.unlink()
    lock.unlink()
    lock.symlink_to(victim)
    run = project.run("script.py")
    assert "VALUE [1, 2, 3]" in run.stdout
    assert victim.read_bytes() == b"precious"
    assert warnings_in(run.stderr), run.stderr  # says it cannot lock, runs uncached


def test_marker_files_that_are_symlinks_are_not_written_through(project: Project, tmp_path: Path) -> None:
    project.write("script.py", SCRIPT)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    project.cache.mkdir(mode=0o700)
    (project.cache / ".gitignore").symlink_to(victim)
    (project.cache / "CACHEDIR.TAG").symlink_to(tmp_path / "absent")
    run = project.run("script.py")
    assert "VALUE [1, 2, 3]" in run.stdout
    assert victim.read_bytes() == b"precious" and not (tmp_path / "absent").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_entry_path_that_is_not_a_file_neither_hangs_nor_crashes(project: Project, kind: str) -> None:
    """A FIFO planted at an entry's path would block a plain open() for ever."""
    entry = first_run(project)
    entry.unlink()
    if kind == "fifo":
        os.mkfifo(entry)
    else:
        entry.mkdir()
    run = project.run("script.py")
    assert run.returncode == 0 and "VALUE [1, 2, 3]" in run.stdout
    assert any(entry.name in w for w in warnings_in(run.stderr)), run.stderr


def test_commands_do_not_hang_on_a_fifo_planted_as_the_cache_tag(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "CACHEDIR.TAG")
    for args in (["gc"], ["clear", "--all"]):
        proc = cli(*args, "--dir", str(tmp_path))  # hangs (timeout) if it opens the FIFO
        assert proc.returncode == 2 and "not a statecache directory" in proc.stderr


def test_saves_do_not_hang_on_a_fifo_planted_as_the_size_index(project: Project) -> None:
    first_run(project)
    os.mkfifo(project.cache / ".statecache-usage.json")
    project.write("script.py", SCRIPT.replace("[1, 2, 3]", "[4]"))
    run = project.run("script.py", env={"STATECACHE_MAX_SIZE": "1G"}, timeout=60)
    assert "VALUE [4]" in run.stdout and "saved" in run.stderr
