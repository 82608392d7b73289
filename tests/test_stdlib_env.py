"""Environment variables read inside the standard library (``Path.home()``, ``expanduser``,
``getpass.getuser()``, ``tempfile.gettempdir()``, ``expandvars``, ``shutil.which``) and the local
timezone are inputs of the block or helper that calls them (``key.process.stdlib_reads``), by
the same rule as ``os.environ.get('X')``: one script, one checkpoint per case, run under one
environment and then with one variable changed at a time; exactly the cases that read it
recompute, and each prints what the new environment gives."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from conftest import Project

from statecache.key.process import scan

HELPERS = """
import getpass, shutil
from pathlib import Path

def home_runs():
    return str(Path.home() / 'runs')

def tool():
    return shutil.which('mytool')

def user():
    return getpass.getuser()
"""

SCRIPT = """
import datetime, getpass, os, shutil, tempfile
from pathlib import Path
import statecache as sc
import helpers
TEMPLATE = '${DATA_DIR}' + '/v.txt'
with sc.checkpoint('home'):
    y = str(Path.home() / 'runs')
print('home=', y)
with sc.checkpoint('expanduser'):
    y = os.path.expanduser('~/runs')
print('expanduser=', y)
with sc.checkpoint('expanduser-absolute'):
    y = os.path.expanduser('/srv/runs')
print('expanduser-absolute=', y)
with sc.checkpoint('getuser'):
    y = getpass.getuser()
print('getuser=', y)
with sc.checkpoint('gettempdir'):
    y = tempfile.gettempdir()
print('gettempdir=', y)
with sc.checkpoint('which'):
    y = shutil.which('mytool')
print('which=', y)
with sc.checkpoint('expandvars'):
    with open(os.path.expandvars('$DATA_DIR/v.txt')) as f:
        y = f.read()
    del f
print('expandvars=', y)
with sc.checkpoint('expandvars-computed'):
    with open(os.path.expandvars(TEMPLATE)) as f:
        y = f.read()
    del f
print('expandvars-computed=', y)
with sc.checkpoint('helper-home'):
    y = helpers.home_runs()
print('helper-home=', y)
with sc.checkpoint('helper-which'):
    y = helpers.tool()
print('helper-which=', y)
with sc.checkpoint('helper-user'):
    y = helpers.user()
print('helper-user=', y)
with sc.checkpoint('local-hour'):
    y = datetime.datetime.fromtimestamp(1_700_000_000).hour
print('local-hour=', y)
with sc.checkpoint('plain'):
    y = 6 * 7
print('plain=', y)
"""

CASES = ["home", "expanduser", "expanduser-absolute", "getuser", "gettempdir", "which", "expandvars",
         "expandvars-computed", "helper-home", "helper-which", "helper-user", "local-hour", "plain"]


def user_env(project: Project, name: str) -> dict[str, str]:
    """A user's environment: a home, a temp dir, a data dir and a tool on PATH of their own."""
    root = project.root / name
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    project.write(f"{name}/data/v.txt", name)
    project.write(f"{name}/bin/mytool", "#!/bin/sh\n").chmod(0o755)
    return {"HOME": str(root), "USER": name, "LOGNAME": name, "TMPDIR": str(root / "tmp"),
            "DATA_DIR": str(root / "data"), "TZ": "UTC0",
            "PATH": os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")])}


def expected(env: dict[str, str]) -> dict[str, str]:
    """What a fresh run prints under ``env``."""
    home, tool, data = str(Path(env["HOME"]) / "runs"), str(Path(env["PATH"].split(os.pathsep)[0]) / "mytool"), \
        Path(env["DATA_DIR"], "v.txt").read_text()
    hour = {"UTC0": 22, "JST-9": 7}[env["TZ"]]  # 1_700_000_000 is 22:13 UTC
    return {"home": home, "expanduser": home, "expanduser-absolute": "/srv/runs", "getuser": env["LOGNAME"],
            "gettempdir": env["TMPDIR"], "which": tool, "expandvars": data, "expandvars-computed": data,
            "helper-home": home, "helper-which": tool, "helper-user": env["LOGNAME"], "local-hour": str(hour),
            "plain": "42"}


def printed(stdout: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split("=", 1) for line in stdout.splitlines() if "=" in line)}


@pytest.mark.skipif(os.name == "nt", reason="POSIX home, PATH and TZ rules")
def test_each_block_recomputes_when_a_variable_it_reads_inside_the_stdlib_changes(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", SCRIPT)
    env = user_env(project, "alice")
    first = project.run("script.py", env=env)
    assert [c for c in CASES if not first.computed(c)] == []
    assert printed(first.stdout) == expected(env)
    again = project.run("script.py", env=env)
    assert [c for c in CASES if not again.hit(c)] == [], again.stderr
    bob = user_env(project, "bob")
    # each step changes one variable of the last one's environment; expandvars-computed reads
    # a computed name, so the whole environment, and recomputes at every step
    steps = [
        (("HOME",), {"home", "expanduser", "helper-home"}),
        (("USER", "LOGNAME"), {"getuser", "helper-user"}),
        (("TMPDIR",), {"gettempdir"}),
        (("PATH",), {"which", "helper-which"}),
        (("DATA_DIR",), {"expandvars"}),
    ]
    for variable, recompute in steps:
        env = {**env, **{v: bob[v] for v in variable}}
        run = project.run("script.py", env=env)
        computed = {c for c in CASES if run.computed(c)}
        assert computed == recompute | {"expandvars-computed"}, f"{variable} changed:\n{run.stderr}"
        assert {c for c in CASES if run.hit(c)} == set(CASES) - computed
        assert printed(run.stdout) == expected(env), variable
    env = {**env, "TZ": "JST-9"}
    run = project.run("script.py", env=env)
    assert {c for c in CASES if run.computed(c)} == {"local-hour", "expandvars-computed"}, run.stderr
    assert printed(run.stdout) == expected(env)
    fresh = project.run("script.py", env={**env, "STATECACHE_DISABLE": "1"})
    assert printed(fresh.stdout) == expected(env)


@pytest.mark.parametrize(("code", "keys", "kinds"), [
    ("Path.home()", ("HOME",), ()),
    ("Path('~/x').expanduser()", ("HOME",), ()),
    ("os.path.expanduser(p)", ("HOME",), ()),
    ("os.path.expanduser('~bob/x')", ("HOME",), ()),
    ("os.path.expanduser('data/x')", (), ()),
    ("getpass.getuser()", ("LOGNAME", "USER", "LNAME", "USERNAME"), ()),
    ("tempfile.gettempdir()", ("TMPDIR", "TEMP", "TMP"), ()),
    ("tempfile.mkdtemp()", ("TMPDIR", "TEMP", "TMP"), ()),
    ("tempfile.mkdtemp(dir='scratch')", (), ()),
    ("shutil.which('tool')", ("PATH",), ()),
    ("shutil.which('tool', path='/opt/bin')", (), ()),
    ("os.path.expandvars('$A/${B}/$A')", ("A", "B"), ()),
    ("os.path.expandvars('plain')", (), ()),
    ("os.path.expandvars(template)", (), ("environ",)),
    ("os.environ.get('X'); Path.home()", ("X", "HOME"), ()),
    ("time.localtime()", ("TZ",), ("timezone",)),
    ("datetime.fromtimestamp(t)", ("TZ",), ("timezone",)),
    ("datetime.fromtimestamp(t, UTC)", (), ()),
    ("datetime.now(tz=UTC)", (), ()),
    ("dt.astimezone()", ("TZ",), ("timezone",)),
])
@pytest.mark.skipif(os.name == "nt", reason="POSIX variable names")
def test_the_scan_maps_each_stdlib_call_to_the_variables_it_reads(code: str, keys: tuple[str, ...],
                                                                   kinds: tuple[str, ...]) -> None:
    assert scan([ast.parse(code)]) == (keys, kinds)
