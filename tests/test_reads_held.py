"""Compiled readers (polars, pyarrow) are wrapped in their module, so whatever holds one sees
its reads; a wrapper returns and raises what its reader does. Real scripts in subprocesses,
run twice or more, compared with a fresh run under ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import pytest
from conftest import Project
from test_redteam import HEAD, assert_recomputes, first

HELD = {
    "partial": "import functools\nread = functools.partial(csv.read_csv)\ndef load(p):\n    return read(p)\n",
    "dispatch-dict": "LOADERS = {'.csv': csv.read_csv}\ndef load(p):\n    return LOADERS['.csv'](p)\n",
    "default-argument": "def load(p, reader=csv.read_csv):\n    return reader(p)\n",
}


@pytest.mark.parametrize("holder", list(HELD))
def test_a_pyarrow_reader_held_by_a_helper_module_is_seen(project: Project, holder: str) -> None:
    # pyarrow looks at the path with os.path before it opens it, which the wrapped os.stat
    # notes, even for the original reader (the polars holders: tests/test_stale_hunt.py)
    pytest.importorskip("pyarrow")
    project.write("io_utils.py", "from pyarrow import csv\n" + HELD[holder])
    project.write("d.csv", "x\n1\n")
    project.write("script.py", HEAD + "from io_utils import load\n"
                  "with sc.checkpoint('a'):\n    y = load('d.csv')['x'].to_pylist()\nprint(y)\n")
    first(project, "script.py")
    assert project.run("script.py").hit("a")
    project.write("d.csv", "x\n22\n")
    assert_recomputes(project, "script.py")


@pytest.mark.parametrize("reader", ["polars", "pyarrow.csv"])
def test_a_reader_taken_before_import_statecache_by_a_module_name_is_seen(project: Project, reader: str) -> None:
    # the name is pointed at the wrapper at the first computing block (README: a reader taken
    # before import statecache and held elsewhere than a name keeps the original)
    pytest.importorskip(reader)
    column = "['x'].to_list()" if reader == "polars" else "['x'].to_pylist()"
    project.write("d.csv", "x\n1\n")
    project.write("script.py", f"from {reader} import read_csv\nimport statecache as sc\n"
                  f"with sc.checkpoint('a'):\n    y = read_csv('d.csv'){column}\nprint(y)\n")
    first(project, "script.py")
    assert project.run("script.py").hit("a")
    project.write("d.csv", "x\n22\n")
    assert_recomputes(project, "script.py")


CHECKS = """
import inspect
for module, name in (("polars", "read_csv"), ("pyarrow.csv", "read_csv"), ("pyarrow.parquet", "read_table")):
    mod = __import__(module, fromlist=[name])
    wrapper = getattr(mod, name)
    original = wrapper.__wrapped__
    assert wrapper is not original and wrapper.__name__ == original.__name__, module
    assert wrapper.__doc__ == original.__doc__ and inspect.signature(wrapper) == inspect.signature(original)
    errors = []
    for f in (wrapper, original):
        try:
            f("missing.csv")
        except Exception as e:
            errors.append((type(e), str(e)))
    assert len(errors) == 2 and errors[0] == errors[1], errors
import polars as pl
print(pl.read_csv("d.csv").equals(pl.read_csv.__wrapped__("d.csv")))
"""


@pytest.mark.parametrize("when", [
    "after-a-computing-block",
    pytest.param("at-import"),  # nothing computes before the checks
])
def test_a_wrapped_reader_keeps_its_name_docs_signature_results_and_errors(project: Project, when: str) -> None:
    pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    project.write("d.csv", "x\n1\n")
    block = "with sc.checkpoint('a'):\n    y = 1\n" if when != "at-import" else ""
    project.write("script.py", HEAD + "import polars, pyarrow.csv, pyarrow.parquet\n" + block + CHECKS)
    run = project.run("script.py")
    assert run.stdout == "True\n", run.stderr


# stands in for torch: UntypedStorage (a class defined in Python) inherits from_file from
# compiled code, which reads the file where no audit event says so (here: libc's fopen)
FAKE_TORCH = '''
import ctypes
_libc = ctypes.CDLL(None)
_libc.fopen.restype = ctypes.c_void_p
_libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
_libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
_libc.fclose.argtypes = [ctypes.c_void_p]

class StorageBase:
    @classmethod
    def from_file(cls, filename, shared=False, size=0):
        """Read size bytes of filename."""
        f = _libc.fopen(filename.encode(), b"rb")
        if not f:
            raise FileNotFoundError(filename)
        buf = ctypes.create_string_buffer(size)
        _libc.fread(buf, 1, size, f)
        _libc.fclose(f)
        return cls(buf.raw)

class UntypedStorage(bytes, StorageBase):
    pass
'''


def test_a_class_method_inherited_from_compiled_code_is_seen_and_stays_the_classes(project: Project) -> None:
    project.write("vendor/site-packages/torch.py", FAKE_TORCH)  # installed code, not the user's
    (project.root / "d.bin").write_bytes(b"abc")
    project.write("script.py", HEAD + """
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor", "site-packages"))
import torch
class Mine(torch.UntypedStorage):
    pass
with sc.checkpoint('a'):
    y = bytes(torch.UntypedStorage.from_file('d.bin', False, 3))
s = Mine.from_file('d.bin', size=3)
try:
    torch.UntypedStorage.from_file('missing.bin', False, 3)
except FileNotFoundError as e:
    missing = str(e)
print(y, type(s).__name__, torch.UntypedStorage.from_file.__doc__, missing)
""")
    computed = first(project, "script.py")
    assert computed.stdout == "b'abc' Mine Read size bytes of filename. missing.bin\n", computed.stderr
    assert project.run("script.py").hit("a")
    (project.root / "d.bin").write_bytes(b"xyz")
    assert_recomputes(project, "script.py")
