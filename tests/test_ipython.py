"""The IPython terminal: an interactive session driven through a pseudo-terminal (pexpect), and
``ipython -c``, each started twice as a user would; a marker file counts the body's runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pexpect
from conftest import subprocess_env


class Session:
    """An interactive ``ipython`` in a pseudo-terminal; ``cell`` types one cell at the prompt."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None):
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "IPython", "--simple-prompt", "--no-banner", "--colors=nocolor", "--no-confirm-exit"],
            cwd=str(cwd),
            env=subprocess_env(**(env or {})),
            encoding="utf-8",
            timeout=120,
            dimensions=(50, 200),
        )
        self.transcript = ""
        self._prompt()

    def _prompt(self) -> str:
        self.child.expect(r"In \[\d+\]: ")
        out = self.child.before or ""
        self.transcript += out
        return out

    def cell(self, *lines: str) -> str:
        """Type a cell; returns what was shown up to the next prompt (echo included)."""
        for line in lines:
            self.child.sendline(line)
        if len(lines) > 1:
            self.child.sendline("")  # a blank line ends a multi-line cell
            if lines[0].startswith("%%"):
                self.child.sendline("")  # and a cell magic's body
        return self._prompt().replace("\r\n", "\n")

    def close(self) -> None:
        self.child.sendline("exit")
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0, self.transcript


def runs(marker: Path) -> int:
    return marker.read_text().count("ran") if marker.exists() else 0


def session(cwd: Path, factor: int = 1, env: dict[str, str] | None = None) -> dict[str, str]:
    """One interactive session: a helper cell, an input cell, a %%checkpoint cell, a reader."""
    s = Session(cwd, env)
    shown = {"load": s.cell("%load_ext statecache")}
    s.cell("def helper(x):", f"    return x + {factor}")
    s.cell("n = 2")
    shown["cell"] = s.cell(
        "%%checkpoint terminal",
        "open('marker', 'a').write('ran\\n')",
        "y = helper(n)",
        "print('computed', y)",
        "y * 2",
    )
    shown["after"] = s.cell("print('after', y)")
    shown["ls"] = s.cell("%statecache ls")
    s.close()
    return shown


def test_terminal_session_cell_magic(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    first = session(tmp_path)
    assert runs(marker) == 1
    assert "statecache: 'terminal' computing (not cached yet)" in first["cell"]
    assert "\ncomputed 3\n" in first["cell"] and "Out[4]: 6" in first["cell"]
    assert "\nafter 3\n" in first["after"]
    assert "terminal" in first["ls"] and "1 entry" in first["ls"]

    second = session(tmp_path)
    assert runs(marker) == 1, "the cell body ran again"
    assert "statecache: 'terminal' restored" in second["cell"]
    assert "\ncomputed 3\n" in second["cell"], "the printed output is replayed"
    assert "Out[4]: 6" in second["cell"], "the cell's value is shown again"
    assert "\nafter 3\n" in second["after"]

    third = session(tmp_path, factor=10)  # the helper cell changed
    assert runs(marker) == 2
    assert "input 'helper' changed" in third["cell"]
    assert "\nafter 12\n" in third["after"]

    quiet = session(tmp_path, factor=10, env={"STATECACHE_QUIET": "1"})
    assert runs(marker) == 2
    assert "statecache:" not in quiet["cell"] and "\ncomputed 12\n" in quiet["cell"]


def ipython_c(
    cwd: Path, code: str, *options: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", *options, "-c", code],
        cwd=cwd,
        env=subprocess_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc


def test_ipython_c_with_checkpoint_and_cached_setup(tmp_path: Path) -> None:
    code = """\
import statecache

def scale(x):
    return 3 * x

with statecache.checkpoint("block"):
    open("marker", "a").write("ran\\n")
    table = [scale(i) for i in range(3)]

@statecache.cached_setup
def load(n):
    open("marker", "a").write("ran\\n")
    return list(range(n))

print("result", table, load(2))
"""
    first = ipython_c(tmp_path, code)
    second = ipython_c(tmp_path, code)
    assert "result [0, 3, 6] [0, 1]" in first.stdout and "result [0, 3, 6] [0, 1]" in second.stdout
    assert runs(tmp_path / "marker") == 2, "each body ran once in all"
    assert "'block' restored" in second.stderr and "'load' restored" in second.stderr
    assert (tmp_path / ".statecache" / "block").is_dir()

    ipython_c(tmp_path, code.replace("3 * x", "4 * x"))
    assert runs(tmp_path / "marker") == 3, "a changed helper reruns the block, not the setup"


def test_ipython_ext_option_and_c(tmp_path: Path) -> None:
    code = "%%checkpoint oneshot\nopen('marker', 'a').write('ran\\n')\nz = 5\nprint('z is', z)\nz + 1"
    for _ in range(2):
        proc = ipython_c(tmp_path, code, "--ext", "statecache")
        assert "z is 5" in proc.stdout and "6" in proc.stdout
    assert runs(tmp_path / "marker") == 1
    assert "'oneshot' restored" in proc.stderr

    # STATECACHE_DISABLE=1: the cell runs, nothing is read or written
    proc = ipython_c(tmp_path, code.replace("oneshot", "off"), "--ext", "statecache", env={"STATECACHE_DISABLE": "1"})
    assert "z is 5" in proc.stdout and "statecache:" not in proc.stderr
    assert runs(tmp_path / "marker") == 2
    assert not (tmp_path / ".statecache" / "off").exists()


def test_nested_checkpoint_and_tracebacks(tmp_path: Path) -> None:
    nested = (
        "%%checkpoint outer\nimport statecache\nprint('outer body')\n"
        "with statecache.checkpoint('inner'):\n    q = 41\nr = q + 1\nr"
    )
    ipython_c(tmp_path, nested, "--ext", "statecache")
    again = ipython_c(tmp_path, nested, "--ext", "statecache")
    assert "outer body" in again.stdout and "42" in again.stdout
    status = [line for line in again.stderr.splitlines() if line.startswith("statecache:")]
    assert len(status) == 1 and "'outer' restored" in status[0], "inner's old lines not replayed"

    failing = "%%checkpoint err\nx = 1\n\n1/0"
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor", "--ext", "statecache", "-c", failing],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "ZeroDivisionError" in out
    assert "----> 4 1/0" in out, "the traceback shows the cell's own line numbers"
    assert "_ipython.py" not in out, "statecache's frames are hidden"
    assert not list((tmp_path / ".statecache").glob("err/*.sc"))


def test_unload_and_reload(tmp_path: Path) -> None:
    gone = ipython_c(tmp_path, "%load_ext statecache\n%unload_ext statecache\n%statecache ls", check=False)
    assert "Line magic function `%statecache` not found" in gone.stdout + gone.stderr
    back = ipython_c(tmp_path, "%load_ext statecache\n%reload_ext statecache\n%statecache")
    assert "%%checkpoint NAME" in back.stdout, "the magics are back, and bare %statecache shows usage"


def test_a_checkpoint_cell_replays_process_changes_and_reads_tested_variables(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mylib.py").write_text("VALUE = 7\n")
    code = """\
get_ipython().run_cell_magic("checkpoint", "cell", "import os, sys\\nsys.path.insert(0, os.path.abspath('lib'))\\nos.environ['MODE'] = 'eval'\\nfast = 'FAST' in os.environ\\nopen('marker', 'a').write('ran\\\\n')\\n")
import mylib, os
print("values", mylib.VALUE, os.environ.get("MODE"), fast)
"""
    first = ipython_c(tmp_path, code, "--ext", "statecache")
    second = ipython_c(tmp_path, code, "--ext", "statecache")
    assert "values 7 eval False" in first.stdout and second.stdout == first.stdout, second.stdout + second.stderr
    assert runs(tmp_path / "marker") == 1
    third = ipython_c(tmp_path, code, "--ext", "statecache", env={"FAST": "1"})
    assert "values 7 eval True" in third.stdout and runs(tmp_path / "marker") == 2


def test_statecache_magic_finds_the_cache_like_the_command_line(tmp_path: Path) -> None:
    # A project's cache one folder up from where IPython runs: %statecache finds it as
    # `statecache ls` does from there, instead of showing an empty cache beside the kernel.
    (tmp_path / "script.py").write_text(
        "import statecache as sc\nwith sc.checkpoint('upstairs'):\n    x = 1\n")
    subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=subprocess_env(), check=True,
                   capture_output=True, timeout=120)
    sub = tmp_path / "notebooks"
    sub.mkdir()
    shown = ipython_c(sub, "%load_ext statecache\n%statecache ls")
    assert "upstairs" in shown.stdout, shown.stdout + shown.stderr
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / ".statecache").mkdir()
    pinned = ipython_c(sub, "%load_ext statecache\n%statecache ls",
                       env={"STATECACHE_DIR": str(elsewhere / ".statecache")})
    assert "upstairs" not in pinned.stdout, pinned.stdout


def test_run_magic_with_other_arguments_is_not_a_stale_hit(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(
        "import argparse\n"
        "import statecache as sc\n"
        "with sc.checkpoint('a'):\n"
        "    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--n', type=int)\n"
        "    y = parser.parse_args().n * 2\n"
        "print('y', y)\n"
    )
    assert "y 2" in ipython_c(tmp_path, "%run script.py --n 1").stdout
    fresh = ipython_c(tmp_path, "%run script.py --n 2", env={"STATECACHE_DISABLE": "1"})
    assert "y 4" in fresh.stdout
    second = ipython_c(tmp_path, "%run script.py --n 2")
    assert second.stdout == fresh.stdout, second.stderr
