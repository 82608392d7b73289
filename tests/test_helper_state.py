"""What a block's helpers change comes back on a hit (issue 11, class 6): attributes of the
user's modules a helper sets (by assignment, ``setattr``, through a local import; added and
deleted too), data a helper changes in place (a list of the script, a module's dict or array,
a class attribute, an object's attribute), and what the block patches onto a class (a method,
a property, a classmethod, a dunder, a deletion). Other names for a changed object see the
change, as after the computing run.

Each script holds one checkpoint per case and prints every case, so that one run checks them
all: the first run computes each, the rerun hits each and prints what a fresh run under
``STATECACHE_DISABLE=1`` prints. The rule itself (``_watched``, ``ClassState``) is also
checked in process."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, subprocess_env
from test_redteam import fresh

from statecache._objectstate import ClassState, FunctionState
from statecache._watched import Watched
from statecache.key.inputs import MISSING


def assert_every_case_hits_like_fresh(project: Project, script: str, names: list[str]) -> str:
    """The first run computes every checkpoint, the rerun hits every one and prints what a
    fresh run prints (and what the first run printed). Returns that output."""
    computed = project.run(script)
    assert all(computed.computed(n) for n in names), computed.stderr
    again = project.run(script)
    missed = [n for n in names if not again.hit(n)]
    assert not missed, again.stderr
    expected = fresh(project, script)
    assert computed.stdout == expected, computed.stderr
    for got, want in zip(again.stdout.splitlines(), expected.splitlines(), strict=True):
        assert got == want, f"after a hit: {got!r}, fresh: {want!r}\n{again.stderr}"
    return expected


def saved_variables(project: Project, name: str) -> set[str]:
    """The labels of what the entry of ``name`` saved (``statecache show --json``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "statecache", "show", name, "--json", "--dir", str(project.cache)],
        capture_output=True, text=True, env=subprocess_env(), check=True,
    )
    return set(json.loads(proc.stdout)["variables"])


HELPERS = """
A = 1
OLD = 'old'
TABLE = {}
BIG = list(range(2000))
def fast_forward(self):
    return 'fast'
class Net:
    def forward(self):
        return 'slow'
class Cfg:
    def __init__(self):
        self.lr = 0.1
CFG = Cfg()
"""

MODULE_ATTRIBUTES = """
import statecache as sc
import helpers, config, setup_mod, pkg.sub
alias = helpers.TABLE
cfg = helpers.CFG
overrides = {'LR': 0.5, 'EPOCHS': 3}
def set_a():
    helpers.A = 7
def set_c():
    import helpers as h
    h.C = [3]
def set_epochs(name):
    setattr(config, name, 9)
def fill_table():
    import helpers as h
    h.TABLE['k'] = 1
def tune():
    import helpers as h
    h.CFG.lr = 0.5
def patch_net():
    import helpers as h
    h.Net.forward = h.fast_forward
def main():
    with sc.checkpoint('frame'):
        set_epochs('EPOCHS')
        y = 1
    return y
with sc.checkpoint('script_function'):
    set_a()
with sc.checkpoint('other_module'):
    setup_mod.setup()
with sc.checkpoint('local_import'):
    set_c()
with sc.checkpoint('setattr_loop'):
    for k, v in overrides.items():
        setattr(config, k, v)
with sc.checkpoint('package'):
    pkg.sub.VALUE = pkg.sub.VALUE + 1 if False else None
    setup_mod.set_sub()
with sc.checkpoint('in_place_alias'):
    fill_table()
with sc.checkpoint('class_of_module'):
    patch_net()
with sc.checkpoint('object_of_module'):
    tune()
main()
print('a', helpers.A)
print('b', helpers.B, hasattr(helpers, 'OLD'))
print('c', getattr(helpers, 'C', None))
print('config', config.LR, config.EPOCHS)
print('sub', pkg.sub.VALUE)
print('alias', alias, alias is helpers.TABLE)
print('net', helpers.Net().forward())
print('cfg', cfg.lr, cfg is helpers.CFG)
"""


def test_module_attributes_a_helper_sets_are_restored(project: Project) -> None:
    """A helper of the script, of another module, through a local import, ``setattr`` with a
    name from a dict or an argument (also in a function's checkpoint), a package's submodule,
    a dict and a config object changed in place through a local import (held under another
    name too), a method patched onto a module's class: each comes back; an attribute a helper deleted stays
    deleted. Only what changed is saved."""
    project.write("helpers.py", HELPERS)
    project.write("config.py", "LR = 0.1\nEPOCHS = 1\n")
    project.write("pkg/__init__.py", "")
    project.write("pkg/sub.py", "VALUE = 1\n")
    project.write("setup_mod.py", "import helpers\nimport pkg.sub\n\n\ndef setup():\n    helpers.B = 8\n"
                  "    del helpers.OLD\n\n\ndef set_sub():\n    pkg.sub.VALUE = 4\n")
    project.write("script.py", MODULE_ATTRIBUTES)
    names = ["script_function", "other_module", "local_import", "setattr_loop", "package",
             "in_place_alias", "class_of_module", "object_of_module", "frame"]
    out = assert_every_case_hits_like_fresh(project, "script.py", names)
    assert out == "a 7\nb 8 False\nc [3]\nconfig 0.5 9\nsub 4\nalias {'k': 1} True\nnet fast\ncfg 0.5 True\n"
    saved = saved_variables(project, "script_function")
    assert saved == {"sys.modules['helpers'].A"}, saved  # not BIG, TABLE, Net, nor config's


IN_PLACE = """
import statecache as sc
import numpy as np
import h2
REG = []
held = REG
STATS = {'n': 0}
class Model:
    default = 1
    registry = []
class Config:
    def __init__(self):
        self.lr = 0.1
class Tracker:
    def __init__(self):
        self.items = []
    def add(self, x):
        self.items.append(x)
CFG = Config()
cfg_alias = CFG
tracker = Tracker()
registry = Model.registry
table = h2.TABLE
def append_reg():
    REG.append('x')
def fill_module_dict():
    h2.TABLE['k'] = 7
def set_default():
    Model.default = 5
    Model.registry.append('r')
def set_lr():
    CFG.lr = 0.5
def bump_array():
    h2.ARR[:] += 1
def _count():
    STATS['n'] += 1
def nested():
    _count()
def track():
    tracker.add(3)
def counter(acc=[]):
    acc.append(1)
    return len(acc)
def swap():
    return 'old'
def _new():
    return 'new'
funcs = {'counter': counter, 'swap': swap}
@sc.cached_setup
def load(n):
    append_reg()
    return n
with sc.checkpoint('script_list'):
    append_reg()
with sc.checkpoint('module_dict'):
    fill_module_dict()
with sc.checkpoint('class_attribute'):
    set_default()
with sc.checkpoint('object_attribute'):
    set_lr()
with sc.checkpoint('module_array'):
    bump_array()
with sc.checkpoint('nested_helper'):
    nested()
with sc.checkpoint('method_of_a_global'):
    track()
with sc.checkpoint('function_state'):
    counter()
    counter.calls = 1
with sc.checkpoint('function_code'):
    swap.__code__ = _new.__code__
load(2)
print('reg', REG, held is REG)
print('table', h2.TABLE, table is h2.TABLE)
print('model', Model.default, Model.registry, registry is Model.registry)
print('cfg', CFG.lr, cfg_alias is CFG)
print('arr', h2.ARR.tolist())
print('stats', STATS)
print('tracker', tracker.items)
print('functions', funcs['counter'] is counter, counter.__defaults__, counter.calls, funcs['swap']())
"""


def test_data_a_helper_changes_in_place_is_restored(project: Project) -> None:
    """A list of the script a helper appends to (also from a ``cached_setup``), a module's dict
    and numpy array, a class attribute and a list on a class, an object's attribute, a dict a
    helper's helper updates, an object a helper calls a method of, a function's default,
    attribute and code the block changed: each has, after a hit, the content the computing
    run left, in the same object (other names for it see it)."""
    project.write("h2.py", "import numpy as np\nTABLE = {}\nARR = np.zeros(3)\n")
    project.write("script.py", IN_PLACE)
    names = ["script_list", "module_dict", "class_attribute", "object_attribute", "module_array",
             "nested_helper", "method_of_a_global", "function_state", "function_code", "load"]
    out = assert_every_case_hits_like_fresh(project, "script.py", names)
    assert out.splitlines() == [
        "reg ['x', 'x'] True", "table {'k': 7} True", "model 5 ['r'] True", "cfg 0.5 True",
        "arr [1.0, 1.0, 1.0]", "stats {'n': 1}", "tracker [3]", "functions True ([1],) 1 new",
    ]


PATCHES = """
import statecache as sc
def make(name):
    def predict(self):
        return 1
    def gone(self):
        return 0
    return type(name, (), {'predict': predict, 'gone': gone, '__repr__': lambda self: name})
A, B, C, D, E, F = (make(n) for n in 'ABCDEF')
held = E
def _fast(self):
    return 'helper-fast'
def patch_f():
    F.predict = _fast
with sc.checkpoint('method'):
    def fast(self):
        return 2
    A.predict = fast
with sc.checkpoint('property'):
    B.score = property(lambda self: 3)
with sc.checkpoint('classmethod'):
    C.make = classmethod(lambda cls: cls.__name__ + ' made')
    C.twice = staticmethod(lambda x: 2 * x)
with sc.checkpoint('dunder'):
    D.__repr__ = lambda self: 'D!'
with sc.checkpoint('deleted'):
    del E.gone
with sc.checkpoint('by_a_helper'):
    patch_f()
print(A().predict(), B().score, C.make(), C.twice(4), repr(D()), hasattr(held, 'gone'), F().predict())
"""


def test_what_the_block_patches_onto_a_class_is_set_back(project: Project) -> None:
    """A method, a property, a classmethod and a staticmethod, a dunder, a deleted method, a
    method a helper patches onto another class: after a hit the class is as the computing run
    left it."""
    project.write("script.py", PATCHES)
    names = ["method", "property", "classmethod", "dunder", "deleted", "by_a_helper"]
    out = assert_every_case_hits_like_fresh(project, "script.py", names)
    assert out == "2 3 C made 8 D! False helper-fast\n"


# -- the rule, in process ---------------------------------------------------------------------


@pytest.fixture
def user_module(tmp_path: Path) -> types.ModuleType:
    """A module of the user's (its file is under tmp_path), loaded in this process."""
    path = tmp_path / "watched_mod.py"
    path.write_text("N = 1\nGONE = 2\nTABLE = {}\nITEMS = [object()]\nBIG = list(range(5))\n")
    module = types.ModuleType("watched_mod")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), vars(module))
    sys.modules["watched_mod"] = module
    yield module
    del sys.modules["watched_mod"]


def _watch(values: dict[str, Any] | None = None, **names: Any) -> Watched:
    own: dict[str, Any] = {"__name__": "own", **names}
    return Watched.before(lambda n: own.get(n, MISSING), values or {}, own, ignore=())


def test_only_what_changed_in_a_user_module_is_reported(user_module: types.ModuleType) -> None:
    watched = _watch()
    user_module.N = 5  # rebound
    del user_module.GONE
    user_module.ADDED = "new"
    user_module.TABLE["k"] = 1  # plain data, in place
    user_module.ITEMS.append(1)  # not plain data: watched by identity only
    state, gone, in_place = watched.changes(set())
    label = "sys.modules['watched_mod']."
    assert state == {label + "N": 5, label + "ADDED": "new", label + "TABLE": {"k": 1}}
    assert gone == [label + "GONE"] and in_place == {label + "TABLE"}


def test_an_unchanged_module_and_skipped_or_covered_labels_report_nothing(user_module: types.ModuleType) -> None:
    assert _watch().changes(set()) == ({}, [], set())
    watched = _watch({"watched_mod.N": 1}, watched_mod=user_module)  # the binder's own input
    user_module.N = 2
    user_module.BIG.append(5)
    assert watched.changes({"sys.modules['watched_mod'].BIG"}) == ({}, [], set())


def test_data_a_helper_reads_is_watched_by_content(user_module: types.ModuleType) -> None:
    """An object a helper reads (not plain data) counts by its fingerprint, like an input."""
    code = compile("def grow():\n    ITEMS.append(2)\n", str(user_module.__file__), "exec")
    exec(code, vars(user_module))
    watched = _watch({"grow": user_module.grow})
    user_module.grow()
    state, gone, in_place = watched.changes(set())
    assert state == {"sys.modules['watched_mod'].ITEMS": user_module.ITEMS} and not gone
    assert in_place == {"sys.modules['watched_mod'].ITEMS"}


def test_a_class_state_sets_back_what_was_bound_and_fills_what_was_changed() -> None:
    class K:
        items: list[int] = []

        def f(self) -> int:
            return 1

        def g(self) -> int:
            return 0

    before = dict(vars(K))
    held = K.items
    K.items.append(1)
    K.f = lambda self: 2
    K.p = property(lambda self: 3)
    delattr(K, "g")
    saved = ClassState.of(K, before)
    assert set(saved.attributes) == {"items", "f", "p"} and saved.deleted == ("g",)
    K.items = held = []  # the next run's class: as before the block
    for name in ("f", "g"):
        setattr(K, name, before[name])
    delattr(K, "p")
    saved.apply(K)
    k: Any = K()
    assert K.items is held and held == [1]
    assert k.f() == 2 and k.p == 3 and not hasattr(K, "g")


def test_a_function_state_fills_the_function_the_script_holds() -> None:
    """Defaults, attributes and closure cells go back into the same function; code it holds
    stays the script's."""
    def helper() -> int:
        return 1

    def outer() -> Any:
        count = 0

        def f(acc: list[int] = []) -> int:  # noqa: B006 (the mutable default is the case)
            nonlocal count
            count += 1
            acc.append(count)
            return helper()
        return f

    f = outer()
    f()
    f.calls = 1
    saved = pickle.loads(pickle.dumps(FunctionState(f)))  # as an entry gives it back
    default = (f.__defaults__ or ())[0]
    default.clear()
    f.__dict__.clear()
    assert f.__closure__ is not None
    f.__closure__[0].cell_contents = 0
    saved.apply(f)
    assert (f.__defaults__ or ())[0] is default and default == [1]
    assert f.calls == 1 and f.__closure__[0].cell_contents == 1


def test_a_class_state_of_an_older_entry_still_applies() -> None:
    """An entry written before ``deleted`` and ``rebound`` existed sets its attributes."""
    class K:
        n = 1

    saved = ClassState.__new__(ClassState)
    saved.__dict__.update({"attributes": {"n": 2}})
    saved.apply(K)
    assert K.n == 2


def test_an_array_a_helper_changes_through_a_local_import(project: Project) -> None:
    pytest.importorskip("numpy")
    project.write("h2.py", "import numpy as np\nARR = np.zeros(2)\n")
    project.write("script.py", """
import statecache as sc
import h2
def bump():
    import h2 as m
    m.ARR += 1
with sc.checkpoint('a'):
    bump()
print(h2.ARR.tolist())
""")
    assert_every_case_hits_like_fresh(project, "script.py", ["a"])
