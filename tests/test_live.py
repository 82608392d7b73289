"""``statecache live``: a real controller in a pseudo-terminal, driven through edits of a script
and of a local module, with Ctrl-C, Enter, ``q``, SIGTERM, a closed terminal and a killed
controller; afterwards no process of the loop, and nothing in its temporary directory, may be
left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import live_helpers
from tests.conftest import REPO
from tests.live_helpers import (
    LIVE,
    TIMEOUT,
    env,
    idle,
    live_first_run,
    live_session,
    loop_processes,
    pexpect,
    plain_run,
    python,
    script_text,
    spawn,
    wait_gone,
    write,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="live mode needs fork")

# the fixtures: the project (a script and its module), and every loop's TMPDIR, left empty
project, live_tmpdir = live_helpers.project, live_helpers.live_tmpdir


def test_live_loop_through_edits(project: Path) -> None:
    script = project / "script.py"
    with live_session(project, "--alpha", "7") as child:
        # first run: everything, as __main__, with the arguments given
        child.expect(r"run 1 from the start")
        child.expect(r"argv \['--alpha', '7'\] __main__")
        child.expect("SETUP RAN")
        child.expect(r"tail v1 45 helper-1")
        idle(child)
        workers = [p.pid for p in loop_processes(project) if p.pid != child.pid]
        assert len(workers) >= 2, "the paused snapshots should be running"

        # edit the tail: resumes after the checkpoint; the setup is not run again
        write(script, script_text(tag="v2"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect(r"tail v2 45 helper-1")
        out = child.before
        assert "SETUP RAN" not in out and "argv" not in out
        idle(child)

        # edit the setup: it runs again
        write(script, script_text(n=20, tag="v2"))
        child.expect(r"run 3 from the snapshot after the imports")
        child.expect("SETUP RAN")
        child.expect(r"tail v2 190 helper-1")
        idle(child)

        # a comment-only edit runs nothing
        write(script, "# a comment\n" + script_text(n=20, tag="v2").replace("\n\n", "\n"))
        child.expect(r"no change in code \(comments or layout\)")

        # a syntax error is reported; the loop waits; the fix runs
        write(script, script_text(n=20, tag="v2", tail='print("tail" sum(data))'))
        child.expect("SyntaxError")
        child.expect("waiting for the next save")
        write(script, script_text(n=20, tag="v3"))
        child.expect(r"run 4 from the snapshot after checkpoint 'setup'")
        child.expect(r"tail v3 190 helper-1")
        idle(child)

        # an exception prints its traceback and keeps the loop; then a fix
        write(
            script, script_text(n=20, tag="v3", tail='raise ValueError("boom-" + str(len(data)))')
        )
        child.expect(r'File ".*script\.py", line 9, in <module>')
        child.expect(r"ValueError: boom-20")
        child.expect(r"run 5 ended \(error\)")
        idle(child)
        write(script, script_text(n=20, tag="v4"))
        child.expect(r"tail v4 190 helper-1")
        idle(child)

        # a changed local module is imported afresh: back to before its import
        write(project / "helper.py", 'VALUE = "helper-2"\n')
        child.expect(r"run 7 from the start \(helper\.py changed\)")
        child.expect(r"tail v4 190 helper-2")
        out = child.before
        assert "SETUP RAN" not in out, "the setup block is a disk-cache hit: not computed again"
        idle(child)

        # Enter re-runs from the last snapshot
        child.sendline("")
        child.expect(r"run 8 from the snapshot after checkpoint 'setup'")
        child.expect(r"tail v4 190 helper-2")
        idle(child)
        workers = [p.pid for p in loop_processes(project) if p.pid != child.pid]

        # q leaves, and takes every snapshot with it
    assert wait_gone(workers) == []
    assert loop_processes(project) == []


def test_ctrl_c_stops_the_run_then_quits(project: Path) -> None:
    write(
        project / "script.py",
        script_text(tail='print("LONG RUN", flush=True)\nimport time\ntime.sleep(600)'),
    )
    child = spawn(project)
    try:
        child.expect("LONG RUN")
        workers = [p.pid for p in loop_processes(project) if p.pid != child.pid]
        child.sendintr()
        child.expect(r"KeyboardInterrupt")
        child.expect(r"run 1 stopped[^\r\n]*\(Ctrl-C again to quit\)")
        # the loop is alive: an edit still runs
        write(project / "script.py", script_text(tag="after-stop"))
        child.expect("tail after-stop 45")
        idle(child)
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert wait_gone(workers) == []
    assert loop_processes(project) == []


@pytest.mark.parametrize("how", ["SIGTERM", "hangup", "SIGKILL"])
def test_no_process_left_when_the_controller_goes(project: Path, how: str) -> None:
    write(
        project / "script.py",
        script_text(tail='print("LONG RUN", flush=True)\nimport time\ntime.sleep(600)'),
    )
    child = spawn(project)
    child.expect("LONG RUN")
    workers = [p.pid for p in loop_processes(project) if p.pid != child.pid]
    assert len(workers) >= 3  # snapshots and the running run
    if how == "SIGTERM":
        os.kill(child.pid, signal.SIGTERM)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 128 + signal.SIGTERM
    elif how == "hangup":
        child.close(force=True)  # closes the terminal: SIGHUP
    else:
        os.kill(child.pid, signal.SIGKILL)
        child.close(force=True)
    # after SIGKILL the controller cannot reap: whoever adopts the workers does, so a
    # zombie in between is allowed there, a running process is not
    assert wait_gone(workers, allow_zombies=how == "SIGKILL") == []


def test_live_checkpoint_is_a_disk_hit_afterwards(project: Path) -> None:
    assert "SETUP RAN" in live_first_run(project)
    done = plain_run(project)
    assert "tail v1 45 helper-1" in done.stdout
    assert "SETUP RAN" not in done.stdout
    assert "'setup' restored" in done.stderr


def test_syntax_error_at_start_waits_for_a_fix(project: Path) -> None:
    write(project / "script.py", "print('x'\n")
    with live_session(project) as child:
        child.expect("SyntaxError")
        child.expect("waiting for the next save")
        write(project / "script.py", script_text(tag="fixed"))
        child.expect("tail fixed 45 helper-1")
        idle(child)


def test_python_dash_m_entry_point(project: Path) -> None:
    with live_session(project, command=("-m", "statecache.live")) as child:
        child.expect("tail v1 45 helper-1")
        idle(child)


def test_module_edit_of_comments_only_runs_nothing(project: Path) -> None:
    with live_session(project) as child:
        child.expect("tail v1 45 helper-1")
        idle(child)
        write(project / "helper.py", '# just a comment\nVALUE = "helper-1"  # same\n')
        child.expect(r"helper\.py: no change in code")
        write(project / "script.py", script_text(tag="later"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect("tail later 45 helper-1")
        idle(child)


FUNCS = """\
import statecache


def check(x):
    if x > 1:
        raise ValueError("x too big: " + str(x))
    return x


with statecache.checkpoint("setup"):
    data = [1, 2]
print("tail", check(data[0]))
"""


def test_tracebacks_point_at_moved_lines(project: Path) -> None:
    """A function defined before the snapshot, whose lines moved by a comment edit above it,
    reports its new line numbers when the re-run (resumed after it) fails inside it."""
    script = project / "script.py"
    write(script, FUNCS)
    with live_session(project) as child:
        child.expect("tail 1")
        idle(child)
        moved = "# one\n# two\n" + FUNCS
        write(script, moved)
        child.expect(r"no change in code")
        write(script, moved.replace("check(data[0])", "check(data[1])"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect(r"line (\d+), in check\r\n +([^\r\n]*)\r\n")  # (pexpect: DOTALL)
        # line 6 of FUNCS, two comment lines lower; the old line 6 holds 'return x'
        assert child.match.group(1) == "8", repr(child.after)
        assert child.match.group(2).startswith("raise ValueError"), repr(child.after)
        child.expect("ValueError: x too big: 2")
        idle(child)


def test_undoing_an_edit_resumes_from_the_old_snapshot(project: Path) -> None:
    script = project / "script.py"
    with live_session(project) as child:
        child.expect("tail v1 45 helper-1")
        idle(child)
        write(script, script_text(n=20))  # the setup changes: re-run from the imports
        child.expect(r"run 2 from the snapshot after the imports")
        child.expect("tail v1 190 helper-1")
        idle(child)
        write(script, script_text(n=10, tag="undone"))  # back to the first setup
        child.expect(r"run 3 from the snapshot after checkpoint 'setup'")
        child.expect("tail undone 45 helper-1")
        assert "SETUP RAN" not in child.before and "'setup'" not in child.before
        idle(child)


def test_snapshots_are_capped(project: Path) -> None:
    blocks = "".join(
        f'with statecache.checkpoint("c{i}"):\n    x{i} = {i}\nprint("block", {i})\n'
        for i in range(10)
    )
    write(project / "script.py", "import statecache\n" + blocks + 'print("END")\n')
    with live_session(project, options=("--max-snapshots", "4")) as child:
        child.expect("END")
        child.expect(r"watching script\.py; (\d+) snapshots")
        assert child.match.group(1) == "4"
        child.expect(r"Ctrl-C: stop/quit\)")
        # the start, the imports and the latest two checkpoints; the run itself has ended
        deadline = time.monotonic() + TIMEOUT
        while True:
            workers = [p for p in loop_processes(project) if p.pid != child.pid]
            if len(workers) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(workers) == 4
        # an edit of the tail resumes from the last block's snapshot
        write(project / "script.py", "import statecache\n" + blocks + 'print("END2")\n')
        child.expect(r"run 2 from the snapshot after checkpoint 'c9'")
        child.expect("END2")
        assert "block 9" in child.before and "block 8" not in child.before
        idle(child)


GATED = """\
import os
import time
import statecache

print("SETUP STARTED", flush=True)
with statecache.checkpoint("setup"):
    while not os.path.exists("gate"):   # a slow setup, as slow as the test wants
        time.sleep(0.01)
    data = [1, 2, 3]
    print("SETUP RAN")
print("tail", "TAG", sum(data))
"""


def test_an_edit_below_a_running_setup_lets_it_go_on(project: Path) -> None:
    script = project / "script.py"
    write(script, GATED.replace("TAG", "first"))
    with live_session(project) as child:
        child.expect("SETUP STARTED")
        write(script, GATED.replace("TAG", "second"))
        child.expect(r"edit at line 11, after the statement running now: run 1 will go on")
        (project / "gate").touch()
        child.expect(r"run 2: run 1 goes on with the edit")
        child.expect("tail second 6")
        out = child.before
        idle(child)
        assert "tail first" not in out
        assert "SETUP STARTED" not in out  # not started over
        # the edit of a statement that already ran still starts over from a snapshot
        write(script, GATED.replace("TAG", "third").replace("[1, 2, 3]", "[1, 2]"))
        child.expect(r"run 3 from the snapshot after the imports")
        child.expect("SETUP RAN")
        child.expect("tail third 3")
        idle(child)


def test_a_module_in_a_subpackage_is_watched(project: Path) -> None:
    pkg = project / "lib"
    pkg.mkdir()
    write(pkg / "__init__.py", "")
    write(pkg / "tools.py", "def value():\n    return 'tools-1'\n")
    write(
        project / "script.py",
        "import statecache\n"
        'with statecache.checkpoint("setup"):\n'
        "    base = 10\n"
        "from lib import tools\n"
        'print("tail", base, tools.value())\n',
    )
    with live_session(project) as child:
        child.expect("tail 10 tools-1")
        idle(child)
        write(pkg / "tools.py", "def value():\n    return 'tools-2'\n")
        # imported after the checkpoint: resumes from there and imports the new version
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect("tail 10 tools-2")
        idle(child)


def test_usage_errors(tmp_path: Path) -> None:
    for args, code, text in (
        ([], 2, "give the script to run"),
        (["--max-snapshots", "5"], 2, "give the script to run"),
        (["nope.py"], 2, "no such file"),
    ):
        done = python(tmp_path, *LIVE, *args)
        assert done.returncode == code, done.stderr
        assert text in done.stderr and "Traceback" not in done.stderr


def test_the_script_reads_the_terminal_during_a_run(project: Path) -> None:
    """The run holds the terminal like a foreground job: input() reads what is typed."""
    write(
        project / "script.py",
        script_text(tail='print("tail", input("name? ").upper(), sum(data))'),
    )
    with live_session(project) as child:
        child.expect("name\\? ")
        child.sendline("ada")
        child.expect("tail ADA 45")
        idle(child)
        child.sendline("")  # Enter: the loop has the terminal again, and re-runs
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect("name\\? ")
        child.sendline("grace")
        child.expect("tail GRACE 45")
        idle(child)


def test_breakpoint_steps_from_statement_to_statement(project: Path) -> None:
    write(
        project / "script.py",
        "import statecache\n"
        'with statecache.checkpoint("setup"):\n'
        "    x = 41\n"
        "breakpoint()\n"
        "y = x + 1\n"
        'print("after", y)\n',
    )
    with live_session(project) as child:
        child.expect(r"\(Pdb\) ")
        child.sendline("p x * 2")
        child.expect("82")
        stepped = ""
        # out of breakpoint()'s statement, into the next, over its line (3.13's pdb stops on the
        # breakpoint() line itself, earlier ones after it: step until past y's line)
        for _ in range(10):
            child.expect(r"\(Pdb\) ")
            stepped += child.before
            if '-> print("after", y)' in child.before:
                break
            child.sendline("n")
        assert "-> y = x + 1" in stepped and '-> print("after", y)' in stepped
        assert "statecache/" not in stepped  # never inside the loop's own code
        child.sendline("p y")
        child.expect("42")
        child.sendline("c")
        child.expect("after 42")
        idle(child)


def test_without_a_terminal_sigint_stops_the_run_then_quits(project: Path) -> None:
    """Input not a terminal (a pipe, /dev/null): the loop itself takes SIGINT and passes the
    first one on to the run; the script's input is /dev/null."""
    write(
        project / "script.py",
        script_text(
            tail='print("stdin says", repr(sys.stdin.read()))\n'
            'print("LONG RUN", flush=True)\nimport time\ntime.sleep(600)'
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, *LIVE, "script.py"],
        cwd=project,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []

    def read_until(text: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} never came:\n{''.join(seen)}")

    try:
        read_until("LONG RUN")
        workers = [p.pid for p in loop_processes(project) if p.pid != proc.pid]
        proc.send_signal(signal.SIGINT)
        read_until("run 1 stopped (Ctrl-C again to quit)")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    out = "".join(seen)
    assert "stdin says ''" in out
    assert "KeyboardInterrupt" in out
    assert proc.returncode == 0
    assert wait_gone(workers) == []


def test_without_watchfiles_saves_are_polled(project: Path) -> None:
    """The [live] extra missing: the loop still sees every save."""
    hide = project / "hide"
    (hide / "watchfiles").mkdir(parents=True)
    write(hide / "watchfiles" / "__init__.py", 'raise ImportError("not installed")\n')
    script = project / "script.py"
    with live_session(project, environ=env(PYTHONPATH=f"{hide}{os.pathsep}{REPO}")) as child:
        child.expect("tail v1 45 helper-1")
        idle(child)
        write(script, script_text(tag="polled"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect("tail polled 45 helper-1")
        idle(child)
        write(project / "helper.py", 'VALUE = "helper-2"\n')
        child.expect(r"run 3 from the start \(helper\.py changed\)")
        child.expect("tail polled 45 helper-2")
        idle(child)


def test_a_long_tmpdir_still_works(project: Path, live_tmpdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket path has a small limit (108 bytes on Linux): a TMPDIR longer than that is not
    where the loop's socket goes, and the loop runs anyway."""
    deep = live_tmpdir / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    with live_session(project) as child:
        child.expect("tail v1 45 helper-1")
        idle(child)
    assert list(deep.iterdir()) == []
    import shutil

    shutil.rmtree(live_tmpdir / ("d" * 60))
