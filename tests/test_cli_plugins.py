"""Subcommands that other modules add to ``statecache`` (``live``): registered from the module's
``add_parser(subparsers)`` and run through its ``run(args)``; a broken one never breaks the rest."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from statecache.cli import main as _cli

GOOD = """
import argparse

def add_parser(subparsers):
    p = subparsers.add_parser("hello", help="say hello to SCRIPT")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p

def run(args):
    print("hello", args.script, args.args)
    return 3
"""


def test_a_plugin_module_adds_a_subcommand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sc_plugin_good.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_cli.PLUGINS, "hello", "sc_plugin_good")
    assert _cli.main(["hello", "train.py", "--lr", "0.1"]) == 3
    assert capsys.readouterr().out == "hello train.py ['--lr', '0.1']\n"
    assert _cli.main(["hello"]) == 2  # its usage errors are the CLI's: one line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("statecache: error: the following arguments are required: script")
    assert len(err.strip().splitlines()) == 1


def test_an_absent_plugin_is_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(_cli.PLUGINS, "nothere", "statecache._no_such_module")
    assert _cli.main(["nothere"]) == 2
    assert "invalid choice: 'nothere'" in capsys.readouterr().err


def test_a_broken_plugin_does_not_break_the_other_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sc_plugin_broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_cli.PLUGINS, "broken", "sc_plugin_broken")
    assert _cli.main(["ls", "--dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    assert _cli.main(["broken", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("statecache: error: the 'broken' command is unavailable:")
    assert "no_such_dependency_xyz" in err


def test_build_parser_lists_plugins_in_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sc_plugin_good.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_cli.PLUGINS, "hello", "sc_plugin_good")
    parser = _cli.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    assert "say hello to SCRIPT" in parser.format_help()
