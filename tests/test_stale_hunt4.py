"""Red team, fifth pass (issue 11): stale hits, wrong restores and needless misses in the rules
this session added (records of what a block saw, taken when it saw it: looks, consumed files,
SQLite's own files; in-place restores of inputs; the restore paths) and in what research scripts
do around them. Each hole is a strict xfail naming the code that misses it, so that the fix
turns it into a failure asking for the mark to go.

Every case is one checkpoint of a script shared with the other cases of its kind, run by a
module-scoped fixture in subprocesses against a cache under tmp_path (``run_cases``): it
computes, an unchanged rerun must hit (so a library that never caches cannot pass), one change
a user makes follows, and the next run must print what a fresh ``STATECACHE_DISABLE=1`` run
prints, and its rerun hit again."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Project
from test_files_seen import write_db
from test_stale_hunt3 import Outcome, assert_case, make_project, run_cases, xfail

__all__ = ["make_project"]  # the module-scoped fixture, imported for pytest to find here

# -- files and folders the block looked at, read and wrote: one script -------------------------

FILES_SCRIPT = """
import json
import os
from sqlite3 import connect  # the standard library's imports come first (isort, ruff's I)
import statecache as sc
import numpy as np
with sc.checkpoint('newest-by-scandir'):  # resume from the latest checkpoint file
    newest = max(os.scandir('ckpts'), key=lambda e: e.stat().st_mtime).path
    y = open(newest).read()
print('newest-by-scandir=', y)
with sc.checkpoint('scandir-size-filter'):  # skip the downloads that have not arrived yet
    y = sorted(open(e.path).read() for e in os.scandir('inbox') if e.stat().st_size > 0)
print('scandir-size-filter=', y)
with sc.checkpoint('attach-by-a-connect-imported-first'):
    con = connect(':memory:')
    con.execute("attach database 'o.db' as o")
    y = con.execute('select sum(x) from o.t').fetchone()[0]
    con.close()
    del con
print('attach-by-a-connect-imported-first=', y)
with sc.checkpoint('config-read-and-written-back'):
    with open('cfg.json') as f:
        cfg = json.load(f)
    cfg.setdefault('epochs', 3)  # fill in the defaults, keep the resolved config beside the run
    with open('cfg.json', 'w') as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    del f
    y = cfg['epochs'] * cfg['lr']
print('config-read-and-written-back=', y)
with sc.checkpoint('views-of-the-blocks-own-array'):
    data = np.zeros(6)
    head, tail = data[:4], data[2:]  # train/test split, features/labels: views of one array
head[3] = 7  # written through the view, as after the computing run
print('views-of-the-blocks-own-array=', data.tolist(), tail.tolist())
with sc.checkpoint('strided-view-of-a-big-array'):
    signal = np.zeros(100_000, dtype=np.float32)  # past the in-band size: its own buffer
    every_100th = signal[::100]
signal[::100] += 1
print('strided-view-of-a-big-array=', float(every_100th.sum()), float(signal.sum()))
"""

SCANDIR_STAT = (
    "key/readers.py install wraps os.stat (and key/looks.py records what a stat answered), but "
    "os.DirEntry.stat() stats from C (fstatat) past the wrapper and raises no audit event, and "
    "key/files.py _heard records os.scandir as a listing of names only")


def write_files_case_data(root: Path, version: int) -> None:
    """v1: ckpts/a is the newest, inbox/b is still empty; v2: ckpts/b touched newest, b arrived."""
    (root / "ckpts").mkdir(exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    if version == 1:
        (root / "ckpts" / "a").write_text("a")
        (root / "ckpts" / "b").write_text("b")
        os.utime(root / "ckpts" / "a", (1_700_000_100, 1_700_000_100))
        os.utime(root / "ckpts" / "b", (1_700_000_000, 1_700_000_000))
        (root / "inbox" / "a").write_text("1")
        (root / "inbox" / "b").write_text("")
        (root / "cfg.json").write_text(json.dumps({"lr": 0.5}, indent=1, sort_keys=True))
    else:
        os.utime(root / "ckpts" / "b")  # a newer save of the same name and size: same listing
        (root / "inbox" / "b").write_text("2")  # same names in the folder
    write_db(root / "o.db", version)


@pytest.fixture(scope="module")
def files_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    pytest.importorskip("numpy")
    project = make_project("files")
    project.write("script.py", FILES_SCRIPT)
    write_files_case_data(project.root, 1)
    return run_cases(project, "script.py", list(FILES_CASES), lambda: write_files_case_data(project.root, 2))


FILES_CASES = {
    "newest-by-scandir": SCANDIR_STAT + ": the newest file by DirEntry.stat().st_mtime is another "
    "after a touch, and the block restores the old one's content",
    "scandir-size-filter": SCANDIR_STAT + ": a file skipped for its size (st_size == 0) that is "
    "filled since is no change of the block that filtered on it",
    "attach-by-a-connect-imported-first": (
        "key/databases.py wrap_connect: ATTACH is heard through an authorizer that the wrapped "
        "sqlite3.connect sets; `from sqlite3 import connect` above `import statecache` (stdlib "
        "imports first, as isort orders them) keeps the unwrapped connect, so the attached o.db "
        "is recorded nowhere and its new rows restore the old sum"),
    "config-read-and-written-back": (
        "needless miss, key/files.py _input_record: a file the block read and then rewrote is "
        "poisoned ('changed while the block ran') when its stamp at the end differs from its "
        "first open's, even when the block wrote back exactly what it read: a block that "
        "resolves a config's defaults and saves it back computes on every run ('file cfg.json "
        "changed')"),
    "views-of-the-blocks-own-array": (
        "entry/pickling.py (the state's pickle stream) and _views.py: views are rebuilt only "
        "over inputs (view_origin); an array the block makes and views of it made in the same "
        "block are saved as independent arrays (stored twice) and restored as copies, so a write "
        "through a view no longer reaches its base after a hit (torch views of one storage are "
        "kept shared: test_torch_payload)"),
    "strided-view-of-a-big-array": (
        "entry/pickling.py and _views.py: as views-of-the-blocks-own-array, for a buffer past "
        "the in-band size stored out of band: the strided view comes back as its own copy"),
}


@pytest.mark.parametrize("case", [xfail(case, reason) for case, reason in FILES_CASES.items()])
def test_what_a_block_looked_at_read_and_wrote(files_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(files_outcomes, case)


# -- torch: what a hit leaves of a module the block trained ------------------------------------

TORCH_SCRIPT = """
import os, sys
import statecache as sc
import torch
torch.manual_seed(0)
X = torch.ones(4, 2)
net = torch.nn.Linear(2, 1)
with sc.checkpoint('optimizer-made-in-block'):  # a few epochs of warm-up
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        net(X).sum().backward()
        opt.step()
opt.step()  # training goes on after the block, with the optimizer it made
print('optimizer-made-in-block=', [round(v, 4) for v in net.weight.flatten().tolist()],
      opt.param_groups[0]['params'][0] is net.weight)
probe = torch.nn.Linear(2, 1)
with sc.checkpoint('grads-of-a-module'):  # saliency, gradient norms: read after the block
    probe(X).sum().backward()
print('grads-of-a-module=', None if probe.weight.grad is None else probe.weight.grad.tolist())
with sc.checkpoint('next-block-over-that-module'):
    y = round(probe(X).sum().item(), 4)
print('next-block-over-that-module=', y)
"""


@pytest.fixture(scope="module")
def torch_outcomes(make_project: Callable[[str], Project]) -> dict[str, Outcome]:
    """Three runs (importing torch costs seconds of CPU a run): compute, rerun unchanged (the
    run compared with the fresh one) and fresh."""
    pytest.importorskip("torch")
    from test_stale_hunt3 import values

    project = make_project("torch")
    project.write("script.py", TORCH_SCRIPT)
    cases = list(TORCH_CASES)
    computed = project.run("script.py")
    assert all(computed.computed(case) for case in cases), computed.stderr
    rerun = project.run("script.py")
    got, want = values(rerun), values(project.run("script.py", env={"STATECACHE_DISABLE": "1"}))
    return {case: Outcome(rerun.hit(case), got.get(case), want.get(case), True) for case in cases}


TORCH_CASES = {
    "optimizer-made-in-block": (
        "_arraymerge.py / entry (Parameter's pickle, torch._utils._rebuild_parameter, drops "
        ".grad): the optimizer and the live parameters stay one (identity holds), but the "
        "gradients the last backward() left on the module's parameters are not restored, so "
        "the opt.step() that continues training after a hit does nothing (SGD skips a "
        "parameter whose .grad is None): one step fewer than the computing run"),
    "grads-of-a-module": (
        "_arraymerge.py / key/values.py: a tensor's .grad is kept beside the state for a tensor "
        "the block binds, not for the parameters of an nn.Module (Parameter's pickle drops "
        ".grad): after a hit probe.weight.grad is None, the computing run left the gradients"),
    "next-block-over-that-module": (
        "needless miss, a consequence of grads-of-a-module: the .grad a tensor's fingerprint "
        "counts (key/values.py Fingerprinter._feed_tensor) is missing after the first block's "
        "hit, so the next block over the same module misses on every unchanged rerun"),
}


@pytest.mark.parametrize("case", [xfail(case, reason) for case, reason in TORCH_CASES.items()])
@pytest.mark.extended  # three runs importing torch cost ~25 CPU-s, near this file's budget: -m extended
def test_a_module_the_block_trained(torch_outcomes: dict[str, Outcome], case: str) -> None:
    assert_case(torch_outcomes, case)
