"""The first hit of a process on a small state (DESIGN.md: < 10 ms over the script without
statecache) pays for every module it imports: a hit may load the statecache modules listed
here and no other, and none of those that only a computing run, a remote tier or a big entry
needs. A module that a change adds to a small hit's path must be added here on purpose."""

from __future__ import annotations

import pytest
from conftest import Project

# What a small hit (no data files, no generators, no process changes, no buffers) may load.
# (key.files and key.readlog come with files_component's import, even with no files=.)
HIT_MODULES = frozenset({"statecache", *(f"statecache.{m}" for m in (
    "_binders", "_checkpoint", "_config", "_engine", "_errors", "_frames", "_settings", "_setup",
    "_version", "_warnings",
    "entry", "entry.format", "entry.meta", "entry.progress", "entry.reader",
    "key", "key.astdigest", "key.code", "key.codegraph", "key.components", "key.dataframes",
    "key.files", "key.readlog", "key.hashing", "key.importwatch", "key.inputs",
    "key.maintext", "key.parsing", "key.names", "key.process", "key.project", "key.provenance", "key.readernames",
    "key.registry", "key.source", "key.stamps", "key.values", "key.valuetypes", "key.walk",
    "store", "store.layout", "store.store",
    # imported at the top of key.files, key.process and key.values (a1d823a, fb2dacd, 22db475):
    # about 2 M instructions together on a small hit that reads no file, stdin or tensor
    "key.filerecords", "key.stdin", "key.tensorprint",
    # at the top of key.files: its fork hook must be in place before the script forks a pool
    # that a later block gives work to (key.workers forwards what such workers read)
    "key.workers",
))})

# Never on a small hit: the computing run's machinery, the writer, tiers, codecs, picklers.
COMPUTE_ONLY = (
    "statecache._identity", "statecache._tiers", "statecache._effects", "statecache.key.rng",
    "statecache._watched", "statecache._openfiles", "statecache._objectstate",
    "statecache.key.readers", "statecache.entry.writer", "statecache.entry.pickling",
    "statecache.entry.codec", "statecache.entry.stream", "statecache.entry.main_functions",
    "statecache.entry.tensors", "statecache.entry.feed", "statecache.entry.rawstream",
    "statecache.entry.memory", "statecache.store.remote", "statecache.store.maintenance",
    "filelock", "zstandard", "cloudpickle", "dill", "numpy", "concurrent.futures", "glob",
    "base64", "hmac",
    "threading",  # the progress bar's lock, made only when a bar is drawn (a terminal)
)

# Standard-library modules a small ``with`` block's hit does without (1-5 M instructions each):
# dis scans helpers' bytecode (the block calls none), a source file is read as Python decodes
# it without linecache and tokenize. (cached_setup binds its arguments through inspect, which
# imports them all.)
BLOCK_LEAVES_OUT = ("dis", "linecache", "tokenize", "inspect", "dataclasses", "bisect")

REPORT = """
print("new", " ".join(sorted(m for m in set(sys.modules) - before if m.startswith("statecache")
                             or m.split(".")[0] in {c.split(".")[0] for c in COMPUTE_ONLY})))
"""

BLOCK = """
import sys
before = set(sys.modules)
import statecache as sc
n = 10
with sc.checkpoint("small"):
    small = {"k": [i * 7 for i in range(n)], "name": "x"}
print("small", small["k"][-1])
"""

SETUP = """
import sys
before = set(sys.modules)
import statecache as sc
@sc.cached_setup
def load(n):
    return {"k": [i * 7 for i in range(n)]}
small = load(10)
print("small", small["k"][-1])
"""


def loaded_on_hit(project: Project, script: str, name: str) -> set[str]:
    project.write("script.py", f"COMPUTE_ONLY = {COMPUTE_ONLY + BLOCK_LEAVES_OUT!r}\n" + script + REPORT)
    first = project.run("script.py")
    assert "small 63" in first.stdout and not first.hit(name)
    second = project.run("script.py")
    assert second.hit(name) and "small 63" in second.stdout, second.stderr
    line = next(line for line in second.stdout.splitlines() if line.startswith("new"))
    return set(line.split()[1:])


@pytest.mark.parametrize("script, name", [(BLOCK, "small"), (SETUP, "load")], ids=["checkpoint", "cached_setup"])
def test_a_small_hit_loads_only_the_modules_restoring_needs(project: Project, script: str, name: str) -> None:
    loaded = loaded_on_hit(project, script, name)
    stdlib = {m for m in loaded if m.split(".")[0] in BLOCK_LEAVES_OUT}
    assert not loaded - HIT_MODULES - stdlib, f"a small hit now also loads {sorted(loaded - HIT_MODULES - stdlib)}"
    assert not {m for m in loaded if m.startswith(COMPUTE_ONLY)}
    if name == "small":
        assert not stdlib, f"a small block's hit now also imports {sorted(stdlib)}"
