"""Red team, third pass: stale hits and wrong restores in the rules this session added (files a
block writes are outputs, library settings, memo reads, the import watch, the save and restore
paths). Each hole is a strict xfail naming the code that does not see it, so that the fix turns
the xfail into a failure asking for the mark to go. Every case runs a real script in
subprocesses against a cache under tmp_path, checks that an unchanged rerun hits (so a library
that never caches cannot pass), makes one change a user makes, and compares the next run with a
fresh run under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import pytest
from conftest import Project
from test_redteam import HEAD, assert_recomputes, first
from test_stale_hunt import hits_unchanged

# -- a file the block writes is its output: but only when what it read back is its own ------


@pytest.mark.xfail(strict=True, reason=(
    "key/files.py _makes_new_content: an open with 'x' (or O_CREAT|O_EXCL) counts as making "
    "the file even when it exists, where the open fails with FileExistsError and writes "
    "nothing; the block then reads the user's file, which is left out of the key as an output"))
@pytest.mark.parametrize("make", [
    "try:\n        with open('config.txt', 'x') as f:\n            f.write('3')\n    except FileExistsError:\n        pass",
    "try:\n        os.close(os.open('config.txt', os.O_WRONLY | os.O_CREAT | os.O_EXCL))\n"
    "    except FileExistsError:\n        pass",
])
def test_a_config_created_exclusively_when_missing_then_edited(project: Project, make: str) -> None:
    project.write("config.txt", "3")  # exists before every run: the exclusive open fails
    project.write("script.py", HEAD + f"""
with sc.checkpoint('a'):
    {make}
    y = open('config.txt').read()
print(y)
""")
    hits_unchanged(project, "script.py")
    project.write("config.txt", "8")
    assert_recomputes(project, "script.py")


@pytest.mark.xfail(strict=True, reason=(
    "key/files.py _makes_new_content: an append where the file was missing counts it as an "
    "output, and the record does not say it was missing; the next run finds the file the first "
    "run left, where the block would read both runs' lines, and hits the first run's count"))
def test_a_log_the_block_appends_to_and_reads_back(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    with open('runs.log', 'a') as f:
        f.write('run\\n')
    y = open('runs.log').read().count('run')
print(y)
""")
    first(project, "script.py")
    project.write("runs.log", "run\nrun\nrun\n")  # the user runs another script that logs here
    assert_recomputes(project, "script.py")
