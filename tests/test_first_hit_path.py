"""What the first hit of a process pays for (DESIGN.md: < 10 ms over a plain script): the key
modules that only a module, an import or a helper's local import needs load when one is keyed,
and the provenance roots come from ``sys`` and ``site``, not from ``sysconfig`` (whose config
variables cost ~6 M instructions, and whose import loads ``threading`` on 3.13). Each lazy path
still keys what it keyed: an edit behind it is a miss."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from conftest import Project

from statecache.key import provenance
from statecache.key.inputs import Reads

# Loaded only where a module, an import or a function's local imports are keyed.
LAZY = ("statecache.key.imports", "statecache.key.loaded", "statecache.key.localimports", "statecache.key.versions")
# Never on a small hit: sysconfig's data (and, on 3.13, sysconfig's own threading import).
NEVER = ("sysconfig", "_sysconfigdata", "threading")

SCRIPT = """
import sys
import statecache as sc
before = set(sys.modules)
with sc.checkpoint("small"):
    small = {"k": [1, 2, 3]}
watched = {LAZY + NEVER!r}
print("after small:", sorted(m for m in set(sys.modules) - before if m.startswith(watched)))
import helpers
with sc.checkpoint("helper"):
    value = helpers.scaled(2)
print("value", value)
"""

HELPERS = """
def scaled(n):
    import factors  # a function-local import: keyed through key.localimports and key.imports
    return n * factors.K
"""


def test_a_small_hit_loads_no_lazy_key_module_and_the_lazy_paths_still_key_their_code(project: Project) -> None:
    project.write("main.py", SCRIPT.replace("{LAZY + NEVER!r}", repr(LAZY + NEVER)))
    project.write("helpers.py", HELPERS)
    project.write("factors.py", "K = 10\n")
    first = project.run("main.py")
    assert first.computed("small") and first.computed("helper") and "value 20" in first.stdout
    second = project.run("main.py")
    assert second.hit("small") and second.hit("helper") and "value 20" in second.stdout, second.stderr
    assert "after small: []" in second.stdout, second.stdout
    project.write("factors.py", "K = 11\n")  # read only through the helper's local import
    third = project.run("main.py")
    assert third.hit("small") and third.computed("helper") and "value 22" in third.stdout, third.stderr


def test_provenance_classifies_sysconfig_paths_as_sysconfig_would(tmp_path: Path) -> None:
    paths = sysconfig.get_paths()
    for name in ("stdlib", "platstdlib", "include", "platinclude"):
        probe = os.path.join(paths[name], "statecache_probe.py")
        assert provenance.classify(probe) is provenance.Kind.STDLIB, (name, probe)
    for name in ("purelib", "platlib"):
        probe = os.path.join(paths[name], "statecache_probe.py")
        assert provenance.classify(probe) is provenance.Kind.INSTALLED, (name, probe)
    assert provenance.classify(str(tmp_path / "script.py")) is provenance.Kind.USER
    assert provenance.classify(os.__file__) is provenance.Kind.STDLIB


def test_reads_replace_equality_and_hash_as_a_named_tuple() -> None:
    reads = Reads(("x",), ("n",), (("sys", "argv"),), (), ())
    changed = reads._replace(process=("argv",), bare=("n",))
    assert (changed.assigned, changed.inputs, changed.process, changed.bare) == (("x",), ("n",), ("argv",), ("n",))
    assert reads.process == () and reads.bare is None  # the original is unchanged
    assert reads == Reads(("x",), ("n",), (("sys", "argv"),), (), ()) and hash(reads) == hash(Reads(("x",), ("n",), (("sys", "argv"),), (), ()))
    assert reads != changed
