"""Files a block writes and reads back are its outputs, not inputs; files it reads before it
writes them, or appends to, are inputs. Directory listings: the import system's scans of the
script's folder are not data, a library's listing of it is. Real scripts in subprocesses, run
twice or more, compared with a fresh run under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Project
from test_redteam import FAKELIB, HEAD, USES_FAKELIB, assert_recomputes, first, fresh

# each makes out.txt anew inside the block, then reads it back
FRESH_OUTPUTS = {
    "open-w": "with open('out.txt', 'w') as f:\n        f.write('x')",
    "open-x": "with open('out.txt', 'x') as f:\n        f.write('x')",
    "append-to-new": "with open('out.txt', 'a') as f:\n        f.write('x')",
    "pathlib-write_text": "import pathlib\n    pathlib.Path('out.txt').write_text('x')",
    "os-open-trunc": (
        "fd = os.open('out.txt', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n    os.write(fd, b'x')\n    os.close(fd)"
    ),
    "numpy-savetxt": "import numpy as np\n    np.savetxt('out.txt', [1])",
}


@pytest.mark.parametrize("make", list(FRESH_OUTPUTS))
def test_a_block_reading_back_what_it_wrote_hits_after_the_script_removes_it(project: Project, make: str) -> None:
    project.write("script.py", HEAD + f"""
if os.path.exists("out.txt"):
    os.remove("out.txt")
with sc.checkpoint('a'):
    {FRESH_OUTPUTS[make]}
    y = len(open('out.txt', 'rb').read()), os.path.exists('out.txt')
print(y)
""")
    computed = first(project, "script.py")
    hit = project.run("script.py")
    assert hit.hit("a") and hit.stdout == computed.stdout == fresh(project, "script.py"), hit.stderr


def test_an_input_appended_to_by_the_block_is_still_an_input(project: Project) -> None:
    project.write("log.txt", "a\n")
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    with open('log.txt', 'a') as f:
        f.write('')
    y = open('log.txt').read().split()
print(y)
""")
    first(project, "script.py")
    assert project.run("script.py").hit("a")
    project.write("log.txt", "a\nb\n")
    assert_recomputes(project, "script.py")


def test_a_file_read_before_the_block_rewrites_it_is_an_input(project: Project) -> None:
    # read first, then rewritten with what was read: an input that the block leaves unchanged
    project.write("state.txt", "1")
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    y = open('state.txt').read()
    with open('state.txt', 'w') as f:
        f.write(y)
print(y)
""")
    first(project, "script.py")
    project.write("state.txt", "2")
    second = project.run("script.py")
    assert not second.hit("a") and second.stdout == fresh(project, "script.py") == "2\n", second.stderr


def test_the_recorder_tells_outputs_from_inputs(tmp_path: Path) -> None:
    from statecache.key.files import FileRecorder

    old, new, kept = tmp_path / "old.txt", tmp_path / "new.txt", tmp_path / "kept.txt"
    old.write_text("o")
    kept.write_text("k")
    with FileRecorder() as recorder:
        old.read_text()
        old.write_text("o")  # read first: stays an input
        new.write_text("n")
        new.read_text()  # made by the block: an output
        with open(kept, "a") as f:  # an append to an existing file keeps its content
            f.write("")
        kept.read_text()
        os.close(os.open(tmp_path / "made", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        os.path.exists(tmp_path / "made")
    assert set(recorder.opened) == {str(old), str(kept)}
    assert {str(new), str(tmp_path / "made")} <= set(recorder.written)


# -- listings of the script's own folder -----------------------------------------------------


@pytest.mark.parametrize("folder", [".", "sys.path[0]"])
def test_a_library_listing_the_scripts_folder_sees_a_new_file(project: Project, folder: str) -> None:
    project.write("vendor/site-packages/fakelib.py", FAKELIB)
    project.write("a.txt", "A")
    script = USES_FAKELIB.format(folder=folder)
    project.write("script.py", script.replace("'sys.path[0]'", "sys.path[0]"))
    first(project, "script.py")
    assert project.run("script.py").hit("a")
    project.write("b.txt", "B")
    assert_recomputes(project, "script.py")


def test_the_import_systems_scans_of_the_scripts_folder_are_no_data(project: Project) -> None:
    # importing a module from the script's folder and asking importlib.metadata for the
    # distributions both list sys.path[0]; a new file beside the script changes neither
    project.write("helpers.py", "def f():\n    return 1\n")
    project.write("script.py", HEAD + """
import importlib.metadata
with sc.checkpoint('a'):
    import helpers
    y = helpers.f(), len([d for d in importlib.metadata.distributions() if d.metadata['Name'] == 'nope'])
print(y)
""")
    first(project, "script.py")
    project.write("notes.txt", "new")
    again = project.run("script.py")
    assert again.hit("a") and again.stdout == fresh(project, "script.py"), again.stderr


# each looks for a file the first run does not find, then leaves one there
ABSENT_THEN_MADE = {
    "read-if-there": "try:\n        y = open('seen.txt').read()\n    except FileNotFoundError:\n        y = 'none'\n"
                     "    with open('seen.txt', 'w') as f:\n        f.write('made')",
    "append-to-new": "with open('seen.txt', 'a') as f:\n        f.write('made')\n    y = open('seen.txt').read()",
    "exclusive-new": "try:\n        with open('seen.txt', 'x') as f:\n            f.write('made')\n    except FileExistsError:\n"
                     "        pass\n    y = open('seen.txt').read()",
    "os-open-creat": "fd = os.open('seen.txt', os.O_RDWR | os.O_CREAT)\n    os.write(fd, b'made')\n    os.close(fd)\n"
                     "    y = open('seen.txt').read()",
}


@pytest.mark.parametrize("body", list(ABSENT_THEN_MADE))
def test_a_file_missing_when_the_block_first_opened_it_is_an_input_of_its_absence(project: Project, body: str) -> None:
    """The first run found no file (a failed read, or a create where nothing was); a later run
    that finds one there, left by that run or put by the user, must compute, not restore what
    the absence gave. Once the script removes the file first, the rerun hits."""
    script = HEAD + f"""
with sc.checkpoint('a'):
    {ABSENT_THEN_MADE[body]}
print(y)
"""
    project.write("script.py", script)
    first(project, "script.py")
    again = project.run("script.py")  # the file the first run left is there now
    assert not again.hit("a"), again.stderr  # a hit would give what the absence gave
    os.remove(project.root / "seen.txt")
    project.write("script.py", HEAD + "if os.path.exists('seen.txt'):\n    os.remove('seen.txt')\n" + script[len(HEAD):])
    first(project, "script.py")
    hit = project.run("script.py")
    assert hit.hit("a") and hit.stdout == fresh(project, "script.py"), hit.stderr


def test_a_log_the_block_only_appends_to_is_no_input(project: Project) -> None:
    """A block that logs by appending to a file it never reads (made by its first run) hits on
    the next run: the log's absence or content is no input of what it computed."""
    project.write("script.py", HEAD + """
with sc.checkpoint('a'):
    with open('train.log', 'a') as f:
        f.write('step\\n')
    fd = os.open('events.log', os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, b'e\\n')
    os.close(fd)
    y = 42
print(y)
""")
    first(project, "script.py")
    again = project.run("script.py")
    assert again.hit("a") and again.stdout == "42\n", again.stderr
