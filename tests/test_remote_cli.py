"""``statecache remote ls|push|pull|gc`` against S3 on loopback and a shared directory."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import KEY, NAME, SECRET, S3Server, make_entry, publish_now, tier_for  # noqa: E402

pytest.importorskip("s3fs")
pytest_plugins = ("tests.remote_server",)  # the S3 server, broken endpoints, the `url` remote


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    from statecache.cli import main as _cli

    monkeypatch.setitem(_cli.PLUGINS, "remote", "statecache.cli.remote")
    monkeypatch.setenv("STATECACHE_SECRET", SECRET)

    def run(*argv: str) -> tuple[int, str, str]:
        code = _cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_push_ls_pull(url, tmp_path: Path, cli, s3_server: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    remote, _server = url
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    one, two = tmp_path / "one", tmp_path / "two"
    path = make_entry(one)
    code, out, _ = cli("remote", "push", "--dir", str(one), "--remote", remote)
    assert code == 0 and "pushed features/" in out
    assert "0 of 1" in cli("remote", "push", "--dir", str(one), "--remote", remote)[1]  # already there
    code, out, _ = cli("remote", "ls", "--json", "--remote", remote)
    listed = json.loads(out)["entries"]
    assert [(e["name"], e["key"], e["yours"]) for e in listed] == [(NAME, KEY, True)]
    code, out, _ = cli("remote", "pull", "--dir", str(two), "--remote", remote)
    assert code == 0 and "1 of 1" in out
    assert (two / NAME / f"{KEY}.sc").read_bytes() == path.read_bytes()


def test_cli_gc_removes_by_upload_age(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = f"file://{shared}"
    tier = tier_for(remote)
    publish_now(tier, make_entry(tmp_path / "one"))
    obj = shared / tier.entry_object(NAME, KEY)
    code, out, _ = cli("remote", "gc", "--older-than", "30d", "--remote", remote)
    assert code == 0 and obj.exists() and "0 entries" in out
    old = time.time() - 31 * 86400
    os.utime(obj, (old, old))
    code, out, _ = cli("remote", "gc", "--older-than", "30d", "--dry-run", "--remote", remote)
    assert "would remove features/" in out and obj.exists()
    code, out, _ = cli("remote", "gc", "--older-than", "30d", "--remote", remote)
    assert code == 0 and not obj.exists()


def test_cli_push_and_pull_find_the_cache_as_the_other_commands_do(  # type: ignore[no-untyped-def]
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --dir: the nearest .statecache in the working directory or above it, as for ls/gc."""
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = f"file://{shared}"
    project = tmp_path / "project"
    make_entry(project / ".statecache")
    (project / "src").mkdir()
    monkeypatch.delenv("STATECACHE_DIR", raising=False)
    monkeypatch.chdir(project / "src")
    code, out, _ = cli("remote", "push", "--remote", remote)
    assert code == 0 and "1 of 1 local entries pushed" in out
    (project / ".statecache" / NAME / f"{KEY}.sc").unlink()
    code, out, _ = cli("remote", "pull", "--remote", remote)
    assert code == 0 and f"pulled into {project / '.statecache'}" in out
    assert (project / ".statecache" / NAME / f"{KEY}.sc").exists()
    assert not (project / "src" / ".statecache").exists()


def test_cli_without_a_remote_is_a_usage_error(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("STATECACHE_REMOTE", raising=False)
    code, _, err = cli("remote", "ls")
    assert code == 2 and "give --remote URL or set STATECACHE_REMOTE" in err


def test_key_ids_name_the_secret_without_revealing_it() -> None:
    from statecache.store.remote import key_id

    assert key_id(b"a") != key_id(b"b") and len(key_id(b"a")) == 16
    assert hashlib.sha256(b"a").hexdigest()[:16] != key_id(b"a")
