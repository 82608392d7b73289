"""The ``statecache`` command, tested as a user meets it: real scripts that use ``checkpoint`` fill a
real cache directory, then ``statecache ...`` runs in a subprocess and we read what it prints, its
exit code, and what is left on disk."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).absolute().parent.parent
BIN = Path(sys.executable).parent

SCRIPT = """\
import sys
from pathlib import Path

import numpy as np

import statecache

n = int(sys.argv[1])
with statecache.checkpoint({name!r}, files=["data.csv"]):
    header = Path("data.csv").read_text().splitlines()[0]
    X = np.random.default_rng(n).random(n)
    total = float(X.sum())
print("total", round(total, 6), header)
"""

MIB_FLOATS = 1024 * 1024 // 8  # n for a 1 MiB array (random floats: incompressible)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    e["PYTHONPATH"] = str(ROOT)
    e.update(extra)
    return e


def cli(
    *args: str, cache: Path | None = None, module: bool = True, **extra: str
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "statecache"] if module else [str(BIN / "statecache")]
    full = [*cmd, *args]
    if cache is not None:
        full += ["--dir", str(cache)]
    return subprocess.run(
        full, capture_output=True, text=True, env=env(**extra), cwd=cache.parent if cache else None
    )


class Project:
    """A directory with scripts that use checkpoints and a cache directory beside them."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / ".statecache"
        (root / "data.csv").write_text("a,b\n1,2\n")

    def run(self, name: str, n: int, **extra: str) -> subprocess.CompletedProcess:
        script = self.root / f"{name}.py"
        if not script.exists():
            script.write_text(SCRIPT.format(name=name))
        r = subprocess.run(
            [sys.executable, str(script), str(n)],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=env(STATECACHE_DIR=str(self.cache), **extra),
        )
        assert r.returncode == 0, r.stderr
        return r

    def save(self, name: str, n: int, **extra: str) -> str:
        """Run the script for a new version; return the key it saved."""
        before = set(self.keys(name))
        self.run(name, n, **extra)
        new = set(self.keys(name)) - before
        assert len(new) == 1, (before, new)
        return new.pop()

    def keys(self, name: str) -> list[str]:
        d = self.cache / name
        return sorted(p.name[:-3] for p in d.glob("*.sc")) if d.is_dir() else []

    def all_keys(self) -> set[str]:
        return {p.name[:-3] for p in self.cache.glob("*/*.sc") if not p.parent.is_symlink()}

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(self.cache)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.cache.rglob("*")
            if p.is_file()
        }


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    return Project(tmp_path)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("statecache: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------
# ls


def test_ls_lists_entries_sorted_by_name_then_last_use_with_totals(proj: Project) -> None:
    old = proj.save("features", 1000)
    new = proj.save("features", 2000)
    load = proj.save("load", MIB_FLOATS)
    r = cli("ls", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "KEY",
        "SIZE",
        "VARIABLES",
        "CREATED",
        "LAST",
        "USED",
        "COMPUTE",
    ]
    rows = lines[1:-1]
    assert [row.split()[:2] for row in rows] == [
        ["features", new[:8]],
        ["features", old[:8]],
        ["load", load[:8]],
    ]
    assert "1.0 MB" in rows[2]  # human units
    assert re.search(r"\d+: .*X", rows[0])  # variable count and first names
    assert lines[-1].startswith("3 entries (2 names), ")
    assert lines[-1].endswith(f" in {proj.cache}")


def test_ls_json_shape(proj: Project) -> None:
    key = proj.save("features", 1000)
    r = cli("ls", "--json", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cache_dir"] == str(proj.cache)
    assert out["total"]["entries"] == 1 and out["total"]["names"] == 1
    (e,) = out["entries"]
    assert set(e) >= {
        "name",
        "key",
        "path",
        "size",
        "kind",
        "variables",
        "created",
        "last_used",
        "compute_seconds",
        "source",
        "error",
    }
    assert e["name"] == "features" and e["key"] == key and e["error"] is None
    assert e["size"] == out["total"]["size"] == os.path.getsize(e["path"])
    assert e["kind"] == "checkpoint"
    assert {"X", "total"} <= set(e["variables"])
    assert set(e["variables"]["X"]) >= {"type", "size"}
    assert e["source"]["file"] == str(proj.root / "features.py")
    assert isinstance(e["source"]["line"], int)
    assert e["created"] <= e["last_used"] + 1


def test_ls_of_a_missing_directory_says_so(tmp_path: Path) -> None:
    r = cli("ls", cache=tmp_path / "nothing")
    assert r.returncode == 0
    assert r.stdout == ""
    assert "no cache directory at" in r.stderr
    r = cli("ls", "--json", cache=tmp_path / "nothing")
    assert json.loads(r.stdout)["entries"] == []


def test_dir_defaults_to_environment_then_dot_statecache(proj: Project) -> None:
    proj.save("features", 1000)
    r = subprocess.run(
        [sys.executable, "-m", "statecache", "ls"],
        capture_output=True,
        text=True,
        cwd=proj.root,
        env=env(),
    )
    assert "features" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "statecache", "ls"],
        capture_output=True,
        text=True,
        cwd=proj.root.parent,
        env=env(STATECACHE_DIR=str(proj.cache)),
    )
    assert "features" in r.stdout


# ---------------------------------------------------------------------------------------------
# show


def test_show_by_name_prints_metadata_variables_files_source_and_other_versions(
    proj: Project,
) -> None:
    old = proj.save("features", 1000)
    new = proj.save("features", 2000)
    r = cli("show", "features", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.splitlines()[0] == f"features  {new}"  # the most recently used version
    assert f"source      {proj.root / 'features.py'}:" in out
    assert re.search(r"python\s+3\.\d+", out)
    assert re.search(r"statecache\s+\S+ \(format \S+\)", out)
    assert re.search(r"^  X\s+\S*ndarray\s+15\.\d KB$", out, re.M)
    assert re.search(rf"^  unchanged\s+{re.escape(str(proj.root / 'data.csv'))}", out, re.M)
    assert f"other versions (1)\n  {old[:8]}" in out


MANY = """\
import statecache

@statecache.cached_setup(name="features")
def features(n):
    return list(range(n))

for n in range(1000, 1017):
    features(n)
"""


def test_show_by_key_prefix_and_ambiguous_prefix(proj: Project) -> None:
    # 17 versions of one name, saved by one process (a cached_setup called with 17 arguments)
    (proj.root / "many.py").write_text(MANY)
    proj.run("many", 0)
    keys = proj.keys("features")
    assert len(keys) == 17, keys
    # 17 keys, 16 hex digits: some first digit is shared
    digit = max("0123456789abcdef", key=lambda d: sum(k.startswith(d) for k in keys))
    assert sum(k.startswith(digit) for k in keys) > 1
    r = cli("show", digit, cache=proj.cache)
    assert r.returncode == 1
    assert f"{digit!r} matches" in r.stderr
    for k in keys:
        assert (f"features/{k}" in r.stderr) == k.startswith(digit)
    r = cli("show", keys[3][:10], cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"features  {keys[3]}\n")
    r = cli("show", f"features/{keys[5][:6]}", cache=proj.cache)
    assert r.stdout.startswith(f"features  {keys[5]}\n")


def test_show_nothing_matched_exits_1(proj: Project) -> None:
    proj.save("features", 1000)
    r = cli("show", "nope", cache=proj.cache)
    assert r.returncode == 1
    assert (
        one_line_error(r)
        == f"statecache: no entry in {proj.cache} matches 'nope'; names here: features"
    )


def test_show_reports_data_files_changed_or_missing(proj: Project) -> None:
    proj.save("features", 1000)
    data = proj.root / "data.csv"
    data.write_text("a,c\n1,2\n")  # same size, new content
    r = cli("show", "features", cache=proj.cache)
    assert re.search(r"^  changed\s+\S*data\.csv", r.stdout, re.M), r.stdout
    data.unlink()
    r = cli("show", "features", "--json", cache=proj.cache)
    out = json.loads(r.stdout)
    assert [f["state"] for f in out["files"]] == ["missing"]


def test_show_json_shape(proj: Project) -> None:
    key = proj.save("features", 1000)
    os.utime(proj.root / "data.csv")  # touched, same bytes: still unchanged
    r = cli("show", key[:8], "--json", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["key"] == key and out["name"] == "features"
    assert set(out) >= {
        "path",
        "size",
        "kind",
        "variables",
        "created",
        "last_used",
        "compute_seconds",
        "source",
        "files",
        "python",
        "statecache_version",
        "format",
        "other_versions",
    }
    (f,) = out["files"]
    assert f["path"] == str(proj.root / "data.csv") and f["state"] == "unchanged"
    assert out["other_versions"] == []


# ---------------------------------------------------------------------------------------------
# clear


def test_clear_by_name_prints_what_it_freed_and_keeps_the_rest(proj: Project) -> None:
    a = proj.save("features", 1000)
    b = proj.save("features", 2000)
    keep = proj.save("load", 1000)
    size = sum((proj.cache / "features" / f"{k}.sc").stat().st_size for k in (a, b))
    r = cli("clear", "features", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert f"removed features/{a[:8]}" in r.stdout and f"removed features/{b[:8]}" in r.stdout
    from statecache._config import format_size

    assert r.stdout.splitlines()[-1] == f"freed {format_size(size)} (2 entries)"
    assert proj.all_keys() == {keep}
    assert (
        list((proj.cache / "features").iterdir()) == []
    )  # nothing left behind, not even lock files


def test_clear_older_than_uses_last_use(proj: Project) -> None:
    stale = proj.save("features", 1000)
    fresh = proj.save("features", 2000)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(proj.cache / "features" / f"{stale}.sc", (ten_days_ago, ten_days_ago))
    r = cli("clear", "--older-than", "7d", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert f"removed features/{stale[:8]}" in r.stdout and "last used 10d ago" in r.stdout
    assert proj.all_keys() == {fresh}


def test_clear_dry_run_changes_nothing(proj: Project) -> None:
    a = proj.save("features", 1000)
    proj.save("load", 1000)
    before = proj.snapshot()
    r = cli("clear", "--all", "--dry-run", cache=proj.cache)
    assert r.returncode == 0
    assert f"would remove features/{a[:8]}" in r.stdout
    assert r.stdout.splitlines()[-1].endswith("(2 entries); nothing deleted (dry run)")
    assert proj.snapshot() == before


def test_clear_all_and_unknown_name(proj: Project) -> None:
    proj.save("features", 1000)
    proj.save("load", 1000)
    r = cli("clear", "nothere", cache=proj.cache)
    assert r.returncode == 1  # like `show nothere`
    assert one_line_error(r) == (
        f"statecache: nothing named 'nothere' in {proj.cache}; names here: features, load"
    )
    assert len(proj.all_keys()) == 2
    r = cli("clear", "--all", cache=proj.cache)
    assert r.returncode == 0
    assert proj.all_keys() == set()
    assert list(proj.cache.glob("*/*")) == []  # no lock files left behind either
    assert (proj.cache / "CACHEDIR.TAG").exists()


def test_clear_skips_an_entry_whose_lock_is_held(proj: Project) -> None:
    key = proj.save("features", 1000)
    lock = proj.cache / "features" / f"{key}.sc.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, filelock
            with filelock.FileLock({str(lock)!r}):
                print("locked", flush=True)
                sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        r = cli("clear", "features", cache=proj.cache)
        assert f"skipped features/{key[:8]}: in use" in r.stdout
        assert proj.all_keys() == {key}
    finally:
        holder.communicate("")
    r = cli("clear", "features", cache=proj.cache)
    assert proj.all_keys() == set()


# ---------------------------------------------------------------------------------------------
# gc


def test_gc_by_size_keeps_the_most_recently_used(proj: Project) -> None:
    a = proj.save("a", MIB_FLOATS)
    b = proj.save("b", MIB_FLOATS)
    c = proj.save("c", MIB_FLOATS)
    proj.run("a", MIB_FLOATS)  # a hit: a becomes the most recently used
    r = cli("gc", "--max-size", "2.5M", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert f"removed b/{b[:8]}" in r.stdout
    assert proj.all_keys() == {a, c}
    assert r.stdout.splitlines()[-1].endswith("(cap 2.5 MB)")


def test_gc_keeps_n_old_versions_per_name(proj: Project) -> None:
    keys = [proj.save("features", n) for n in (1000, 2000, 3000, 4000, 5000)]
    other = proj.save("load", 1000)
    r = cli("gc", "--keep-versions", "1", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert proj.all_keys() == {keys[-1], keys[-2], other}  # the newest plus one old version
    assert r.stdout.count("old version") == 3


def test_gc_removes_temp_files_of_dead_writers_only(proj: Project) -> None:
    from statecache.store.layout import is_temp_file

    key = proj.save("features", 1000)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    d = proj.cache / "features"
    dead_tmp = d / f".{key}.sc.{dead_pid}.ab12cd34.tmp"
    live_tmp = d / f".{key}.sc.{os.getpid()}.ef34ab56.tmp"
    for p in (dead_tmp, live_tmp):
        p.write_bytes(b"x" * 5000)
        assert is_temp_file(p.name) is not None, "temp-file naming differs from the layout contract"
    index_tmp = proj.cache / f".statecache-usage.json.{dead_pid}.0badf00d.part"
    index_tmp.write_text("{")
    r = cli("gc", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert f"writer {dead_pid} is gone" in r.stdout
    assert not dead_tmp.exists() and live_tmp.exists()
    assert not index_tmp.exists()
    assert proj.all_keys() == {key}


def test_after_save_enforces_statecache_max_size(proj: Project) -> None:
    keys = [proj.save(name, MIB_FLOATS, STATECACHE_MAX_SIZE="2.5M") for name in "abcd"]
    total = sum(p.stat().st_size for p in proj.cache.glob("*/*.sc"))
    assert total <= 2.5 * 1024 * 1024
    assert proj.all_keys() == set(keys[2:])  # the least recently used went first; the newest stays


def test_after_save_never_removes_the_entry_just_written(proj: Project) -> None:
    a = proj.save("a", MIB_FLOATS, STATECACHE_MAX_SIZE="512K")
    assert proj.all_keys() == {a}  # alone over the cap, and kept: it was just written
    before = set(proj.all_keys())
    r = proj.run("b", MIB_FLOATS, STATECACHE_MAX_SIZE="512K")
    b = (proj.all_keys() - before).pop()
    assert proj.all_keys() == {b}
    assert (
        "statecache: cache over 512.0 KB: removed 1 least recently used entry (1.0 MB)" in r.stderr
    )


CAPPED = """\
import sys

import numpy as np

import statecache

name = sys.argv[1]
with statecache.checkpoint(name, max_size="1500K"):
    X = np.random.default_rng(len(name)).random(131072)
"""


def test_after_save_enforces_the_max_size_argument(proj: Project) -> None:
    script = proj.root / "capped.py"
    script.write_text(CAPPED)
    for name in ("first", "second"):
        r = subprocess.run(
            [sys.executable, str(script), name],
            capture_output=True,
            text=True,
            cwd=proj.root,
            env=env(STATECACHE_DIR=str(proj.cache)),
        )
        assert r.returncode == 0, r.stderr
    assert proj.keys("first") == [] and len(proj.keys("second")) == 1


def test_after_save_sees_entries_removed_by_clear(proj: Project) -> None:
    proj.save("a", MIB_FLOATS, STATECACHE_MAX_SIZE="2.5M")
    proj.save("b", MIB_FLOATS, STATECACHE_MAX_SIZE="2.5M")
    assert cli("clear", "a", "b", cache=proj.cache).returncode == 0
    keys = [proj.save(name, MIB_FLOATS, STATECACHE_MAX_SIZE="2.5M") for name in "cd"]
    assert proj.all_keys() == set(keys)  # 2 MiB: under the cap, nothing evicted


# ---------------------------------------------------------------------------------------------
# verify


def test_verify_catches_a_flipped_byte(proj: Project) -> None:
    a = proj.save("features", 20000)
    proj.save("load", 1000)
    r = cli("verify", cache=proj.cache)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 entries" in r.stdout and "good" in r.stdout
    path = proj.cache / "features" / f"{a}.sc"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    r = cli("verify", cache=proj.cache)
    assert r.returncode == 1
    assert r.stdout.startswith(f"BAD features/{a[:8]}: ")
    assert f"statecache clear features/{a[:8]}" in r.stdout
    out = json.loads(cli("verify", "--json", cache=proj.cache).stdout)
    assert out["checked"] == 2 and out["bad"] == 1
    bad = [e for e in out["entries"] if not e["ok"]]
    assert [e["key"] for e in bad] == [a] and bad[0]["error"]


def test_verify_checks_signatures_with_statecache_secret(proj: Project) -> None:
    proj.save("features", 1000, STATECACHE_SECRET="right")
    assert cli("verify", cache=proj.cache, STATECACHE_SECRET="right").returncode == 0
    r = cli("verify", cache=proj.cache, STATECACHE_SECRET="wrong")
    assert r.returncode == 1 and "BAD features/" in r.stdout


def test_verify_without_a_cache_says_so_and_exits_1(tmp_path: Path) -> None:
    r = cli("verify", cache=tmp_path / "nothing")
    assert r.returncode == 1 and r.stdout == ""
    assert one_line_error(r).startswith(f"statecache: no cache directory at {tmp_path / 'nothing'}")
    r = cli("verify", "--json", cache=tmp_path / "nothing")
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "no cache directory"


# ---------------------------------------------------------------------------------------------
# finding the cache, filtering by name, tables that fit the names


def run_in(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "statecache", *args], capture_output=True, text=True, cwd=cwd,
        env=env(**extra),
    )


def test_the_cache_is_found_like_git_finds_its_root(proj: Project, tmp_path: Path) -> None:
    """No --dir, no STATECACHE_DIR: the nearest .statecache in the working directory or above."""
    proj.save("features", 1000)
    deep = proj.root / "src" / "pkg"
    deep.mkdir(parents=True)
    r = run_in(deep, "ls")
    assert r.returncode == 0, r.stderr
    assert "features" in r.stdout and r.stdout.rstrip().endswith(f" in {proj.cache}")
    assert run_in(deep, "show", "features").returncode == 0
    assert "1 entry" in run_in(deep, "verify").stdout
    # a nearer one wins; STATECACHE_DIR wins over both; --dir wins over everything
    nearer = proj.root / "src" / ".statecache"
    nearer.mkdir()
    assert run_in(deep, "ls").stdout == f"no entries in {nearer}\n"
    assert "features" in run_in(deep, "ls", STATECACHE_DIR=str(proj.cache)).stdout
    r = run_in(deep, "ls", "--dir", str(nearer), STATECACHE_DIR=str(proj.cache))
    assert r.stdout == f"no entries in {nearer}\n"
    # nowhere above: named as ./.statecache of the working directory
    alone = tmp_path.parent / f"{tmp_path.name}-alone"
    alone.mkdir()
    r = run_in(alone, "verify")
    assert r.returncode == 1 and str(alone / ".statecache") in r.stderr
    (alone / ".statecache").symlink_to(proj.cache)  # a cache moved to a bigger disk
    assert "features" in run_in(alone, "ls").stdout


def test_ls_names_filters_and_an_unknown_name_exits_1(proj: Project) -> None:
    feat = proj.save("features", 1000)
    load = proj.save("load", 1000)
    r = cli("ls", "load", cache=proj.cache)
    assert r.returncode == 0, r.stderr
    assert [row.split()[:2] for row in r.stdout.splitlines()[1:-1]] == [["load", load[:8]]]
    assert r.stdout.splitlines()[-1].startswith("1 entry (1 name), ")
    r = cli("ls", "--json", "features", "load", cache=proj.cache)
    assert [e["key"] for e in json.loads(r.stdout)["entries"]] == [feat, load]
    r = cli("ls", "features", "nosuch", cache=proj.cache)
    assert r.returncode == 1 and "features" in r.stdout
    assert one_line_error(r) == (
        f"statecache: nothing named 'nosuch' in {proj.cache}; names here: features, load"
    )
    assert cli("ls", "../x", cache=proj.cache).returncode == 2


def test_clear_and_gc_tables_fit_the_longest_name(proj: Project) -> None:
    long = "a_checkpoint_name_longer_than_twenty_columns"
    proj.save("a", 1000)
    proj.save(long, 1000)

    r = cli("clear", "--all", "--dry-run", cache=proj.cache)
    rows = [line for line in r.stdout.splitlines() if line.startswith("would remove ")]
    # the size column lines up: "would remove " NAME/KEY8 padded to the longest, " ", SIZE (9)
    assert [line.index("  last used") for line in rows] == [13 + len(long) + 9 + 1 + 9] * 2
    r = cli("clear", "a", "--dry-run", cache=proj.cache)
    [row] = [line for line in r.stdout.splitlines() if line.startswith("would remove ")]
    assert re.fullmatch(r"would remove a/[0-9a-f]{8} +\S+ \S+  last used .*", row)
    assert row.index("  last used") == 13 + len("a/12345678") + 1 + 9  # not padded to 20
    r = cli("gc", "--keep-versions", "0", "--max-size", "1", "--dry-run", cache=proj.cache)
    rows = [line for line in r.stdout.splitlines() if line.startswith("would remove ")]
    assert len({line.index("  over ") for line in rows}) == 1 and len(rows) == 2, r.stdout


# ---------------------------------------------------------------------------------------------
# usage, safety, the two ways to run it


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["ls", "--bogus"],
        ["gc", "--max-size", "10X"],
        ["gc", "--keep-versions", "-1"],
        ["gc", "--keep-versions", "two"],
        ["clear"],
        ["clear", "--older-than", "7y"],
        ["clear", "../etc"],
        ["clear", "/etc"],
        ["clear", "a", "--all"],
        ["show"],
        ["show", "../x"],
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    cache = tmp_path / ".statecache"
    r = subprocess.run(
        [sys.executable, "-m", "statecache", *args],
        capture_output=True,
        text=True,
        env=env(STATECACHE_DIR=str(cache)),
        cwd=tmp_path,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    if args:
        one_line_error(r)


def test_bad_environment_value_exits_2(proj: Project) -> None:
    proj.save("features", 1000)
    r = cli("gc", cache=proj.cache, STATECACHE_MAX_SIZE="lots")
    assert r.returncode == 2
    assert "STATECACHE_MAX_SIZE" in one_line_error(r)


def test_clear_and_gc_refuse_a_directory_that_is_not_a_statecache_cache(tmp_path: Path) -> None:
    # looks like a cache (name/<32 hex>.sc) but has no CACHEDIR.TAG from statecache
    victim = tmp_path / "precious" / "data"
    victim.mkdir(parents=True)
    f = victim / ("0" * 32 + ".sc")
    f.write_bytes(b"important")
    for args in (["clear", "--all"], ["gc", "--max-size", "0"]):
        r = cli(*args, cache=tmp_path / "precious")
        assert r.returncode == 2
        assert "not a statecache directory" in one_line_error(r)
    assert f.read_bytes() == b"important"


def test_nothing_outside_the_cache_is_deleted_through_a_symlink(
    proj: Project, tmp_path: Path
) -> None:
    proj.save("features", 1000)
    outside = tmp_path / "outside"
    outside.mkdir()
    f = outside / ("1" * 32 + ".sc")
    f.write_bytes(b"important")
    (proj.cache / "evil").symlink_to(outside, target_is_directory=True)
    assert cli("clear", "--all", cache=proj.cache).returncode == 0
    assert cli("gc", "--max-size", "0", "--keep-versions", "0", cache=proj.cache).returncode == 0
    r = cli("clear", "evil", cache=proj.cache)  # a link is not a checkpoint: nothing named so
    assert r.returncode == 1 and "nothing named 'evil'" in r.stderr
    assert f.read_bytes() == b"important"
    assert proj.all_keys() == set()


def without_ages(text: str) -> str:
    text = re.sub(r"\(?(just now|\d+[smhd] ago)\)?", "AGE", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "TIME", text)
    return re.sub(r" +", " ", text)  # column widths follow the ages' widths


def test_python_m_statecache_equals_the_console_script(proj: Project) -> None:
    if not (BIN / "statecache").exists():
        pytest.skip("console script not installed (pip install -e .)")
    proj.save("features", 1000)
    for args in (
        ["ls"],
        ["ls", "--json"],
        ["show", "features"],
        ["verify"],
        ["--help"],
        ["show", "zz"],
    ):
        a = cli(*args, cache=proj.cache if args[0] != "--help" else None)
        b = cli(*args, cache=proj.cache if args[0] != "--help" else None, module=False)
        # the two runs may straddle a second: ages ("just now", "1s ago") are not compared
        assert [a.returncode, *map(without_ages, (a.stdout, a.stderr))] == [
            b.returncode, *map(without_ages, (b.stdout, b.stderr))
        ]


# ---------------------------------------------------------------------------------------------
# concurrency


RESTORE = """\
import hashlib
import sys

import numpy as np

import statecache

with statecache.checkpoint("big"):
    X = np.random.default_rng(7).random(2_000_000)
print(hashlib.sha256(X.tobytes()).hexdigest())
"""

CLEARER = """\
import os
import sys

from statecache.cli.main import main

cache, stop = sys.argv[1], sys.argv[2]
sys.stdout = open(os.devnull, "w")
n = 0
while not os.path.exists(stop):
    main(["clear", "big", "--dir", cache])
    n += 1
sys.stderr.write(f"cleared {{n}} times\\n")
"""


def test_clear_while_another_process_restores_gives_full_state_or_clean_miss(proj: Project) -> None:
    import hashlib

    import numpy as np

    expected = hashlib.sha256(np.random.default_rng(7).random(2_000_000).tobytes()).hexdigest()
    script = proj.root / "restore.py"
    script.write_text(RESTORE)
    run_env = env(STATECACHE_DIR=str(proj.cache))
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=proj.root, env=run_env
    )
    assert r.stdout.strip() == expected, r.stderr
    (proj.root / "clearer.py").write_text(CLEARER.format())
    stop = proj.root / "stop"
    clearer = subprocess.Popen(
        [sys.executable, str(proj.root / "clearer.py"), str(proj.cache), str(stop)],
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    outcomes = []
    try:
        for _ in range(12):
            r = subprocess.run(
                [sys.executable, str(script)],
                capture_output=True,
                text=True,
                cwd=proj.root,
                env=run_env,
            )
            assert r.returncode == 0, r.stderr
            assert "Traceback" not in r.stderr and "warning" not in r.stderr.lower(), r.stderr
            assert r.stdout.strip() == expected  # the full state, restored or recomputed
            outcomes.append("restored" if "restored" in r.stderr else "computed")
    finally:
        stop.touch()
        _, err = clearer.communicate()
    assert clearer.returncode == 0, (err, outcomes)
    assert "cleared" in err


MAPPED = """\
import hashlib
import os
import subprocess
import sys

import numpy as np

import statecache

with statecache.checkpoint("big", mmap=True):
    X = np.random.default_rng(7).random(2_000_000)
# The second run is told the cache by a file read after the block, not by sys.argv or the
# environment (either may count in the key, and this run must be a hit).
if os.path.exists("clear-dir"):  # X is restored as a map of the entry file: delete it, read X
    cache = open("clear-dir").read()
    r = subprocess.run([sys.executable, "-m", "statecache", "clear", "big", "--dir", cache],
                       capture_output=True, text=True)
    print(r.stdout.splitlines()[-1])
print(hashlib.sha256(X.tobytes()).hexdigest())
"""


def test_an_entry_cleared_while_mapped_is_still_read_in_full(proj: Project) -> None:
    """The deterministic case of the race above: the reader has the entry open (mapped) when
    clear unlinks it; the reader still reads every byte of the old entry."""
    import hashlib

    import numpy as np

    expected = hashlib.sha256(np.random.default_rng(7).random(2_000_000).tobytes()).hexdigest()
    script = proj.root / "mapped.py"
    script.write_text(MAPPED)
    run_env = env(STATECACHE_DIR=str(proj.cache))
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=proj.root, env=run_env
    )
    assert r.stdout.strip() == expected, r.stderr
    (proj.root / "clear-dir").write_text(str(proj.cache))
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=proj.root,
        env=run_env,
    )
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stderr
    freed, digest = r.stdout.splitlines()
    assert freed.startswith("freed 15.") and freed.endswith("(1 entry)")
    assert digest == expected
    assert proj.all_keys() == set()
