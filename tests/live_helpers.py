"""What the tests of ``statecache live`` share: a project (a script and a local module), the
environment and pseudo-terminal a loop runs in, its session, its processes, and plain runs of
the same script to compare with."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

pexpect = pytest.importorskip("pexpect")
psutil = pytest.importorskip("psutil")
pytest.importorskip("watchfiles")

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


def env(**extra: str) -> dict[str, str]:
    """The environment of every process of these tests: bytecode is written (as a user's
    ``python`` writes it, unless the environment says not to), so that a stale .pyc shows."""
    dont_write = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    return subprocess_env(
        PYTHONUNBUFFERED="1", TERM="dumb", PYTHONDONTWRITEBYTECODE=dont_write, **extra
    )


@pytest.fixture(autouse=True)
def live_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For the test modules that import it: the temporary directory of every loop a test
    starts, which must be left empty (no socket, no directory). Short, for the socket path's
    length limit."""
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
    """``script.py`` (SCRIPT) and the module ``helper.py`` it imports, in ``tmp_path``."""
    write(tmp_path / "helper.py", 'VALUE = "helper-1"\n')
    write(tmp_path / "script.py", script_text())
    return tmp_path


LIVE = ("-m", "statecache", "live")


def spawn(
    project: Path,
    *args: str,
    options: tuple[str, ...] = (),
    command: tuple[str, ...] = LIVE,
    environ: dict[str, str] | None = None,
) -> pexpect.spawn:
    """``python <command> <options> script.py <args>`` in a pseudo-terminal, in ``project``."""
    return pexpect.spawn(
        sys.executable,
        [*command, *options, "script.py", *args],
        cwd=str(project),
        env=env() if environ is None else environ,
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(50, 200),
    )


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
def live_session(
    project: Path,
    *args: str,
    options: tuple[str, ...] = (),
    command: tuple[str, ...] = LIVE,
    environ: dict[str, str] | None = None,
) -> Iterator[pexpect.spawn]:
    """A `statecache live` session (``spawn``'s arguments); when the block ends the loop is
    left with `q` and must exit cleanly (status 0), and the terminal is closed whatever
    happened."""
    child = spawn(project, *args, options=options, command=command, environ=environ)
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


def python(
    cwd: Path, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``cwd``, its output captured (its exit status not checked)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env() if environ is None else environ,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def plain_run(
    project: Path, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python script.py ARGS``, which must succeed."""
    done = python(project, "script.py", *args, environ=environ)
    assert done.returncode == 0, done.stderr
    return done


def keys_of(project: Path, name: str) -> list[str]:
    """The keys of the entries of checkpoint ``name``, from ``statecache ls --json``."""
    import json

    done = python(project, "-m", "statecache", "ls", "--json")
    assert done.returncode == 0, done.stderr
    return sorted(e["key"] for e in json.loads(done.stdout)["entries"] if e["name"] == name)


def components(project: Path, name: str) -> dict[str, object]:
    """Key components of every entry of ``name``, by key (for the failure message)."""
    import json

    out = {}
    for key in keys_of(project, name):
        done = python(project, "-m", "statecache", "show", f"{name}/{key}", "--json")
        out[key] = json.loads(done.stdout).get("components") if done.returncode == 0 else None
    return out


def live_first_run(project: Path, *args: str) -> str:
    """One `statecache live` session that runs the script once; what it printed."""
    with live_session(project, *args) as child:
        child.expect(r"run 1 finished")
        out = child.before
        idle(child)
    return out
