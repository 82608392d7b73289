"""The remote tier's URL handling beyond S3 and a shared mount: any fsspec filesystem works
through the same store (``local://`` here, the path ``gs://`` and ``az://`` take), and a
protocol whose package is missing (gcsfs, adlfs) is one warning naming the package to install,
then the local cache: the checkpoint computes, saves locally, and hits on the next run."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

import pytest

from tests.conftest import Project

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import SECRET  # noqa: E402

pytest.importorskip("fsspec")

SCRIPT = r"""
import os
import numpy as np
import statecache as sc

with sc.checkpoint("features"):
    with open(os.environ["LOG"], "a") as log:
        log.write("ran\n")
    X = np.arange(200_000) * 3
print("sum", int(X.sum()))
"""


def clone(root: Path) -> Project:
    project = Project(root)
    project.write("run.py", SCRIPT)
    return project


def bodies(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_an_fsspec_filesystem_is_shared_like_a_mount(tmp_path: Path) -> None:
    shared = tmp_path / "bucket"
    shared.mkdir()
    log = tmp_path / "ran.log"
    env = {"STATECACHE_REMOTE": f"local://{shared}", "STATECACHE_SECRET": SECRET, "LOG": str(log)}
    one, two = clone(tmp_path / "alice" / "project"), clone(tmp_path / "bob" / "project")
    first = one.run("run.py", env=env)
    assert first.computed("features") and bodies(log) == 1
    (entry,) = shared.rglob("*.sc")
    assert entry.relative_to(shared).parts[:3] == ("v1", "entries", "features")
    assert not list(shared.rglob("*.json"))  # the lease went once the entry was there
    second = two.run("run.py", env=env)
    assert second.hit("features") and bodies(log) == 1 and second.stdout == first.stdout
    assert any("restored" in line and f"from local://{shared}" in line for line in second.status)
    assert two.entries("features")[0].read_bytes() == entry.read_bytes()


@pytest.mark.parametrize("url, package", [("gs://team-bucket/cache", "gcsfs"), ("az://team/cache", "adlfs")])
def test_a_protocol_whose_package_is_missing_names_it_then_goes_on_locally(
    tmp_path: Path, url: str, package: str
) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    log = tmp_path / "ran.log"
    env = {"STATECACHE_REMOTE": url, "STATECACHE_SECRET": SECRET, "LOG": str(log)}
    project = clone(tmp_path / "project")
    fresh = project.run("run.py", env={**env, "STATECACHE_DISABLE": "1"}).stdout
    first = project.run("run.py", env=env)
    assert first.computed("features") and first.stdout == fresh
    said = [line for line in first.stderr.splitlines() if package in line]
    assert len(said) == 1, first.stderr
    assert f"the remote cache {url} failed" in said[0] and f"pip install {package}" in said[0]
    assert "credentials" not in said[0]  # not the advice of a remote that is down
    second = project.run("run.py", env=env)
    assert second.hit("features") and second.stdout == fresh and bodies(log) == 2


def test_the_cli_names_the_missing_package_too(tmp_path: Path) -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    project = Project(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    run = project.run("-m", "statecache", "ls", "--remote", "gs://team-bucket/cache",
                      env={"STATECACHE_SECRET": SECRET}, check=False)
    assert run.returncode == 1 and "gs:// URLs need the gcsfs package" in run.stderr
    assert "pip install gcsfs" in run.stderr


UTC = datetime.timezone.utc


@pytest.mark.parametrize(
    "raw",
    [
        {"mtime": 1_700_000_000.0},  # local
        {"created": datetime.datetime.fromtimestamp(1_700_000_000, UTC)},  # memory
        {"LastModified": datetime.datetime.fromtimestamp(1_700_000_000, UTC)},  # s3fs
        {"last_modified": datetime.datetime.fromtimestamp(1_700_000_000, UTC)},  # adlfs
        {"updated": "2023-11-14T22:13:20.000Z"},  # gcsfs
    ],
    ids=["local", "memory", "s3fs", "adlfs", "gcsfs"],
)
def test_an_objects_upload_time_is_read_from_each_filesystems_info(raw: dict) -> None:  # type: ignore[type-arg]
    """gc --remote and stale leases go by it: an object whose time is unread would look new."""
    from statecache.store.filestores import modified_time

    assert modified_time({"size": 1, **raw}) == 1_700_000_000.0


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "read-write"])
def test_a_shared_mount_download_is_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool) -> None:
    """Copied in the kernel where it can be, read and written where not (macOS, old kernels):
    the same bytes either way, across more than one piece."""
    import os

    from statecache.store.objects import PIECE
    from tests.remote_server import KEY, NAME, make_entry, publish_now, tier_for

    shared = tmp_path / "shared"
    shared.mkdir()
    path = make_entry(tmp_path / "one", n=3_000_000, noise=True)
    assert path.stat().st_size > PIECE
    publish_now(tier_for(f"file://{shared}"), path)
    if not kernel_copy:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    local = tmp_path / "two" / NAME / f"{KEY}.sc"
    got = tier_for(f"file://{shared}").fetch(NAME, KEY, str(local))
    assert got is not None and local.read_bytes() == path.read_bytes()
