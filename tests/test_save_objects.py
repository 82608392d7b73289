"""What a block leaves behind that is not plain data: functions and classes it defines in
``__main__``, file wrappers left bound, instances pickled with and without a reducer. Each case
runs a real script twice (compute, then hit) against a real cache directory, and the hit must
print what a run without caching prints."""

from __future__ import annotations

import io
import pickle

import pytest
from conftest import Project

from statecache.entry.pickling import serialise


def fresh(project: Project, script: str = "script.py") -> str:
    return project.run(script, env={"STATECACHE_DISABLE": "1"}).stdout


def compute_then_hit(project: Project, name: str = "a", script: str = "script.py") -> str:
    first = project.run(script)
    assert first.computed(name), first.stderr
    second = project.run(script)
    assert second.hit(name), second.stderr
    assert "warning" not in second.stderr.lower() and "ignoring" not in second.stderr, second.stderr
    assert first.stdout == second.stdout == fresh(project, script)
    return second.stdout


def test_functions_defined_by_the_block_read_and_write_the_live_module_globals(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
FACTOR = 2
counter = [0]
with sc.checkpoint("a"):
    def scale(v):
        return v * FACTOR
    def bump():
        global total
        counter[0] += 1
        total = counter[0] * 10
    class Model:
        def weight(self):
            return FACTOR + 1
        def __repr__(self):
            return "Model:" + super().__repr__()[:1]
    def factorial(n):
        return 1 if n == 0 else n * factorial(n - 1)
    def outer():
        offset = 3
        def inner():
            return offset + FACTOR
        return inner
    inner = outer()
    twice = lambda: FACTOR * 10
    table = {"scale": scale}
FACTOR = 5
bump()
print("after", scale(1), table["scale"](2), counter, total, Model().weight(), repr(Model()),
      factorial(4), inner(), twice())
print("live", all(f.__globals__ is globals() for f in (scale, bump, factorial, inner, twice)))
print("shared", table["scale"] is scale)
""")
    out = compute_then_hit(project)
    assert "after 5 10 [1] 10 6 Model:< 24 8 50" in out
    assert "live True" in out and "shared True" in out


def test_defaults_and_closures_of_restored_functions_hold_the_live_input_objects(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
CONFIG = {"n": 1}
def make(cfg):
    def get():
        return cfg["n"]
    return get
with sc.checkpoint("a"):
    get = make(CONFIG)
    def f(c=CONFIG, *, k=CONFIG):
        return c["n"] + k["n"]
    y = get(), f()
CONFIG["n"] = 7
print("after", y, get(), f(), f.__defaults__[0] is CONFIG)
""")
    assert "after (1, 2) 7 14 True" in compute_then_hit(project)


def test_a_restored_function_is_the_function_the_computing_run_had(project: Project) -> None:
    # Rebuilt over the live globals (entry/main_functions.py), a function keeps everything else
    # the computing run's had: attributes, docstring, names, annotations, keyword defaults, a
    # decorator's closure and __wrapped__, a closure cell filled after the inner function was
    # made, a recursive closure, a generator, a class's methods and static methods.
    project.write("script.py", """
import functools
import statecache as sc
FACTOR = 2
with sc.checkpoint("a"):
    def deco(f):
        @functools.wraps(f)
        def w(*a, **k):
            return f(*a, **k) + 1
        return w
    @deco
    def g(x, *, y=3):
        "doc of g"
        return x * FACTOR + y
    g.calls = 7
    def h(a: int, b: "str" = "s", *, c: float = 1.5) -> list:
        "doc of h"
        return [a, b, c]
    h.tag = {"t": 1}
    class K:
        def m(self, v=FACTOR):
            return v
        @staticmethod
        def s():
            return FACTOR
    def outer():
        def later():
            return z
        r = later
        z = 5
        return r
    later = outer()
    def selfref():
        def rec(n):
            return 0 if n == 0 else 1 + rec(n - 1)
        return rec
    rec = selfref()
    gen = lambda: (yield FACTOR)
FACTOR = 10
print("g", g(1), g.calls, g.__doc__, g.__qualname__, g.__wrapped__.__qualname__, g.__module__,
      g.__kwdefaults__, g.__wrapped__.__kwdefaults__, g.__wrapped__.__globals__ is globals())
print("h", h(1), h.__annotations__, h.__defaults__, h.__kwdefaults__, h.tag, h.__qualname__,
      h.__name__, h.__doc__)
print("K", K().m(), K.s(), K.m.__qualname__, K.m.__defaults__, K.m.__globals__ is globals())
print("closures", later(), later.__qualname__, rec(3), rec.__qualname__, list(gen()))
""")
    out = compute_then_hit(project)
    assert "g 14 7 doc of g g g __main__ None {'y': 3} True" in out
    assert ("h [1, 's', 1.5] {'a': <class 'int'>, 'b': 'str', 'c': <class 'float'>, "
            "'return': <class 'list'>} ('s',) {'c': 1.5} {'t': 1} h h doc of h") in out
    assert "K 2 10 K.m (2,) True" in out
    assert "closures 5 outer.<locals>.later 3 selfref.<locals>.rec [10]" in out


def test_a_function_defined_by_the_block_reaches_a_submodule_the_block_imported(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
with sc.checkpoint("a"):
    import xml.dom.minidom
    def tag(text):
        return xml.dom.minidom.parseString(text).documentElement.tagName
print("tag", tag("<root/>"))
""")
    assert "tag root" in compute_then_hit(project)


def test_a_function_of_a_factory_defined_before_the_block_sees_later_globals(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
LIMIT = 1
def make(k):
    def clip(v):
        return min(v * k, LIMIT)
    return clip
with sc.checkpoint("a"):
    clip = make(3)
LIMIT = 100
print("clip", clip(5))
""")
    assert "clip 15" in compute_then_hit(project)


@pytest.mark.parametrize("opening", [
    'tempfile.NamedTemporaryFile("w+")',
    'tempfile.TemporaryFile("w+")',
    'tempfile.SpooledTemporaryFile(mode="w+")',
    'codecs.open("notes.txt", "w", "utf-8")',
])
def test_a_closed_file_wrapper_left_bound_after_the_block_hits(project: Project, opening: str) -> None:
    project.write("script.py", f"""
import codecs, tempfile
import statecache as sc
with sc.checkpoint("a"):
    with {opening} as f:
        f.write("x")
    y = "wrote"
print(y, "f" in globals())
""")
    first = project.run("script.py")
    assert first.computed("a") and "wrote True" in first.stdout
    second = project.run("script.py")
    assert second.hit("a") and "warning" not in second.stderr.lower(), second.stderr
    assert "wrote False" in second.stdout  # unbound after a hit, as a closed plain file is


def test_an_open_temporary_file_left_bound_is_not_saved_and_says_so(project: Project) -> None:
    project.write("script.py", """
import tempfile
import statecache as sc
with sc.checkpoint("a"):
    f = tempfile.NamedTemporaryFile("w+")
    f.write("x")
    y = 1
print(y, "f" in globals())
""")
    first = project.run("script.py")
    assert "a file open for writing" in first.stderr and "'f'" in first.stderr
    second = project.run("script.py")
    assert second.hit("a") and "1 False" in second.stdout


def test_a_block_defining_a_function_after_its_data_pickles_the_data_once(project: Project) -> None:
    # plain pickle would refuse the function only after pickling all the rest: the save goes
    # straight to cloudpickle, so an object's __getstate__ runs once per save, not twice
    project.write("script.py", """
import statecache as sc
class Table:
    def __init__(self, rows):
        self.rows = rows
    def __getstate__(self):
        with open("pickled.log", "a") as log:
            log.write("x")
        return self.__dict__
with sc.checkpoint("a"):
    table = Table(list(range(1000)))
    def total():
        return sum(table.rows)
print("total", total())
""")
    assert "total 499500" in project.run("script.py").stdout
    assert (project.root / "pickled.log").read_text() == "x"
    second = project.run("script.py")
    assert second.hit("a") and "total 499500" in second.stdout


# -- in-process: the pickler chosen per state --------------------------------------------------


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


def test_plain_state_pickles_with_no_python_level_reducer(project: Project) -> None:
    # a million small instances cost what the C pickler costs: no override of ours is called
    # per object unless the state holds code of __main__ or torch is loaded
    project.write("check.py", """
import io, pickle
from statecache.entry.pickling import new_pickler
class Defined: pass
print("plain", type(new_pickler("pickle", frozenset({"points"}), io.BytesIO(), None)) is pickle.Pickler)
print("main class", hasattr(new_pickler("pickle", frozenset({"Defined"}), io.BytesIO(), None), "reducer_override"))
""")
    out = project.run("check.py").stdout
    assert "plain True" in out and "main class True" in out


def test_the_plain_pickler_round_trips_instances_and_shared_references() -> None:
    shared = [Point(1), Point(2)]
    state = {"points": shared, "again": shared, "nested": {"p": (Point(3), {1, 2}), "b": b"x" * 99}}

    class Sink(io.BytesIO):
        pos = 0

        def write(self, data: object) -> int:
            n = super().write(data)  # type: ignore[arg-type]
            self.pos += n
            return n

        def finish(self) -> None:
            pass

    done = serialise(state, Sink)
    assert done.pickler == "pickle"
    stream = io.BytesIO(done.sink.getvalue())
    unpickler = pickle.Unpickler(stream, buffers=iter(done.buffers))
    loaded = {name: unpickler.load() for name in state}
    assert loaded == state
    assert loaded["points"] is loaded["again"]
