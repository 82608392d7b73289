"""Transfers with the remote as a user sees them, through a slow remote (a proxy on 127.0.0.1
that passes at most a set number of bytes per second, so a transfer takes at least its size
over that rate) and one that cuts a download short:

- a download or an upload that runs past a second draws a progress bar on stderr when stderr is
  a terminal (the same rule as a long save or load: never into a pipe or a log);
- the status line of a remote hit says how much came from where, and the restore after it;
- a slow remote still gives the right state; a download cut short mid-body is a warning, then
  the block computes here and saves locally, leaving no temp file behind.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project, subprocess_env

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import (  # noqa: E402
    KEY,
    NAME,
    SECRET,
    S3Server,
    ThrottledProxy,
    make_entry,
    publish_now,
    tier_for,
)

pytest.importorskip("s3fs")
pytest_plugins = ("tests.remote_server",)

RATE = 2 << 20  # bytes per second through the slow remote
SCRIPT = r"""
import hashlib, os
import numpy as np
import statecache as sc

with sc.checkpoint("weights"):
    with open(os.environ["LOG"], "a") as log:
        log.write("ran\n")
    W = np.random.default_rng(3).random(int(os.environ["N"]))
print("digest", hashlib.sha256(W.tobytes()).hexdigest())
"""


@pytest.fixture
def slow(s3_server: S3Server) -> Iterator[ThrottledProxy]:
    proxy = ThrottledProxy(s3_server.port, RATE)
    try:
        yield proxy
    finally:
        proxy.close()


def run_on_a_terminal(project: Project, env: dict[str, str]) -> tuple[str, str]:
    """Run ``run.py`` with stderr on a pseudo-terminal (stdout a pipe); (stdout, stderr)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "run.py"], cwd=project.root, env=subprocess_env(**env),
        stdout=subprocess.PIPE, stderr=follower, text=True,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.wait(timeout=300) == 0, shown.decode(errors="replace")
    return out, shown.decode(errors="replace")


def project_at(root: Path) -> Project:
    project = Project(root)
    project.write("run.py", SCRIPT)
    return project


def env_for(remote: str, endpoint: S3Server | ThrottledProxy, log: Path, n: int, **extra: str) -> dict[str, str]:
    from tests.remote_server import aws_env

    return {"STATECACHE_REMOTE": remote, "STATECACHE_SECRET": SECRET, "LOG": str(log), "N": str(n),
            **aws_env(endpoint.endpoint), **extra}


N = 600_000  # 4.8 MB of incompressible float64: at least 2.3 s through the slow remote


def test_a_slow_download_shows_a_progress_bar_on_a_terminal(s3_server: S3Server, slow: ThrottledProxy, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log = tmp_path / "ran.log"
    first = project_at(tmp_path / "one").run("run.py", env=env_for(remote, s3_server, log, N))
    assert first.computed("weights")
    out, shown = run_on_a_terminal(project_at(tmp_path / "two"), env_for(remote, slow, log, N))
    assert out == first.stdout and len(log.read_text().split()) == 1  # the right state, not recomputed
    assert f"statecache: fetching from {remote} 'weights' [" in shown and "% " in shown
    assert "\r\x1b[K" in shown  # the bar is erased before the status lines
    assert f"'weights' restored 4.6 MB from {remote} in " in shown  # one line: where, and the time with the fetch


def test_no_progress_bar_into_a_pipe(s3_server: S3Server, slow: ThrottledProxy, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log = tmp_path / "ran.log"
    project_at(tmp_path / "one").run("run.py", env=env_for(remote, s3_server, log, N))
    second = project_at(tmp_path / "two").run("run.py", env=env_for(remote, slow, log, N))
    assert second.hit("weights") and "\r" not in second.stderr and "[#" not in second.stderr
    assert len(log.read_text().split()) == 1


def test_the_exit_wait_for_a_slow_upload_shows_a_progress_bar(s3_server: S3Server, slow: ThrottledProxy, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log = tmp_path / "ran.log"
    out, shown = run_on_a_terminal(project_at(tmp_path / "one"), env_for(remote, slow, log, N))
    assert "'weights' computing" in shown
    assert f"waiting up to 60 s for the upload of 'weights' to {remote}" in shown
    assert f"statecache: uploading to {remote} 'weights' [" in shown
    # it did arrive: another machine restores it without computing
    second = project_at(tmp_path / "two").run("run.py", env=env_for(remote, s3_server, log, N))
    assert second.hit("weights") and second.stdout == out and len(log.read_text().split()) == 1


def test_statecache_push_shows_a_progress_bar_on_a_terminal(s3_server: S3Server, slow: ThrottledProxy, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    cache = tmp_path / "cache"
    make_entry(cache, n=N, noise=True)
    project = Project(tmp_path)
    project.write("run.py", "from statecache.cli.main import main\nraise SystemExit(main())\n")
    env = {"STATECACHE_SECRET": SECRET, "STATECACHE_DIR": str(cache), **s3_server.env(slow.endpoint)}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "run.py", "push", "--remote", remote], cwd=tmp_path, env=subprocess_env(**env),
        stdout=subprocess.PIPE, stderr=follower, text=True,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    assert proc.wait(timeout=300) == 0
    assert f"statecache: uploading to {remote} '{NAME}' [".encode() in shown
    assert proc.stdout is not None and f"pushed {NAME}/{KEY[:12]}" in proc.stdout.read()


def test_a_download_cut_short_is_a_warning_then_computed_here(s3_server: S3Server, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log = tmp_path / "ran.log"
    first = project_at(tmp_path / "one").run("run.py", env=env_for(remote, s3_server, log, N))
    cutting = ThrottledProxy(s3_server.port, RATE, cut_after=1 << 20)  # mid-body of the 4.6 MB
    try:
        project = project_at(tmp_path / "two")
        second = project.run("run.py", env=env_for(remote, cutting, log, N))
    finally:
        cutting.close()
    assert cutting.cuts >= 1
    assert second.computed("weights") and second.stdout == first.stdout
    assert len(log.read_text().split()) == 2
    assert f"the remote cache {remote} failed while fetching 'weights'" in second.stderr
    assert not list(project.cache.glob("*/.*.tmp")) and len(project.entries("weights")) == 1
    third = project.run("run.py", env=env_for(remote, s3_server, log, N))
    assert third.hit("weights") and third.stdout == first.stdout  # its own local entry


def test_a_tier_fetch_cut_short_leaves_nothing(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    publish_now(tier_for(remote), make_entry(tmp_path / "one", n=N, noise=True))
    cutting = ThrottledProxy(s3_server.port, RATE, cut_after=1 << 20)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", cutting.endpoint)
        local = tmp_path / "two" / NAME / f"{KEY}.sc"
        from statecache._errors import StateCacheWarning

        with pytest.warns(StateCacheWarning, match="failed while fetching 'features'"):
            assert tier_for(remote).fetch(NAME, KEY, str(local)) is None
    finally:
        cutting.close()
    assert not local.exists() and not list(local.parent.glob(".*"))
