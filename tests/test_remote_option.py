"""``remote=`` on ``checkpoint`` and ``cached_setup`` (issue 13 item 2): a URL for one call, with
no ``STATECACHE_REMOTE`` set, shares between two clones (a real S3 server on loopback and a
shared directory); ``remote=False`` keeps a checkpoint off a ``STATECACHE_REMOTE`` that is set;
the remote's code (and fsspec) loads only when a remote is set and the local tier misses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Project

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import SECRET, S3Server  # noqa: E402

pytest.importorskip("s3fs")
pytest_plugins = ("tests.remote_server",)  # the S3 server and the `url` remote (s3, dir)

SCRIPT = r"""
import os, sys
import numpy as np
import statecache as sc

remote = @REMOTE@
with sc.checkpoint("features", remote=remote):
    with open(os.environ["LOG"], "a") as log:
        log.write("features\n")
    X = np.arange(300_000) * 7

@sc.cached_setup(remote=remote)
def vocab(n):
    with open(os.environ["LOG"], "a") as log:
        log.write("vocab\n")
    return {f"w{i}": i for i in range(n)}

words = vocab(1000)
print("sum", int(X.sum()), len(words), words["w999"])
print("loaded", sorted(m for m in ("fsspec", "s3fs", "statecache.store.remote") if m in sys.modules))
"""


def clone(root: Path, remote: str) -> Project:
    """A clone of the project whose checkpoints take ``remote=<the expression remote>``."""
    project = Project(root)
    project.write("run.py", SCRIPT.replace("@REMOTE@", remote))
    return project


def env_for(server: S3Server | None, log: Path, **extra: str) -> dict[str, str]:
    env = {"STATECACHE_SECRET": SECRET, "LOG": str(log), **extra}
    if server is not None:
        env.update(server.env())
    return env


def bodies(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def remote_objects(remote: str, server: S3Server | None) -> list[str]:
    """Every object under the remote URL (entries and leases)."""
    if server is None:
        root = Path(remote[len("file://"):])
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    bucket, prefix = remote[len("s3://"):].split("/", 1)
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_remote_argument_shares_between_two_clones_without_the_variable(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    log = tmp_path / "computed.log"
    env = env_for(server, log)  # no STATECACHE_REMOTE: the argument alone names the remote
    one = clone(tmp_path / "alice" / "project", repr(remote))
    two = clone(tmp_path / "bob" / "elsewhere" / "project", repr(remote))
    first = one.run("run.py", env=env)
    assert first.computed("features") and first.computed("vocab")
    assert sorted(bodies(log)) == ["features", "vocab"]
    assert any("/features/" in o for o in remote_objects(remote, server))
    second = two.run("run.py", env=env)
    assert second.hit("features") and second.hit("vocab"), second.stderr
    assert not second.computed("features") and not second.computed("vocab")
    assert any("restored" in line and f"from {remote}" in line for line in second.status)
    assert second.stdout.splitlines()[0] == first.stdout.splitlines()[0]
    assert sorted(bodies(log)) == ["features", "vocab"]  # the bodies ran once, on clone one
    assert two.entries("features")[0].read_bytes() == one.entries("features")[0].read_bytes()


def test_a_local_hit_loads_no_remote_code(s3_server: S3Server, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log = tmp_path / "computed.log"
    project = clone(tmp_path / "project", repr(remote))
    first = project.run("run.py", env=env_for(s3_server, log))
    assert first.computed("features")
    assert "loaded ['fsspec', 's3fs', 'statecache.store.remote']" in first.stdout  # a miss asks it
    again = project.run("run.py", env=env_for(s3_server, log))
    assert again.hit("features") and again.hit("vocab")
    assert "loaded []" in again.stdout


def test_remote_false_ignores_a_set_statecache_remote(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    log = tmp_path / "computed.log"
    env = env_for(server, log, STATECACHE_REMOTE=remote)
    private = clone(tmp_path / "private", "False")
    first = private.run("run.py", env=env)
    assert first.computed("features") and first.computed("vocab")
    assert remote_objects(remote, server) == []  # nothing published, no lease taken
    assert "loaded []" in first.stdout  # the remote was not even opened

    shared = clone(tmp_path / "shared", "None")  # left out: STATECACHE_REMOTE
    assert shared.run("run.py", env=env).computed("features")
    assert any("/features/" in o for o in remote_objects(remote, server))
    other = clone(tmp_path / "other", "False")  # the remote has the entry now: still not asked
    run = other.run("run.py", env=env)
    assert run.computed("features") and run.computed("vocab")
    assert not any(" from " in line for line in run.status if "restored" in line)
    assert bodies(log).count("features") == 3
    assert other.run("run.py", env=env).hit("features")  # its own local tier works as ever


def test_remote_false_also_leaves_out_a_tier_added_by_hand(tmp_path: Path) -> None:
    shared = tmp_path / "mount"
    shared.mkdir()
    script = f"""
import statecache as sc
from statecache._engine import add_tier
from statecache.store.remote import engine_tier

add_tier(engine_tier({f"file://{shared}"!r}))
with sc.checkpoint("secret-sauce", remote=False):
    y = 42
print("y", y)
"""
    project = Project(tmp_path / "project")
    project.write("run.py", script)
    assert project.run("run.py", env={"STATECACHE_SECRET": SECRET}).computed("secret-sauce")
    assert not [p for p in shared.rglob("*") if p.is_file()]


def test_a_path_is_a_shared_mount(tmp_path: Path) -> None:
    mount = tmp_path / "team mount"
    mount.mkdir()
    log = tmp_path / "computed.log"
    expression = f"__import__('pathlib').Path({str(mount)!r})"
    one, two = clone(tmp_path / "one", expression), clone(tmp_path / "two", expression)
    assert one.run("run.py", env=env_for(None, log)).computed("features")
    assert two.run("run.py", env=env_for(None, log)).hit("features")
    assert bodies(log).count("features") == 1


# --- in process: what Options and Settings make of remote= ---------------------------------------


def test_settings_merge_remote_with_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache._settings import Options

    monkeypatch.setenv("STATECACHE_REMOTE", "s3://team-bucket/cache")
    left_out = Options("t").settings("t")
    assert (left_out.remote, left_out.shared) == ("s3://team-bucket/cache", True)
    off = Options("t", remote=False).settings("t")
    assert (off.remote, off.shared) == (None, False)
    own = Options("t", remote=tmp_path).settings("t")
    assert (own.remote, own.shared) == (f"file://{tmp_path}", True)
    monkeypatch.delenv("STATECACHE_REMOTE")
    assert Options("t").settings("t").remote is None
