"""Red team, sixth pass (issue 11): stale hits and needless misses in what research scripts do
around the rules of the earlier passes: a ``latest`` link resolved before it is read, a
setting of the interpreter, of the warnings module or of torch made above the block and read
inside a library call, an environment variable a library reads for the block, a library
function swapped for another, a module imported by name, a shared library loaded with ctypes,
a scratch folder or file the block or a helper makes and removes, and file names sent to
loky workers inside a string buffer. Each hole is a strict xfail naming the code that misses
it and what a fix needs, so that the fix turns it into a failure asking for the mark to go.

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
import ctypes, importlib, json, os, shutil, tempfile, warnings
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
    try:
        import joblib
    except ImportError:
        y = 'absent'
    else:
        y = joblib.cpu_count()  # LOKY_MAX_CPU_COUNT
        del joblib
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
with sc.checkpoint('temporary-directory-in-block'):  # a scratch folder, cleaned up on leaving
    with tempfile.TemporaryDirectory() as scratch:
        np.save(os.path.join(scratch, 'part.npy'), np.arange(3))
        y = int(np.load(os.path.join(scratch, 'part.npy')).sum())
    del scratch
print('temporary-directory-in-block=', y)
with sc.checkpoint('scratch-folder-made-and-removed'):
    scratch = tempfile.mkdtemp(dir='.')
    with open(os.path.join(scratch, 'part.txt'), 'w') as f:
        f.write('3')
    y = int(open(os.path.join(scratch, 'part.txt')).read())
    shutil.rmtree(scratch)
    del scratch, f
print('scratch-folder-made-and-removed=', y)
def double(x):  # a helper that spills to a scratch file
    with tempfile.NamedTemporaryFile('w+', suffix='.txt') as spill:
        spill.write(str(x))
        spill.flush()
        return int(open(spill.name).read()) * 2
with sc.checkpoint('helper-with-a-scratch-file-first'):
    y = double(1)
with sc.checkpoint('helper-with-a-scratch-file-again'):  # the same helper in a later block
    y = double(2)
print('helper-with-a-scratch-file-again=', y)
with sc.checkpoint('sliding-window-view-of-the-blocks-own-array'):  # time-series windows
    signal = np.arange(6.0)
    windows = np.lib.stride_tricks.sliding_window_view(signal, 3)
signal[2] = 100.0  # a correction of the signal shows in every window holding it
print('sliding-window-view-of-the-blocks-own-array=', windows[:, -1].tolist())
try:
    import pyarrow.fs as pafs, pyarrow.ipc as ipc, pyarrow.orc as orc
except ImportError:
    pafs = ipc = orc = None
with sc.checkpoint('pyarrow-orc-file-class'):
    y = orc.ORCFile('t.orc').read().column('x').to_pylist() if orc else 'absent'
print('pyarrow-orc-file-class=', y)
with sc.checkpoint('pyarrow-ipc-file-reader-class'):
    y = ipc.RecordBatchFileReader('t.arrow').read_all().column('x').to_pylist() if ipc else 'absent'
print('pyarrow-ipc-file-reader-class=', y)
with sc.checkpoint('pyarrow-ipc-stream-reader-class'):
    y = ipc.RecordBatchStreamReader('t.arrows').read_all().column('x').to_pylist() if ipc else 'absent'
print('pyarrow-ipc-stream-reader-class=', y)
with sc.checkpoint('pyarrow-subtree-filesystem'):  # paths relative to the data root
    if pafs:
        root = pafs.SubTreeFileSystem(os.path.abspath('.'), pafs.LocalFileSystem())
        with root.open_input_stream('t.csv') as f:
            y = f.read().decode().split()
        del root, f
    else:
        y = 'absent'
print('pyarrow-subtree-filesystem=', y)
"""

LINKS = (
    "key/readers.py install wraps os.stat and os.access but not os.readlink, which "
    "os.path.realpath and Path.resolve() call (posixpath._joinrealpath: os.lstat, os.readlink); "
    "the file opened is then recorded by its resolved path, which a re-pointed link leaves "
    "unchanged, so the block restores the old run's file: a fix records the link's target as "
    "a look (key/looks.py), compared again at lookup")
UNNAMED = (
    "key/readernames.py READERS/READER_CLASSES/COMPILED_CLASSES name pyarrow's readers one by "
    "one, and a reader not named reads from C++ unseen and without the warning readers.unseen "
    "gives for h5py or duckdb: {what}, so an edited file restores the old table: a fix names "
    "it, and warns for a pyarrow reader class that takes a path and is not named")
SCRATCH = (
    "needless miss on every run, key/files.py _note: a folder the block made (os.mkdir) and "
    "then listed is noted created-and-read-back, so key/filerecords.py wants it to exist at the "
    "next lookup ('file /tmp/tmpXXXX is gone'); a scratch folder the block removed again before "
    "its end (and whose name is new on every run) is neither its input nor its output: a fix "
    "drops a created folder that is gone when the block ends")
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
    "temporary-directory-in-block": SCRATCH + " (tempfile.TemporaryDirectory, whose cleanup lists it)",
    "scratch-folder-made-and-removed": SCRATCH + " (mkdtemp in the project, shutil.rmtree)",
    "helper-with-a-scratch-file-again": (
        "needless miss, key/readlog.py: a helper of the user's counts by the stats of the files "
        "it opened in this process (for a memo filled above the block), so a helper that wrote "
        "and read back a scratch file (NamedTemporaryFile: a new name each run) in an earlier "
        "block has another fingerprint in a later block when the earlier one computed than when "
        "it hit: the later block misses ('input double changed') on the run after any "
        "recompute of the earlier (joblib's loky memmapping folders do the same to a helper "
        "that runs Parallel): a fix leaves out of the read log the files the function wrote "
        "itself or that are gone"),
    "sliding-window-view-of-the-blocks-own-array": (
        "wrong restore, entry/ndviews.py ArrayViews: a view is saved as a view only when the "
        "end of its .base chain is a plain ndarray pickled in the same stream; "
        "sliding_window_view (np.lib.stride_tricks.as_strided) ends its chain at a DummyArray "
        "holding the base, so the windows are saved as a copy of their elements (12 for 6) and "
        "after a hit a change of the signal no longer shows in them: a fix follows "
        "DummyArray.base (or finds the saved root whose memory holds the view's bytes)"),
    "pyarrow-orc-file-class": UNNAMED.format(what="pyarrow.orc.ORCFile (only orc.read_table is named)"),
    "pyarrow-ipc-file-reader-class": UNNAMED.format(
        what="pyarrow.ipc.RecordBatchFileReader (only ipc.open_file, which makes one, is named)"),
    "pyarrow-ipc-stream-reader-class": UNNAMED.format(
        what="pyarrow.ipc.RecordBatchStreamReader (only ipc.open_stream is named)"),
    "pyarrow-subtree-filesystem": UNNAMED.format(
        what="pyarrow.fs.SubTreeFileSystem, whose open_input_stream reads through the base "
        "filesystem from C++ (the LocalFileSystem stand-in's methods are not called)"),
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
    write_arrow_files(root, version)


def write_arrow_files(root: Path, version: int) -> None:
    """The same table in ORC, the IPC file and stream formats and CSV: [1, version]."""
    (root / "t.csv").write_text(f"x\n1\n{version}\n")
    try:
        import pyarrow as pa
        import pyarrow.ipc as ipc
        import pyarrow.orc as orc
    except ImportError:
        return
    table = pa.table({"x": [1, version]})
    orc.write_table(table, str(root / "t.orc"))
    for path, new in ((root / "t.arrow", ipc.new_file), (root / "t.arrows", ipc.new_stream)):
        with new(str(path), table.schema) as writer:
            writer.write_table(table)


READS_ENV = ({"LR": "0.3", "LOKY_MAX_CPU_COUNT": "1"}, {"LR": "0.2", "LOKY_MAX_CPU_COUNT": "2"})


@pytest.fixture(scope="module")
def reads_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    project = make_project("reads")
    project.write("script.py", READS_SCRIPT)
    write_reads_case_data(project.root, 1)
    return run_cases(project, "script.py", list(READS_CASES), lambda: write_reads_case_data(project.root, 2),
                     env=READS_ENV[0], env_after=READS_ENV[1])


# closed the same session (helper M: entry/ndviews follows a DummyArray base; helper A:
# key/readernames names pyarrow's ORC and IPC reader classes and a SubTreeFileSystem over the
# local one); their reasons above say what missed them
CLOSED_READS_CASES = frozenset({"sliding-window-view-of-the-blocks-own-array", "pyarrow-orc-file-class",
                                "pyarrow-ipc-file-reader-class", "pyarrow-ipc-stream-reader-class",
                                "pyarrow-subtree-filesystem",
                                # the lead: key/values.py _feed_array, key/files.py _note
                                "read-only-input-written", "temporary-directory-in-block",
                                "scratch-folder-made-and-removed"})


@pytest.mark.skipif(os.name == "nt", reason="symbolic links and a C compiler as on POSIX")
@pytest.mark.parametrize("case", [case if case in CLOSED_READS_CASES else xfail(case, reason)
                                  for case, reason in READS_CASES.items()])
def test_what_a_block_reads_through_links_libraries_and_the_interpreter(reads_outcomes: dict[str, Outcome],
                                                                        case: str) -> None:
    if case == "environ-read-inside-joblib" and (os.cpu_count() or 1) < 2:
        pytest.skip("LOKY_MAX_CPU_COUNT=1 and =2 give the same count on one core")
    needs = {"environ-read-inside-joblib": "joblib", "environ-read-inside-pydantic-settings": "pydantic_settings"}
    needs.update(dict.fromkeys([c for c in READS_CASES if c.startswith("pyarrow-")], "pyarrow"))
    if case in needs and importlib.util.find_spec(needs[case]) is None:
        pytest.skip(f"{needs[case]} is not installed")
    if case == "shared-library-loaded-in-block" and not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler to build the library")
    assert_case(reads_outcomes, case)


# -- torch: the autograd mode and print options set above a block, TORCH_HOME: one script ------

TORCH_SCRIPT = """
import json, os
import statecache as sc

@sc.cached_setup(name='cached-setup-importing-torch')  # the heavy import kept inside the setup
def features():
    import torch
    return torch.arange(4.0).sum().item()

print('cached-setup-importing-torch=', features())
import torch
C = json.load(open('cases.json'))
w = torch.ones(1, requires_grad=True)
torch.set_grad_enabled(C['grad'])  # an evaluation script turns autograd off at the top
with sc.checkpoint('grad-mode-set-above'):
    y = (w * 2).requires_grad  # features built with or without their graph
print('grad-mode-set-above=', y)
torch.set_grad_enabled(True)
with torch.inference_mode(C['inference']):
    with sc.checkpoint('inference-mode-around-the-block'):
        y = (w * 2).is_inference()  # inference tensors cannot be used in autograd later
print('inference-mode-around-the-block=', y)
t = torch.tensor([1 / 3])
torch.set_printoptions(precision=C['precision'])
with sc.checkpoint('print-options-set-above'):
    y = repr(t)  # a report kept with the results
print('print-options-set-above=', y)
torch.set_printoptions(profile='default')
with sc.checkpoint('environ-read-inside-torch-hub'):
    y = os.path.basename(os.path.dirname(torch.hub.get_dir()))  # TORCH_HOME: where weights are
print('environ-read-inside-torch-hub=', y)
with sc.checkpoint('numpy-view-of-a-tensor'):  # the same memory handed to numpy code
    weights = torch.zeros(3)
    as_numpy = weights.numpy()
weights[0] = 7.0  # an in-place torch update, seen through the numpy array
print('numpy-view-of-a-tensor=', as_numpy.tolist())
"""

TORCH_SETTINGS = (
    "key/libsettings.py _TORCH counts the default dtype, deterministic mode, matmul precision "
    "and thread count, not {what}, which torch reads inside every op: the hit restores what "
    "the other setting computed; a fix adds it to the torch registry (read and, for a block "
    "that sets it, replayed by _registries.py)")
TORCH_CASES = {
    # closed by 80509ec (a library's handlers on its own loggers are plain settings): it was never
    # saved; kept as the one test of a block that imports torch itself
    "cached-setup-importing-torch": "",
    "grad-mode-set-above": TORCH_SETTINGS.format(what="torch.is_grad_enabled() (set_grad_enabled, no_grad)"),
    "inference-mode-around-the-block": TORCH_SETTINGS.format(what="torch.is_inference_mode_enabled()"),
    "print-options-set-above": TORCH_SETTINGS.format(
        what="its print options (torch.set_printoptions, torch._tensor_str.PRINT_OPTS), as numpy's count"),
    "environ-read-inside-torch-hub": (
        "key/process.py scan/stdlib_reads, as environ-read-inside-joblib: torch.hub.get_dir() "
        "reads TORCH_HOME inside torch, so another weights folder restores the old one"),
    "numpy-view-of-a-tensor": (
        "wrong restore, entry/ndviews.py and entry/tensors.py: torch views of one storage are "
        "kept shared and numpy views of a saved ndarray too, but an ndarray over a tensor's "
        "memory (t.numpy(), whose .base is no ndarray) is saved as its own copy, so after a hit "
        "an in-place change of the tensor no longer shows in the array: a fix saves such an "
        "array as t.numpy() of the restored tensor (offset, shape and strides in its storage)"),
}


def write_torch_case_data(root: Path, version: int) -> None:
    settings = {"grad": True, "inference": False, "precision": 4} if version == 1 else \
        {"grad": False, "inference": True, "precision": 2}
    (root / "cases.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def torch_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    pytest.importorskip("torch")
    project = make_project("torch")
    project.write("script.py", TORCH_SCRIPT)
    write_torch_case_data(project.root, 1)
    homes = [{"TORCH_HOME": str(project.root / name)} for name in ("home1", "home2")]
    return run_cases(project, "script.py", list(TORCH_CASES), lambda: write_torch_case_data(project.root, 2),
                     env=homes[0], env_after=homes[1])


# closed by the lead (key/libsettings.py _torch: grad and inference modes, anomaly detection and
# print options count as torch's settings); their reasons above say what missed them
CLOSED_TORCH_CASES = frozenset({"grad-mode-set-above", "inference-mode-around-the-block", "print-options-set-above"})


@pytest.mark.parametrize("case", [xfail(case, reason) if reason and case not in CLOSED_TORCH_CASES else case
                                  for case, reason in TORCH_CASES.items()])
def test_torch_state_a_block_reads_inside_torch(torch_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(torch_outcomes, case)


# -- what the interpreter was started with: one variable changed at a time ----------------------

OPTIMIZE_SCRIPT = """
import statecache as sc
x = float('nan')
with sc.checkpoint('assert-stripped-by-O'):
    try:
        assert x == x, 'NaN in the features'  # python -O train.py skips the check
        y = 'checked'
    except AssertionError:
        y = 'NaN found'
print('assert-stripped-by-O=', y)
"""

HASHSEED_SCRIPT = """
import statecache as sc
with sc.checkpoint('set-order-under-another-hash-seed'):  # a vocabulary from a set of words
    y = ' '.join({f'w{i}' for i in range(20)})
print('set-order-under-another-hash-seed=', y)
"""

INTERPRETER_CASES = {
    "assert-stripped-by-O": (
        "key/components.py env_component: the key holds Python major.minor and the format and "
        "schema versions, not sys.flags.optimize, and code counts by its source, in which an "
        "assert is the same under -O (PYTHONOPTIMIZE): a run under -O saves what a check it "
        "skipped would refuse, and a run without -O restores it unchecked: a fix keys on "
        "sys.flags.optimize (where the block's code or a helper holds an assert or __debug__)"),
    "set-order-under-another-hash-seed": (
        "key/components.py env_component: PYTHONHASHSEED, set to make runs reproducible, "
        "fixes the iteration order of sets of str, but is not in the key, so another seed "
        "restores the order of the first: a fix keys on PYTHONHASHSEED when it is set (when "
        "unset every run's order is random, and a hit is as good as any)"),
}


@pytest.fixture(scope="module")
def interpreter_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    project = make_project("interpreter")
    project.write("optimize.py", OPTIMIZE_SCRIPT)
    project.write("hashseed.py", HASHSEED_SCRIPT)
    optimized = run_cases(project, "optimize.py", ["assert-stripped-by-O"], lambda: None,
                          env={"PYTHONOPTIMIZE": "1"}, env_after={"PYTHONOPTIMIZE": ""})
    seeded = run_cases(project, "hashseed.py", ["set-order-under-another-hash-seed"], lambda: None,
                       env={"PYTHONHASHSEED": "1"}, env_after={"PYTHONHASHSEED": "2"})
    return {**optimized, **seeded}


# closed by the lead (key/components.py env_component: -O and a fixed PYTHONHASHSEED are in
# the key); the reasons above say what missed them
@pytest.mark.parametrize("case", list(INTERPRETER_CASES))
def test_what_the_interpreter_was_started_with(interpreter_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(interpreter_outcomes, case)


# -- workers that share no memory with the block, given paths the inspection does not see -----

WORKERS_SCRIPT = """
import numpy as np, pandas as pd
import statecache as sc
from joblib import Parallel, delayed

if __name__ == '__main__':
    parts = np.array([f'parts/p{i}.txt' for i in range(4)])  # a data set as an array of file names
    with sc.checkpoint('workers-read-file-names-in-a-numpy-array'):
        load_all = np.vectorize(np.loadtxt, otypes=[object])  # a loader over an array of names
        y = float(sum(a.sum() for chunk in Parallel(n_jobs=2)(delayed(load_all)(c) for c in (parts[:2], parts[2:]))
                      for a in chunk))
        del load_all
    print('workers-read-file-names-in-a-numpy-array=', y)
    with sc.checkpoint('workers-read-file-names-in-an-arrow-series'):
        names = pd.Series(parts.tolist(), dtype='string[pyarrow]')
        loaded = Parallel(n_jobs=2)(delayed(pd.Series.map)(names[i::2], np.loadtxt) for i in range(2))
        y = float(sum(np.sum(a) for s in loaded for a in s))
        del names, loaded
    print('workers-read-file-names-in-an-arrow-series=', y)
"""

UNSEEN_PATHS = (
    "key/tasks.py _Inspector.persistent_id: a task is doubtful when a str, bytes or PathLike in "
    "it names a file, but {what} pickles its strings as one out-of-band buffer, which "
    "_out_of_band passes unlooked at, so the task holds no path it sees; the block is saved "
    "(df02d26) and an edited file restores the old result (also for the realistic form, "
    "cross_val_score(make_pipeline(CountVectorizer(input='filename'), ...), names, n_jobs=2), "
    "seen by hand): a fix looks into string buffers (numpy dtype U/S/T, arrow string and "
    "binary arrays: each value through names_path) or counts such a buffer as a doubt")
WORKERS_CASES = {
    "workers-read-file-names-in-a-numpy-array": UNSEEN_PATHS.format(what="a numpy array of file names (dtype '<U13')"),
    "workers-read-file-names-in-an-arrow-series": UNSEEN_PATHS.format(
        what="a pandas Series of pyarrow strings (the default string dtype of pandas 3)"),
}


def write_parts(root: Path, version: int) -> None:
    (root / "parts").mkdir(exist_ok=True)
    for i in range(4):
        (root / "parts" / f"p{i}.txt").write_text(f"{i}\n{10 * version if i == 1 else 1}\n")


@pytest.fixture(scope="module")
def workers_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    for name in ("joblib", "pyarrow"):
        pytest.importorskip(name)
    project = make_project("workers")
    project.write("script.py", WORKERS_SCRIPT)
    write_parts(project.root, 1)
    return run_cases(project, "script.py", list(WORKERS_CASES), lambda: write_parts(project.root, 2))


# closed by the lead (key/tasks.py text_values): the names in the buffer are paths, so the
# block is not saved (its workers' reads are unknown), and each run computes the fresh value
@pytest.mark.parametrize("case", list(WORKERS_CASES))
def test_file_names_sent_to_workers_in_a_buffer(workers_outcomes: dict[str, Outcome], case: str) -> None:
    found = workers_outcomes[case]
    assert found.after == found.fresh, f"{case}: {found.after} after the edit, {found.fresh} fresh"
    assert not found.hit_unchanged and not found.hit_again, f"{case}: saved, though its workers read files"
