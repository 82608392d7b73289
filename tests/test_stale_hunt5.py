"""Red team, sixth pass (issue 11): stale hits and needless misses in what research scripts do
around the rules of the earlier passes: a ``latest`` link resolved before it is read, a
setting of the interpreter or of a library made above the block and read inside a library
call, an environment variable a library reads for the block, a library function swapped for
another, a module imported by name, a shared library loaded with ctypes, and a block that
imports a library which gives its logger a handler. Each hole is a strict xfail naming the
code that misses it and what a fix needs, so that the fix turns it into a failure asking for
the mark to go.

Every case is one checkpoint of a script shared with the other cases of its kind, run by a
module-scoped fixture in subprocesses against a cache under tmp_path (``run_cases``): it
computes, an unchanged rerun must hit (so a library that never caches cannot pass), one change
a user makes follows, and the next run must print what a fresh ``STATECACHE_DISABLE=1`` run
prints, and its rerun hit again. Each case's setting is put back after its block, so that a
fix of one case cannot make another case's block miss (and pass for the wrong reason)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Project
from test_stale_hunt3 import Outcome, assert_case, make_project, run_cases, xfail

__all__ = ["make_project"]  # the module-scoped fixture, imported for pytest to find here

# -- links, library internals, a module by name, a shared library: one script ----------------

READS_SCRIPT = """
import ctypes, importlib, json, os, warnings
from pathlib import Path
import numpy as np
import statecache as sc
import models.pre  # a registry scan or an earlier stage imported it
C = json.load(open('cases.json'))  # each case's setting, read above the blocks
with sc.checkpoint('resolve-a-latest-link'):  # runs/latest -> the newest run
    y = (Path('runs/latest').resolve() / 'm.txt').read_text()
print('resolve-a-latest-link=', y)
with sc.checkpoint('readlink'):
    y = open(os.path.join('runs', os.readlink('runs/latest'), 'm.txt')).read()
print('readlink=', y)
with sc.checkpoint('realpath-of-a-linked-file'):  # data.txt -> runs/rN/m.txt
    y = open(os.path.realpath('data.txt')).read()
print('realpath-of-a-linked-file=', y)
with warnings.catch_warnings():
    warnings.simplefilter(C['warnings'], RuntimeWarning)  # 'error': find where the -inf comes from
    with sc.checkpoint('warnings-filter-set-above'):
        try:
            y = np.log(np.zeros(1)).tolist()
        except RuntimeWarning:
            y = 'raised'
print('warnings-filter-set-above=', y)
mean = np.mean
np.mean = getattr(np, C['mean'])  # np.mean = np.median: an alias, a compatibility shim
with sc.checkpoint('library-function-swapped-above'):
    y = float(np.mean(np.array([1.0, 2.0, 6.0])))
print('library-function-swapped-above=', y)
np.mean = mean
del mean
frozen = np.zeros(2)
frozen.flags.writeable = C['writeable']  # np.load(mmap_mode='r'), a restored mmap, a view
with sc.checkpoint('read-only-input-written'):
    try:
        frozen[0] = 1
        y = 'wrote'
    except ValueError:
        y = 'read-only'
print('read-only-input-written=', y)
with sc.checkpoint('import-module-by-name-imported-above'):  # models.<cfg.model>
    y = importlib.import_module('models.pre').build()
print('import-module-by-name-imported-above=', y)
with sc.checkpoint('environ-read-inside-joblib'):  # n_jobs from the user's core budget
    import joblib
    y = joblib.cpu_count()  # LOKY_MAX_CPU_COUNT
print('environ-read-inside-joblib=', y)
with sc.checkpoint('environ-read-inside-pydantic-settings'):
    try:
        from pydantic_settings import BaseSettings
    except ImportError:
        y = 'absent'
    else:
        class Settings(BaseSettings):
            lr: float = 0.1  # LR=0.2 python train.py
        y = Settings().lr
        del BaseSettings, Settings
print('environ-read-inside-pydantic-settings=', y)
with sc.checkpoint('shared-library-loaded-in-block'):  # a C kernel of the project, rebuilt
    y = ctypes.CDLL('./libops.so').f(3) if os.path.exists('libops.so') else 'no compiler'
print('shared-library-loaded-in-block=', y)
"""

LINKS = (
    "key/readers.py install wraps os.stat and os.access but not os.readlink, which "
    "os.path.realpath and Path.resolve() call (posixpath._joinrealpath: os.lstat, os.readlink); "
    "the file opened is then recorded by its resolved path, which a re-pointed link leaves "
    "unchanged, so the block restores the old run's file: a fix records the link's target as "
    "a look (key/looks.py), compared again at lookup")
READS_CASES = {
    "resolve-a-latest-link": LINKS + " (Path('runs/latest').resolve())",
    "readlink": LINKS + " (os.readlink, called by the block itself)",
    "realpath-of-a-linked-file": LINKS + " (os.path.realpath of a link to a file)",
    "warnings-filter-set-above": (
        "key/libsettings.py REGISTRIES: the warnings filters (warnings.filters, which "
        "warnings.warn reads inside numpy and every library) count for no block; _registries.py "
        "replays the filters a block sets, but a filter set above it ('error' to find a -inf) "
        "is no input, so the hit restores the value a run that raises never computes: a fix "
        "counts the filters that differ from the interpreter's start-up list"),
    "library-function-swapped-above": (
        "key/codegraph.py _function_globals -> library_attribute: an attribute of an installed "
        "module counts by value only when it is plain data or the user's code; np.mean = "
        "np.median holds the library's own code, taken as the version's, so the block keyed "
        "on 'np.mean' is the same whichever function the name holds: a fix counts an attribute "
        "whose value is not what the module defines under that name (its __module__/__qualname__)"),
    "read-only-input-written": (
        "key/values.py _feed_array: an array counts by dtype, shape, strides and bytes, not by "
        "its writeable flag; a block that writes to an input that is read-only now (np.load "
        "with mmap_mode='r') raises in a fresh run, but the hit restores the write: a fix feeds "
        "flags.writeable"),
    "import-module-by-name-imported-above": (
        "key/importwatch.py: a module the block imports by name (importlib.import_module) is "
        "keyed by its code only when the import loads it during the block; one an earlier "
        "statement imported is returned from sys.modules, no import is seen, and an edit of it "
        "restores the old result (the same block keys it when the module was not loaded "
        "before): a fix records a module import_module returns as a module the block read"),
    "environ-read-inside-joblib": (
        "key/process.py scan/stdlib_reads: environment variables count where the block's or a "
        "helper's AST names them, or a stdlib call is known to read them; an installed "
        "library's own os.environ read during the block (joblib.cpu_count reading "
        "LOKY_MAX_CPU_COUNT) is no input: a fix records the os.environ keys read while the "
        "block records (os._Environ.__getitem__/get/__iter__), as it records files"),
    "environ-read-inside-pydantic-settings": (
        "key/process.py scan/stdlib_reads, as environ-read-inside-joblib: pydantic-settings' "
        "BaseSettings() made in the block iterates os.environ inside the library, so LR=0.2 "
        "restores lr=0.1 (README names only such reads at a module's import)"),
    "shared-library-loaded-in-block": (
        "key/files.py: ctypes.CDLL opens the .so with dlopen, past Python's open; the "
        "'ctypes.dlopen' audit event names it, but no hook records it as a read, so a rebuilt "
        "library of the project's C kernel restores the old result, with no warning: a fix "
        "records the dlopen'd path as a file the block read"),
}


def build_library(root: Path, factor: int) -> None:
    """libops.so with ``f(x) = x * factor``, when a C compiler is here."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return
    (root / "ops.c").write_text(f"int f(int x) {{ return x * {factor}; }}\n")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(root / "libops.so"), str(root / "ops.c")], check=True)


def write_reads_case_data(root: Path, version: int) -> None:
    """v1: runs/latest -> r1, the settings of a first run; v2: the link moved, each setting
    changed, models/pre.py edited and the library rebuilt."""
    for run in ("r1", "r2"):
        (root / "runs" / run).mkdir(parents=True, exist_ok=True)
        (root / "runs" / run / "m.txt").write_text(run)
    for link, target in ((root / "runs" / "latest", f"r{version}"), (root / "data.txt", f"runs/r{version}/m.txt")):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    settings = {"warnings": "default", "mean": "mean", "writeable": True} if version == 1 else \
        {"warnings": "error", "mean": "median", "writeable": False}
    (root / "cases.json").write_text(json.dumps(settings))
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "pre.py").write_text(f"def build():\n    return 'pre{version}'\n")
    build_library(root, 2 if version == 1 else 5)


READS_ENV = ({"LR": "0.3", "LOKY_MAX_CPU_COUNT": "1"}, {"LR": "0.2", "LOKY_MAX_CPU_COUNT": "2"})


@pytest.fixture(scope="module")
def reads_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    pytest.importorskip("joblib")
    project = make_project("reads")
    project.write("script.py", READS_SCRIPT)
    write_reads_case_data(project.root, 1)
    return run_cases(project, "script.py", list(READS_CASES), lambda: write_reads_case_data(project.root, 2),
                     env=READS_ENV[0], env_after=READS_ENV[1])


@pytest.mark.skipif(os.name == "nt", reason="symbolic links and a C compiler as on POSIX")
@pytest.mark.parametrize("case", [xfail(case, reason) for case, reason in READS_CASES.items()])
def test_what_a_block_reads_through_links_libraries_and_the_interpreter(reads_outcomes: dict[str, Outcome],
                                                                        case: str) -> None:
    if case == "environ-read-inside-joblib" and (os.cpu_count() or 1) < 2:
        pytest.skip("LOKY_MAX_CPU_COUNT=1 and =2 give the same count on one core")
    if case == "environ-read-inside-pydantic-settings" and importlib.util.find_spec("pydantic_settings") is None:
        pytest.skip("pydantic-settings is not installed")
    if case == "shared-library-loaded-in-block" and not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler to build the library")
    assert_case(reads_outcomes, case)
