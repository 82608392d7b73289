"""``statecache live``: a real controller in a pseudo-terminal, driven through edits of a script
and of a local module, with Ctrl-C, Enter, ``q``, SIGTERM, a closed terminal and a killed
controller; afterwards no process of the loop may be left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
psutil = pytest.importorskip("psutil")
pytest.importorskip("watchfiles")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="live mode needs fork")

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # only against hangs; nothing here measures time

SCRIPT = """\
import sys
import helper
import statecache

print("argv", sys.argv[1:], __name__)
with statecache.checkpoint("setup"):
    print("SETUP RAN")
    data = list(range(N))
print("tail", TAG, sum(data), helper.VALUE)
"""


def script_text(n: int = 10, tag: str = "v1", tail: str | None = None) -> str:
    text = SCRIPT.replace("range(N)", f"range({n})").replace("TAG", repr(tag))
    if tail is not None:
        text = text.replace(f'print("tail", {tag!r}, sum(data), helper.VALUE)', tail)
    return text


def write(path: Path, text: str) -> None:
    path.write_text(text)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("STATECACHE_DIR", None)
    e.pop("STATECACHE_DISABLE", None)
    e.pop("STATECACHE_QUIET", None)
    e["PYTHONUNBUFFERED"] = "1"
    e["TERM"] = "dumb"
    return e


@pytest.fixture(autouse=True)
def live_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temporary directory of every loop a test starts: it must be left empty (no socket,
    no directory). Short, for the socket path's length limit."""
    import shutil
    import tempfile

    short = len(tempfile.gettempdir()) <= 40 or not os.path.isdir("/tmp")
    tmp = Path(tempfile.mkdtemp(prefix="sclt-", dir=None if short else "/tmp"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    try:
        yield tmp
        assert sorted(p.name for p in tmp.iterdir()) == [], "the loop left files behind"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "helper.py", 'VALUE = "helper-1"\n')
    write(tmp_path / "script.py", script_text())
    return tmp_path


def spawn(project: Path, *args: str, options: tuple[str, ...] = ()) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "statecache", "live", *options, "script.py", *args],
        cwd=str(project),
        env=env(),
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(50, 200),
    )
    return child


def loop_processes(project: Path) -> list[psutil.Process]:
    """Every process of a live loop on this project's script (controller and workers)."""
    marker = str(project / "script.py")
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if any(marker in part or part == "script.py" for part in cmd) and p.pid != os.getpid():
            try:
                if p.cwd() == str(project):
                    found.append(p)
            except psutil.Error:
                found.append(p)
    return found


def wait_gone(pids: list[int], allow_zombies: bool = False) -> list[int]:
    """Pids (of ``pids``) still present after a generous wait."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                if allow_zombies and p.status() == psutil.STATUS_ZOMBIE:
                    continue
                left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@contextlib.contextmanager
def live_session(project: Path, *args: str, options: tuple[str, ...] = ()) -> Iterator[pexpect.spawn]:
    """A `statecache live` session; when the block ends the loop is left with `q` and must
    exit cleanly (status 0), and the terminal is closed whatever happened."""
    child = spawn(project, *args, options=options)
    try:
        yield child
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def idle(child: pexpect.spawn) -> str:
    """Wait for the end of a run; return what the run printed."""
    child.expect(r"watching script\.py")
    child.expect(r"Ctrl-C: stop/quit\)")
    return child.before


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
    child = spawn(project)
    try:
        child.expect("SETUP RAN")
        idle(child)
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    done = subprocess.run(
        [sys.executable, "script.py"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
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
    child = pexpect.spawn(
        sys.executable,
        ["-m", "statecache.live", "script.py"],
        cwd=str(project),
        env=env(),
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    try:
        child.expect("tail v1 45 helper-1")
        idle(child)
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_module_edit_of_comments_only_runs_nothing(project: Path) -> None:
    child = spawn(project)
    try:
        child.expect("tail v1 45 helper-1")
        idle(child)
        write(project / "helper.py", '# just a comment\nVALUE = "helper-1"  # same\n')
        child.expect(r"helper\.py: no change in code")
        write(project / "script.py", script_text(tag="later"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect("tail later 45 helper-1")
        idle(child)
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


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
    child = spawn(project)
    try:
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
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


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
        done = subprocess.run(
            [sys.executable, "-m", "statecache", "live", *args],
            cwd=tmp_path,
            env=env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
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
        [sys.executable, "-m", "statecache", "live", "script.py"],
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


# -- parity with `python script.py` ------------------------------------------------------------

HELPER_SCRIPT = """\
import time
import statecache


def helper():
    time.sleep(0)
    return 42


with statecache.checkpoint("a"):
    y = helper()
print("y", y)
"""


def plain_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "script.py", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done


def keys_of(project: Path, name: str) -> list[str]:
    """The keys of the entries of checkpoint ``name``, from ``statecache ls --json``."""
    import json

    done = subprocess.run(
        [sys.executable, "-m", "statecache", "ls", "--json"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return sorted(e["key"] for e in json.loads(done.stdout)["entries"] if e["name"] == name)


def components(project: Path, name: str) -> dict[str, object]:
    """Key components of every entry of ``name``, by key (for the failure message)."""
    import json

    out = {}
    for key in keys_of(project, name):
        done = subprocess.run(
            [sys.executable, "-m", "statecache", "show", f"{name}/{key}", "--json"],
            cwd=project,
            env=env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        out[key] = json.loads(done.stdout).get("components") if done.returncode == 0 else None
    return out


def live_first_run(project: Path, *args: str) -> str:
    """One `statecache live` session that runs the script once; what it printed."""
    with live_session(project, *args) as child:
        child.expect(r"run 1 finished")
        out = child.before
        idle(child)
    return out


def test_a_live_run_and_a_plain_run_share_their_entries(project: Path) -> None:
    """`statecache live script.py` then `python script.py`: the same key, a hit. A helper that
    uses a module imported by another statement is compiled in another unit by live mode."""
    write(project / "script.py", HELPER_SCRIPT)
    live_out = live_first_run(project)
    assert "'a' computing" in live_out and "y 42" in live_out
    done = plain_run(project)
    assert "y 42" in done.stdout
    assert "'a' restored" in done.stderr, components(project, "a")
    assert len(keys_of(project, "a")) == 1


def test_a_plain_run_and_a_live_run_share_their_entries(project: Path) -> None:
    write(project / "script.py", HELPER_SCRIPT)
    done = plain_run(project)
    assert "'a' computing" in done.stderr
    live_out = live_first_run(project)
    assert "y 42" in live_out
    assert "'a' restored" in live_out, components(project, "a")
    assert len(keys_of(project, "a")) == 1


INTROSPECT = '''\
"""The docstring."""
import sys
import statecache


def f():
    return 1


"""a string statement: not a docstring"""
m = sys.modules["__main__"]
for what, value in [
    ("argv", sys.argv),
    ("path0", sys.path[0]),
    ("file", __file__),
    ("name", __name__),
    ("doc", __doc__),
    ("attrs", sorted(k for k in vars(m) if k.startswith("__"))),
    ("spec", m.__spec__),
    ("package", m.__package__),
    ("loader", (type(m.__loader__).__name__, m.__loader__.name, m.__loader__.path)),
    ("cached", m.__cached__),
    ("builtins", type(m.__builtins__).__name__),
    ("code", (f.__code__.co_filename, f.__code__.co_firstlineno, f.__module__)),
    ("frame", (sys._getframe().f_code.co_filename, sys._getframe().f_lineno)),
]:
    print("INFO", what, repr(value))
with statecache.checkpoint("reads"):
    seen = (sys.argv, __file__, __doc__, __name__, f())
print("INFO", "seen", repr(seen))
'''


def test_live_gives_the_script_what_python_gives_it(project: Path) -> None:
    """`__main__`, `sys.argv`, `sys.path[0]`, `__file__`, `__doc__`, code file names and line
    numbers are those of `python script.py`; so is the key of a block that reads them."""
    write(project / "script.py", INTROSPECT)
    live_out = live_first_run(project, "--n", "3")
    plain = plain_run(project, "--n", "3")
    info_live = [line for line in live_out.splitlines() if line.startswith("INFO")]
    info_plain = [line for line in plain.stdout.splitlines() if line.startswith("INFO")]
    assert len(info_plain) == 14
    assert info_live == info_plain
    assert "INFO doc 'The docstring.'" in info_plain
    assert "'reads' restored" in plain.stderr, components(project, "reads")


EDITS_ITSELF = """\
import os
import statecache

if not os.path.exists("edited"):
    # a save while this run goes on: two lines above, the same code
    text = open(__file__).read()
    open(__file__, "w").write("# one\\n# two\\n" + text)
    open("edited", "w").close()
with statecache.checkpoint("block"):
    value = "VALUE_ONE"
print("value", value)
"""


def test_the_run_reads_the_source_it_runs_not_a_newer_save(project: Path) -> None:
    """A save during a run (here: lines added above, the code the same, so the loop goes on)
    does not change what the run's checkpoint reads as its source: the text that runs."""
    write(project / "script.py", EDITS_ITSELF)
    with live_session(project) as child:
        child.expect(r"run 1 (finished|ended)[^\r\n]*")
        out = child.before + child.after
        idle(child)
    assert "value VALUE_ONE" in out and "'block' computing" in out, out
    assert "run 1 finished" in out, out
    done = plain_run(project)
    assert (project / "script.py").read_text().startswith("# one\n# two\n")
    assert "value VALUE_ONE" in done.stdout and "'block' restored" in done.stderr


def test_without_watchfiles_saves_are_polled(project: Path) -> None:
    """The [live] extra missing: the loop still sees every save."""
    hide = project / "hide"
    (hide / "watchfiles").mkdir(parents=True)
    write(hide / "watchfiles" / "__init__.py", 'raise ImportError("not installed")\n')
    script = project / "script.py"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "statecache", "live", "script.py"],
        cwd=str(project),
        env=env() | {"PYTHONPATH": f"{hide}{os.pathsep}{REPO}"},
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    try:
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
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


# -- in-process: plans and the watcher -----------------------------------------------------------


def test_plans_differ_exactly_where_the_code_does() -> None:
    import ast

    from statecache.key.astdigest import ast_digest
    from statecache.live.plan import make_plan, module_digest

    base = 'import os\nx = u"a"  # note\nwith checkpoint("c"):\n    y = 1\nprint(x, y)\n'
    plan = make_plan(base, "s.py")
    assert plan.points == {0: "the start", 1: "the imports", 3: "checkpoint 'c'"}
    assert plan.lines == {0: 1, 1: 2, 3: 5}
    # comments, blank lines, layout and the u prefix are not code
    same = 'import os\n\n# new comment\nx = "a"\nwith checkpoint( "c" ):\n    y = 1\nprint(x,y)\n'
    assert make_plan(same, "s.py").first_change(plan) is None
    # a change of meaning is found at its statement; the prefixes before it agree
    changed = make_plan(base.replace("y = 1", "y = 2"), "s.py")
    assert changed.first_change(plan) == 2
    assert changed.agrees_up_to(2, plan.prefix[2]) and not changed.agrees_up_to(3, plan.prefix[3])
    assert make_plan(base + "z = 3\n", "s.py").first_change(plan) == 4
    assert make_plan('"""doc"""\n' + base, "s.py").first_change(plan) == 0
    # a module's digest is the keys' digest of its tree
    assert module_digest("s.py", base) == ast_digest(ast.parse(base)).hex()
    assert module_digest("s.py", same) == module_digest("s.py", base)
    assert module_digest("s.py", "x = (") is None


def test_the_polling_watcher_reports_saves(tmp_path: Path) -> None:
    import select

    from statecache.live.watcher import CATCH_UP, Watcher

    f = tmp_path / "m.py"
    f.write_text("A = 1\n")
    w = Watcher([str(tmp_path)], polling=True)
    try:

        def next_batch() -> set[str]:
            assert select.select([w.fd], [], [], TIMEOUT)[0], "no report"
            return w.take()

        assert next_batch() == {CATCH_UP}  # watching now: catch up with earlier saves
        f.write_text("A = 22\n")
        assert str(f) in next_batch()
        os.unlink(f)
        assert str(f) in next_batch()
    finally:
        w.stop()


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


HANDLERS = """\
import signal
import statecache


def on_signal(signum, frame):
    pass


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)
with statecache.checkpoint("setup"):
    x = 1
handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT)]
names = [h.__name__ if callable(h) else h.name for h in handlers]
print("handlers", *names, "TAG")
"""


def test_signal_handlers_the_script_set_are_its_own_after_a_resume(project: Path) -> None:
    """A snapshot ignores signals while it waits; the runs it starts get the script's own
    handlers back, as they were when the snapshot was taken."""
    write(project / "script.py", HANDLERS)
    expected = "handlers on_signal on_signal SIG_DFL SIG_DFL"
    with live_session(project) as child:
        child.expect(f"{expected} TAG")
        idle(child)
        write(project / "script.py", HANDLERS.replace("TAG", "again"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect(r"handlers [^\r\n]* again")
        assert child.after.startswith(expected), child.after
        idle(child)
    assert expected in plain_run(project).stdout
