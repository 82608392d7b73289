"""Cache-key fingerprints: equal inputs give equal keys (also across processes and hash seeds),
any change that could change a result gives a different key, and what cannot be fingerprinted
is refused with a message naming it and the ``ignore=`` fix."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import math
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xxhash

import statecache
from statecache._errors import FingerprintError, StateCacheError
from statecache.key.astdigest import ast_digest
from statecache.key.hashing import digest, file_digest
from statecache.key.provenance import is_user_file
from statecache.key.values import Fingerprinter
from statecache.key.versions import package_version

ROOT = Path(__file__).resolve().parents[1]


def fp(obj: object, label: str = "x") -> bytes:
    return Fingerprinter().value(obj, label)


def run_script(directory: Path, files: dict[str, str], seed: int | str = 0) -> list[str]:
    """Write ``files`` into ``directory`` and run ``main.py`` there in a fresh interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (directory / name).write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=str(seed))
    proc = subprocess.run(
        [sys.executable, str(directory / "main.py")],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


PRINT_FP = """
from statecache.key.values import Fingerprinter
def show(*objs):
    for o in objs:
        print(Fingerprinter().value(o, "x").hex())
"""


# ----------------------------------------------------------------- primitives


def test_digest_is_length_prefixed_xxh3_128():
    assert len(digest(b"a")) == 16
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert digest(b"abc") != digest(b"ab", b"c")
    assert digest() != digest(b"")
    assert digest(b"x", memoryview(b"yz")) == digest(b"x", b"yz")


def test_ast_digest_ignores_layout_and_comments_but_not_meaning():
    a = ast.parse("def f(x):\n    # note\n    return x + 1\n")
    b = ast.parse("\n\ndef f( x ):\n\n    return (x+1)  # other\n")
    c = ast.parse("def f(x):\n    return x + 2\n")
    d = ast.parse("def f(x):\n    return x + 1.0\n")
    e = ast.parse("def f(y):\n    return y + 1\n")
    assert ast_digest(a) == ast_digest(b)
    assert len({ast_digest(a), ast_digest(c), ast_digest(d), ast_digest(e)}) == 4
    assert ast_digest(a.body) == ast_digest(b.body)
    assert ast_digest(ast.parse("x = 'a'")) == ast_digest(ast.parse('x = u"a"'))
    assert ast_digest(ast.parse("x = 'a'")) != ast_digest(ast.parse("x = b'a'"))


def test_is_user_file_separates_own_code_from_interpreter_and_packages(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("x = 1\n")
    assert is_user_file(str(script))
    assert is_user_file(__file__)
    assert is_user_file("<ipython-input-3-0123abcd>")
    assert not is_user_file(os.__file__)
    assert not is_user_file(np.__file__)
    assert not is_user_file(pytest.__file__)
    assert not is_user_file(statecache.__file__)  # even from an editable install
    for pseudo in ("<string>", "<stdin>", "<frozen importlib._bootstrap>", "", None):
        assert not is_user_file(pseudo)
    assert not is_user_file("/somewhere/venv/lib/python3.11/site-packages/pkg/mod.py")
    assert not is_user_file("/usr/lib/python3/dist-packages/pkg/mod.py")
    assert is_user_file(str(script))  # cached answer is the same


def test_package_version():
    assert package_version("numpy") == np.__version__
    assert package_version("numpy.linalg") == np.__version__
    assert package_version("dill") == importlib.metadata.version("dill")
    assert package_version("os") == ""
    assert package_version("builtins") == ""
    assert package_version("json.decoder") == ""


def test_file_digest_streams_content(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(3 * (1 << 20) + 123)
    path.write_bytes(data)
    assert file_digest(str(path)) == xxhash.xxh3_128(data).hexdigest()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert file_digest(str(path)) != xxhash.xxh3_128(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_digest(str(empty)) == xxhash.xxh3_128(b"").hexdigest()


def test_scalars_by_type_and_value():
    values = [1, 1.0, True, "1", b"1", bytearray(b"1"), 1 + 0j, None, 0, False, 0.0, -0.0, ""]
    fps = [fp(v) for v in values]
    assert len(set(fps)) == len(values)
    assert fp(2**200) == fp(2**200) != fp(2**200 + 1)
    assert fp(-(2**70)) != fp(2**70)
    nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert math.isnan(nan)
    assert fp(nan) == fp(struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0])
    assert fp("é\ud800") == fp("é\ud800")  # lone surrogates do not break it
    assert len(fp("a")) == 16


def test_containers_recursive_with_type_and_order():
    assert fp([1, 2]) == fp([1, 2])
    assert fp([1, 2]) != fp((1, 2))
    assert fp([1, 2]) != fp([2, 1])
    assert fp([[1], 2]) != fp([1, [2]])
    assert fp({"a": 1, "b": 2}) == fp({"a": 1, "b": 2})
    assert fp({"a": 1}) != fp({"a": 2})
    # Insertion order is observable, so it is another input (a miss, never a stale hit).
    assert fp({"a": 1, "b": 2}) != fp({"b": 2, "a": 1})
    assert fp({1, 2, 3}) == fp({3, 2, 1})
    assert fp(set(["x", "y", "z"])) == fp(set(["z", "y", "x"]))
    assert fp({1, 2}) != fp(frozenset({1, 2})) != fp([1, 2])
    assert fp({1, 2}) != fp({1, 3})


def test_cyclic_and_shared_containers_terminate():
    a: list = [1]
    a.append(a)
    b: list = [1]
    b.append(b)
    assert fp(a) == fp(b)
    d: dict = {}
    d["self"] = d
    fp(d)
    x: list = []
    for _ in range(60):  # 2**60 paths, 60 distinct lists
        x = [x, x]
    fp(x)


def test_in_place_mutation_changes_the_fingerprint():
    items = [1, 2]
    before = fp(items)
    items.append(3)
    assert fp(items) != before
    cfg = {"lr": 0.1}
    before = fp(cfg)
    cfg["lr"] = 0.2
    assert fp(cfg) != before
    arr = np.zeros(1000)
    before = fp(arr)
    arr[500] = 1.0
    assert fp(arr) != before
    obj = Plain()
    before = fp(obj)
    obj.value = 2
    assert fp(obj) != before
    obj.items.append(1)
    assert fp(obj) != fp(Plain())


class Plain:
    def __init__(self):
        self.value = 1
        self.items: list = []
        self.tags = {"b", "a"}


# ---------------------------------------------------------------------- numpy


def test_numpy_arrays_by_dtype_shape_strides_and_bytes():
    assert fp(np.arange(10.0)) == fp(np.arange(10.0))
    assert fp(np.zeros((2, 3), np.float64)) != fp(np.zeros((2, 6), np.float32))
    assert fp(np.zeros((2, 3))) != fp(np.zeros((3, 2)))
    assert fp(np.zeros(4, "<i4")) != fp(np.zeros(4, ">i4"))
    c = np.arange(12.0).reshape(3, 4)
    f = np.asfortranarray(c)
    assert np.array_equal(c, f)
    assert fp(c) != fp(f)  # strides are part of the key
    assert fp(f) == fp(np.asfortranarray(np.arange(12.0).reshape(3, 4)))
    view = np.arange(100.0)[::3]
    assert not view.flags.c_contiguous
    assert fp(view) == fp(np.arange(100.0)[::3])
    changed = np.arange(100.0)
    changed[3] = -1
    assert fp(changed[::3]) != fp(view)
    assert fp(np.arange(100.0)[::-1]) != fp(np.arange(100.0)[::1])
    big_view = np.arange(3_000_000, dtype=np.float64).reshape(3000, 1000)[:, ::2]
    assert fp(big_view) == fp(np.arange(3_000_000, dtype=np.float64).reshape(3000, 1000)[:, ::2])
    assert fp(np.float64(1.0)) != fp(1.0)
    assert fp(np.float64(1.0)) != fp(np.float32(1.0))
    assert fp(np.int64(7)) == fp(np.int64(7)) != fp(np.int64(8))
    assert fp(np.array(5)) != fp(np.array([5]))
    column = np.arange(4.0)[:, None]  # stride 0 on the length-1 axis
    assert fp(column) == fp(np.arange(4.0).reshape(4, 1))
    assert fp(np.zeros(0)) != fp(np.zeros((0, 3)))


def test_numpy_structured_datetime_and_object_arrays():
    s1 = np.zeros(3, dtype=[("a", "<f8"), ("b", "<i8")])
    s2 = np.zeros(3, dtype=[("x", "<f8"), ("b", "<i8")])
    assert fp(s1) != fp(s2)  # field names count, not only the byte layout
    assert fp(np.zeros(2, "M8[s]")) != fp(np.zeros(2, "M8[ns]"))
    o1 = np.array([[1], "a", None], dtype=object)
    o2 = np.array([[1], "a", None], dtype=object)
    assert fp(o1) == fp(o2)
    o2[0].append(2)
    assert fp(o1) != fp(o2)


def test_numpy_inside_objects_and_masked_arrays():
    a, b = Plain(), Plain()
    a.value, b.value = np.arange(5.0), np.arange(5.0)
    assert fp(a) == fp(b)
    b.value[0] = 9
    assert fp(a) != fp(b)
    m1 = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    m2 = np.ma.masked_array([1.0, 2.0], mask=[False, False])
    assert fp(m1) != fp(m2)


def test_array_throughput_1gb(capsys):
    """Hashing speed of a 1 GB float64 array (printed, not asserted: machines differ)."""
    arr = np.full(1 << 27, 1.5)  # 1 GiB
    f = Fingerprinter()
    f.value(arr, "arr")
    best = min(_timed(f.value, arr) for _ in range(3))
    with capsys.disabled():
        print(f"\nfingerprint of a 1 GiB float64 array: {arr.nbytes / best / 1e9:.1f} GB/s")
    del arr


def _timed(fn, arg) -> float:
    t0 = time.perf_counter()
    fn(arg, "arr")
    return time.perf_counter() - t0


# --------------------------------------------------------------------- pandas


def _frame(value: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [1, 2, value], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]},
        index=pd.Index(["r1", "r2", "r3"], name="row"),
    )


def test_pandas_equal_frames_equal_changed_cell_differs():
    assert fp(_frame()) == fp(_frame())
    assert fp(_frame()) != fp(_frame(4))
    df = _frame()
    before = fp(df)
    df.iloc[0, 2] = 9.5
    assert fp(df) != before
    assert fp(_frame().rename(columns={"a": "A"})) != fp(_frame())
    assert fp(_frame()["c"]) == fp(_frame()["c"])
    assert fp(_frame()["c"]) != fp(_frame()["a"])


# ------------------------------------------------------------------ functions


def test_user_function_code_defaults_and_closures():
    def make(k, default=1):
        def inner(x, y=default):
            return x * k + y

        return inner

    assert fp(make(2)) == fp(make(2))
    assert fp(make(2)) != fp(make(3))  # closure cell by value
    assert fp(make(2, 1)) != fp(make(2, 5))  # default by value

    def a(x):
        return x + 1

    def b(x):
        return x + 2

    assert fp(a) != fp(b)
    assert fp(lambda x: x) != fp(lambda x: -x)


def test_bound_methods_and_partials():
    p, q = Plain(), Plain()
    q.value = 5
    assert fp(p.__init__) != fp(q.__init__)
    assert fp(functools.partial(int, "10", base=2)) != fp(functools.partial(int, "10", base=3))
    assert fp(functools.partial(int, "10")) == fp(functools.partial(int, "10"))
    assert fp([].append) != fp([1].append)


def test_library_code_counts_by_name_and_version():
    assert fp(os.path.join) == fp(os.path.join)
    assert fp(os.path.join) != fp(os.path.split)
    assert fp(np.mean) != fp(np.median)
    assert fp(len) != fp(abs)
    assert fp(np) == fp(np)
    assert fp(pd.DataFrame) != fp(pd.Series)


def test_lru_cached_user_function_counts_by_its_code():
    @functools.cache
    def one(x):
        return x + 1

    @functools.cache
    def two(x):
        return x + 2

    assert fp(one) != fp(two)


def test_recursion_terminates_and_is_order_independent(tmp_path):
    lines = run_script(
        tmp_path,
        {
            "main.py": PRINT_FP
            + """
def fact(n):
    return 1 if n < 2 else n * fact(n - 1)

def even(n):
    return True if n == 0 else odd(n - 1)

def odd(n):
    return False if n == 0 else even(n - 1)

# A dense cycle (every function calls every other): must stay linear, not explode.
def p0(n): return n and p1(n-1) + p2(n-1) + p3(n-1) + p4(n-1) + p5(n-1)
def p1(n): return n and p0(n-1) + p2(n-1) + p3(n-1) + p4(n-1) + p5(n-1)
def p2(n): return n and p0(n-1) + p1(n-1) + p3(n-1) + p4(n-1) + p5(n-1)
def p3(n): return n and p0(n-1) + p1(n-1) + p2(n-1) + p4(n-1) + p5(n-1)
def p4(n): return n and p0(n-1) + p1(n-1) + p2(n-1) + p3(n-1) + p5(n-1)
def p5(n): return n and p0(n-1) + p1(n-1) + p2(n-1) + p3(n-1) + p4(n-1)

f1 = Fingerprinter()
first = [f1.value(o, "x").hex() for o in (even, odd, p3)]
f2 = Fingerprinter()
second = [f2.value(o, "x").hex() for o in (p3, odd, even)][::-1]
print(first == second)
show(fact, even, odd, p0)
""",
        },
    )
    assert lines[0] == "True"
    assert len(set(lines[1:])) == 4


def _chain_files(helper_body: str, const: str = "10", extra: str = "") -> dict[str, str]:
    return {
        "helpers.py": f"""
SCALE = {const}

def helper(x):
    {helper_body}

def unrelated():
    return 0
{extra}""",
        "main.py": PRINT_FP
        + """
from helpers import helper
import helpers

def middle(x):
    return helper(x) * 2

def top(x):
    return middle(x) + 1

def uses_module(x):
    return helpers.SCALE * x

show(top, uses_module, helpers)
""",
    }


def test_helper_change_in_a_chain_of_functions_changes_the_key(tmp_path):
    base = run_script(tmp_path / "a", _chain_files("return x + SCALE"))
    again = run_script(tmp_path / "b", _chain_files("return x + SCALE"))
    edited = run_script(tmp_path / "c", _chain_files("return x - SCALE"))
    assert base == again
    assert base[0] != edited[0]  # top -> middle -> helper (another file) changed
    assert base[2] != edited[2]  # the module itself


def test_comment_and_blank_line_change_in_a_helper_does_not(tmp_path):
    base = run_script(tmp_path / "a", _chain_files("return x + SCALE"))
    commented = run_script(
        tmp_path / "b",
        _chain_files("# a comment\n\n    return x + SCALE   # trailing", extra="\n\n# end\n"),
    )
    assert base == commented


def test_module_constant_change_changes_the_key(tmp_path):
    base = run_script(tmp_path / "a", _chain_files("return x + SCALE"))
    changed = run_script(tmp_path / "b", _chain_files("return x + SCALE", const="11"))
    assert base[0] != changed[0]  # helper reads SCALE
    assert base[1] != changed[1]  # helpers.SCALE read through the module


def test_runtime_change_of_a_global_read_by_a_helper(tmp_path):
    lines = run_script(
        tmp_path,
        {
            "main.py": PRINT_FP
            + """
import numpy as np
TABLE = np.arange(10)
LIMITS = {"hi": 3}

def lookup(i):
    return TABLE[i] + LIMITS["hi"]

def outer(i):
    return lookup(i)

show(outer)
TABLE[4] = 100
show(outer)
LIMITS["hi"] = 4
show(outer)
""",
        },
    )
    assert len(set(lines)) == 3


class Model:
    scale = 2

    def predict(self, x):
        return x * self.scale


def test_class_and_instance_fingerprints_follow_the_class_code(tmp_path):
    files_v1 = {
        "models.py": """
class Base:
    def norm(self, x):
        return x

class Model(Base):
    factor = 2
    def __init__(self, w):
        self.w = w
    def predict(self, x):
        return self.norm(x) * self.w * self.factor
    @property
    def double(self):
        return 2 * self.w
    @staticmethod
    def make():
        return Model(1)
""",
        "main.py": PRINT_FP
        + """
from models import Model
show(Model(3), Model, Model.make)
""",
    }
    base = run_script(tmp_path / "a", files_v1)
    same = run_script(tmp_path / "b", files_v1)
    method = dict(
        files_v1, **{"models.py": files_v1["models.py"].replace("* self.factor", "+ self.factor")}
    )
    base_cls = dict(
        files_v1, **{"models.py": files_v1["models.py"].replace("return x\n", "return -x\n")}
    )
    attr = dict(
        files_v1, **{"models.py": files_v1["models.py"].replace("factor = 2", "factor = 3")}
    )
    prop = dict(
        files_v1, **{"models.py": files_v1["models.py"].replace("2 * self.w", "3 * self.w")}
    )
    assert base == same
    for variant in (method, base_cls, attr, prop):
        out = run_script(tmp_path / str(len(str(variant))), variant)
        assert out[0] != base[0]  # the instance: its class's code changed
        assert out[1] != base[1]
    assert Fingerprinter().value(Model(), "m") != Fingerprinter().value(Plain(), "m")


def test_class_attribute_that_cannot_be_fingerprinted_falls_back_to_its_type():
    class WithLock:
        lock = threading.Lock()
        __slots__ = ("a",)

        def get(self):
            return 1

    assert fp(WithLock) == fp(WithLock)


def test_dataclass_enum_namedtuple_are_fingerprinted():
    import dataclasses
    import enum
    import typing

    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 0
        tags: list = dataclasses.field(default_factory=list)

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    class Pair(typing.NamedTuple):
        a: int
        b: str = "x"

    assert fp(Point(1)) == fp(Point(1)) != fp(Point(2))
    assert fp(Color.RED) != fp(Color.BLUE)
    assert fp(Pair(1)) != fp(Pair(2))
    assert fp({Color.RED, Color.BLUE}) == fp({Color.BLUE, Color.RED})


# --------------------------------------------------------------- determinism


def test_deterministic_across_processes_and_hash_seeds(tmp_path):
    files = {
        "helpers.py": """
KEYWORDS = {"alpha", "beta", "gamma", "delta"}

def is_kw(word):
    return word in KEYWORDS or word in {"x", "y", "z"}
""",
        "main.py": PRINT_FP
        + """
import numpy as np
import pandas as pd
from helpers import is_kw

class Record:
    def __init__(self):
        self.names = {"x", "y", "zeta", "omega"}
        self.frozen = frozenset({"p", "q", ("r", 1)})
        self.nested = {"s": {"t", "u"}, "arr": np.arange(4.0)}

def pipeline(words):
    return [w for w in words if is_kw(w)]

show(
    {"apple", "banana", "cherry", "date", "elderberry"},
    {"k1": {"a", "b"}, "k2": [1, 2.5, None]},
    Record(),
    pipeline,
    is_kw,
    {is_kw, pipeline},
    pd.DataFrame({"a": [1, 2], "b": ["u", "v"]}),
    frozenset({frozenset({"a", "b"}), frozenset({"c"})}),
)
""",
    }
    first = run_script(tmp_path / "a", files, seed=1)
    second = run_script(tmp_path / "a", files, seed=2)
    third = run_script(tmp_path / "b", files, seed="random")
    assert len(first) == 8
    assert first == second == third


# -------------------------------------------------------------------- errors


def test_unfingerprintable_inputs_raise_with_label_type_and_fix():
    cases = [
        (x for x in range(3)),
        threading.Lock(),
        [1, threading.Lock()],
        open(__file__),  # noqa: SIM115 - the open file is the input under test
    ]
    try:
        for value in cases:
            with pytest.raises(FingerprintError) as info:
                Fingerprinter().value(value, "argument 'src' of load()")
            message = str(info.value)
            assert "argument 'src' of load()" in message
            assert type(value).__name__ in message
            assert "ignore=[\"argument 'src' of load()\"]" in message
            # an iterator the block draws from cannot be restored: ignoring it would be stale
            iterator = hasattr(value, "__next__")
            assert ("make it inside the block" in message and "Only if the block never draws" in message) == iterator
            assert isinstance(info.value, StateCacheError)
    finally:
        cases[-1].close()


LOCK = threading.Lock()


def reads_lock():
    return LOCK


def test_unfingerprintable_global_of_a_helper_names_the_global():
    def top():
        return reads_lock()

    with pytest.raises(FingerprintError) as info:
        Fingerprinter().value(top, "top")
    message = str(info.value)
    assert "'LOCK'" in message and "reads_lock()" in message and "ignore=['LOCK']" in message
    assert Fingerprinter(ignore=["LOCK"]).value(top, "top") == Fingerprinter(ignore=["LOCK"]).value(
        top, "top"
    )


def test_import_is_light():
    code = (
        "import sys, statecache.key.values\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'cloudpickle', 'dill') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_import_statecache_loads_no_stdlib_module_it_does_not_need_yet():
    """``import statecache`` (in every script, hit or not) loads what installs its watches,
    not the modules of a lookup, a save or a forked worker's inbox (json cost ~1.5 ms)."""
    heavy = ("json", "ast", "inspect", "tempfile", "dis", "tokenize", "linecache", "importlib.metadata",
             "concurrent.futures", "mmap", "pickle")
    # what the interpreter loads at start-up itself is not statecache's (3.13 loads linecache)
    code = ("import sys\nbefore = set(sys.modules)\nimport statecache\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_library_wrappers_of_user_functions_follow_the_user_code():
    import contextlib

    @contextlib.contextmanager
    def opened_a():
        yield 1

    @contextlib.contextmanager
    def opened_b():
        yield 2

    assert fp(opened_a) != fp(opened_b)

    def impl_int_a(x):
        return x + 1

    def impl_int_b(x):
        return x + 2

    def make(impl):
        @functools.singledispatch
        def f(x):
            return x

        f.register(int)(impl)
        return f

    assert fp(make(impl_int_a)) == fp(make(impl_int_a))
    assert fp(make(impl_int_a)) != fp(make(impl_int_b))


def test_a_restored_value_keys_like_the_computed_one():
    """The run after a restore must hit downstream checkpoints: fingerprints survive pickling."""
    import cloudpickle

    obj = Plain()
    obj.value = {"value": "items", "arr": np.arange(6.0).reshape(2, 3), "tags": {"x", "value"}}
    obj.items = ["value", "tags", ("value", 1)]
    frame = _frame()
    frame["d"] = frame["a"] * 2  # a second block
    values = [
        obj,
        frame,
        np.asfortranarray(np.ones((3, 4))),
        {"k": [1, "k"]},
        {"s", "t"},
        [pd.Series([1.0, 2.0], index=["a", "b"])],
    ]
    for value in values:
        for loads, dumps in ((pickle_loads, pickle_dumps), (cloudpickle.loads, cloudpickle.dumps)):
            assert fp(loads(dumps(value))) == fp(value), type(value)


def pickle_dumps(obj: object) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=5)


def pickle_loads(data: bytes) -> object:
    import pickle

    return pickle.loads(data)


def _lazy_files(body: str, deep: str = "return 1") -> dict[str, str]:
    return {
        "lazy.py": f"import deep\n\ndef g():\n    {body}\n",
        "deep.py": f"def h():\n    {deep}\n",
        "main.py": PRINT_FP
        + """
def f():
    import lazy
    from lazy import g
    return lazy.g() + g()

show(f)
f()  # now lazy and deep are imported: the key must not depend on that
show(f)
""",
    }


def test_module_imported_inside_a_function_counts(tmp_path):
    base = run_script(tmp_path / "a", _lazy_files("return 1"))
    same = run_script(tmp_path / "b", _lazy_files("return 1  # comment"))
    edited = run_script(tmp_path / "c", _lazy_files("return 2"))
    deeper = run_script(tmp_path / "d", _lazy_files("return 1", deep="return 2"))
    assert base[0] == base[1]
    assert base == same
    assert base[0] != edited[0]
    assert base[0] != deeper[0]


def test_code_from_python_c_counts_by_content():
    def run(body: str) -> str:
        code = (
            "from statecache.key.values import Fingerprinter\n"
            f"def helper():\n    {body}\n"
            "def top():\n    return helper()\n"
            "print(Fingerprinter().value(top, 'top').hex())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    assert run("return 1") == run("return 1")
    assert run("return 1") != run("return 2")


def test_a_function_calling_a_cached_setup_function(tmp_path):
    """statecache's own wrapper counts by version; the user function inside it by its code."""

    def files(body: str) -> dict[str, str]:
        return {
            "main.py": PRINT_FP
            + f"""
import statecache

@statecache.cached_setup
def load(n=3):
    {body}

def uses():
    return load(4)

show(uses)
"""
        }

    # One directory: the wrapper's closure holds the decorated function's file:line.
    base = run_script(tmp_path, files("return list(range(n))"), seed=1)
    same = run_script(tmp_path, files("return list(range(n))"), seed=2)
    edited = run_script(tmp_path, files("return list(range(n + 1))"))
    assert base == same != edited
