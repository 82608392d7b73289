"""``statecache live``: a snapshot's state depends on every data file its statements read,
inside a checkpoint or not (``cfg = json.load(open("cfg.json"))`` above a block). After such a
file is saved, the loop must not resume from a snapshot taken with the old content; while it is
unchanged, an edit further down still resumes from the snapshot after the block. Each live
value is compared with ``python script.py`` under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import live_helpers
from tests.live_helpers import env, idle, live_session, plain_run, write

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="live mode needs fork")

project, live_tmpdir = live_helpers.project, live_helpers.live_tmpdir

READERS = {
    # how the top level reads, the data before, the data after the save
    "open": ('n = json.load(open("cfg.json"))["n"]', ("cfg.json", '{"n": 1}\n'), ("cfg.json", '{"n": 2}\n')),
    "pathlib": ('n = len(pathlib.Path("words.txt").read_text().split())', ("words.txt", "a\n"), ("words.txt", "a b\n")),
    "a folder listing": ('n = len(os.listdir("data"))', ("data/one", "1"), ("data/two", "2")),
}
SCRIPT = """\
import json, os, pathlib
import statecache

{read}
with statecache.checkpoint("setup"):
    data = [n] * 3
print("data", data, "TAG")
"""


@pytest.mark.parametrize("reader", list(READERS))
def test_a_file_read_above_the_block_and_saved_since_is_read_again(project: Path, reader: str) -> None:
    read, (before, text), (after, new) = READERS[reader]
    write_in(project, before, text)
    script = SCRIPT.format(read=read)
    write(project / "script.py", script)
    with live_session(project) as child:
        child.expect(r"data \[1, 1, 1\] TAG")
        idle(child)
        write_in(project, after, new)
        write(project / "script.py", script.replace("TAG", "again"))
        child.expect(r"data (\[[^\]]*\]) again")
        live_data = child.match.group(1)
        idle(child)
    fresh = plain_run(project, environ=env(STATECACHE_DISABLE="1")).stdout
    assert "data [2, 2, 2] again" in fresh
    assert live_data == "[2, 2, 2]"


def test_an_unchanged_file_read_above_the_block_keeps_the_snapshot(project: Path) -> None:
    # the files the run read that are code (the script, its modules) or the cache's own do not
    # count: an edit of the tail resumes after the block
    write(project / "cfg.json", '{"n": 1}\n')
    script = SCRIPT.format(read='import helper\nn = json.load(open("cfg.json"))["n"]')
    write(project / "script.py", script)
    with live_session(project) as child:
        child.expect(r"data \[1, 1, 1\] TAG")
        idle(child)
        write(project / "script.py", script.replace("TAG", "again"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect(r"data \[1, 1, 1\] again")
        idle(child)


def write_in(project: Path, relpath: str, text: str) -> None:
    path = project / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, text)
