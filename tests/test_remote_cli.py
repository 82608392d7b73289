"""The remote tier on the command line, against S3 on loopback and a shared directory:
``statecache ls --remote``, ``push [NAME...]``, ``pull [NAME...]``, ``gc --remote --older-than
30d``, and their first spelling ``statecache remote ls|push|pull|gc``; the errors say what to
do (no remote set, no secret, a value that is no URL, options of the other cache)."""

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
    code, out, _ = cli("push", "--dir", str(one), "--remote", remote)
    assert code == 0 and "pushed features/" in out
    assert "0 of 1" in cli("push", "--dir", str(one), "--remote", remote)[1]  # already there
    code, out, _ = cli("ls", "--remote", remote, "--json")
    listed = json.loads(out)["entries"]
    assert [(e["name"], e["key"], e["yours"]) for e in listed] == [(NAME, KEY, True)]
    code, out, _ = cli("ls", "--remote", remote)
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "KEY", "SIZE", "UPLOADED", "SIGNED", "WITH"]
    assert f"{NAME}  {KEY[:12]}" in out and "your secret" in out
    code, out, _ = cli("pull", "--dir", str(two), "--remote", remote)
    assert code == 0 and "1 of 1" in out
    assert (two / NAME / f"{KEY}.sc").read_bytes() == path.read_bytes()
    assert cli("pull", "--dir", str(two), "--remote", remote)[1].startswith("0 of 1")  # had it


def test_cli_gc_removes_by_upload_age(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = f"file://{shared}"
    tier = tier_for(remote)
    publish_now(tier, make_entry(tmp_path / "one"))
    obj = shared / tier.entry_object(NAME, KEY)
    code, out, _ = cli("gc", "--remote", remote, "--older-than", "30d")
    assert code == 0 and obj.exists() and "0 entries" in out
    old = time.time() - 31 * 86400
    os.utime(obj, (old, old))
    code, out, _ = cli("gc", "--remote", remote, "--older-than", "30d", "--dry-run")
    assert "would remove features/" in out and obj.exists()
    code, out, _ = cli("gc", "--remote", remote, "--older-than", "30d", "--key", "ff")
    assert code == 0 and obj.exists()  # another key prefix
    code, out, _ = cli("gc", "--remote", remote, "--older-than", "30d")
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
    code, out, _ = cli("push", "--remote", remote)
    assert code == 0 and "1 of 1 local entries pushed" in out
    (project / ".statecache" / NAME / f"{KEY}.sc").unlink()
    code, out, _ = cli("pull", "--remote", remote)
    assert code == 0 and f"pulled into {project / '.statecache'}" in out
    assert (project / ".statecache" / NAME / f"{KEY}.sc").exists()
    assert not (project / "src" / ".statecache").exists()


@pytest.mark.parametrize("argv", [
    ["ls", "--remote"], ["push"], ["pull", "features"], ["gc", "--remote", "--older-than", "30d"],
    ["remote", "ls"], ["remote", "push"],
])
def test_cli_without_a_remote_is_a_usage_error_saying_how_to_set_one(cli, monkeypatch, argv) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("STATECACHE_REMOTE", raising=False)
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert "no remote: give --remote URL or set STATECACHE_REMOTE (e.g. s3://" in err


@pytest.mark.parametrize("argv", [["ls", "--remote"], ["push"], ["pull"], ["gc", "--remote", "--older-than", "1d"]])
def test_cli_without_a_secret_says_why_it_is_needed(tmp_path: Path, cli, monkeypatch, argv) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STATECACHE_REMOTE", f"file://{tmp_path}")
    monkeypatch.delenv("STATECACHE_SECRET")
    code, _, err = cli(*argv)
    assert code == 2 and "needs STATECACHE_SECRET: entries are pickles, and loading a pickle runs code" in err


def test_ls_remote_alone_takes_statecache_remote_and_names(tmp_path: Path, cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``--remote`` alone is STATECACHE_REMOTE's remote; a NAME after it is a name, not a URL."""
    shared = tmp_path / "shared"
    shared.mkdir()
    publish_now(tier_for(f"file://{shared}"), make_entry(tmp_path / "one"))
    monkeypatch.setenv("STATECACHE_REMOTE", f"file://{shared}")
    code, out, _ = cli("ls", "--remote", "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)["entries"]] == [NAME]
    code, out, _ = cli("ls", "--remote", NAME)
    assert code == 0 and NAME in out and f"in file://{shared}" in out
    code, out, err = cli("ls", "--remote", "nothing-here")
    assert code == 1 and "nothing named 'nothing-here'" in err
    code, out, err = cli("ls", "--remote", f"file://{shared}", NAME, "other")  # one of two matched
    assert code == 1 and NAME in out and "nothing named 'other'" in err
    code, out, err = cli("ls", "--remote", "relative/dir")
    assert code == 2 and "--remote 'relative/dir' is not understood" in err


def test_the_first_spelling_statecache_remote_still_works(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = f"file://{shared}"
    one, two = tmp_path / "one", tmp_path / "two"
    path = make_entry(one)
    assert cli("remote", "push", "--dir", str(one), "--remote", remote)[:2] == (
        0, f"pushed {NAME}/{KEY[:12]} (2.3 MB)\n1 of 1 local entries pushed to {remote}\n")
    code, out, _ = cli("remote", "ls", "--json", "--remote", remote)
    assert code == 0 and [e["key"] for e in json.loads(out)["entries"]] == [KEY]
    assert cli("remote", "pull", "--dir", str(two), "--remote", remote)[0] == 0
    assert (two / NAME / f"{KEY}.sc").read_bytes() == path.read_bytes()
    code, out, _ = cli("remote", "gc", "--older-than", "0s", "--remote", remote)
    assert code == 0 and "removed features/" in out and not list(shared.rglob("*.sc"))
    code, _, err = cli("remote")
    assert code == 2 and "statecache remote ls|push|pull|gc" in err


def test_gc_refuses_options_of_the_other_cache(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("gc", "--remote", f"file://{tmp_path}", "--older-than", "1d", "--max-size", "1G")
    assert code == 2 and "gc --remote does not take --max-size" in err
    code, _, err = cli("gc", "--remote", f"file://{tmp_path}")
    assert code == 2 and "gc --remote needs --older-than AGE" in err
    make_entry(tmp_path / "cache")
    code, _, err = cli("gc", "--dir", str(tmp_path / "cache"), "--older-than", "30d")
    assert code == 2 and "gc --older-than: only with --remote" in err and "clear --older-than" in err
    assert (tmp_path / "cache" / NAME / f"{KEY}.sc").exists()


def test_help_names_the_remote_commands(cli) -> None:  # type: ignore[no-untyped-def]
    from statecache.cli.main import build_parser

    text = build_parser().format_help()
    assert "push" in text and "pull" in text and "with --remote" in text
    for command in ("ls", "gc", "push", "pull"):
        code, out, _ = cli(command, "--help")
        assert code == 0 and "--remote [URL]" in out


def test_key_ids_name_the_secret_without_revealing_it() -> None:
    from statecache.store.remote import key_id

    assert key_id(b"a") != key_id(b"b") and len(key_id(b"a")) == 16
    assert hashlib.sha256(b"a").hexdigest()[:16] != key_id(b"a")
