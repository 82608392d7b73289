"""A restored object is the same kind of object as the computed one (issue 11, classes 6 and 8):
a function the block defines inside a function closes over that function's live variables; a
view the block takes of an input array or tensor is a view of the live input; a small array
or tensor owns its data (resizable in place). Each script exercises several cases at once and
prints them all; the hit must print what a fresh run (``STATECACHE_DISABLE=1``) prints, and an
unchanged rerun hits again."""

from __future__ import annotations

import sys
import types

import pytest
from conftest import Project
from test_redteam import HEAD, fresh


def assert_hits_as_fresh(project: Project, script: str, names: tuple[str, ...]) -> str:
    """The script computes, then hits every checkpoint and prints what a fresh run prints
    (returned), then hits again."""
    first = project.run(script)
    assert all(first.computed(n) for n in names), first.stderr
    hit = project.run(script)
    assert all(hit.hit(n) for n in names), hit.stderr
    expected = fresh(project, script)
    assert hit.stdout == expected, hit.stderr
    again = project.run(script)
    assert all(again.hit(n) for n in names) and again.stdout == expected, again.stderr
    return expected


# -- closures over the variables of the function holding the block --------------------------

CLOSURES = """
def main(arg):
    k = 2
    count = 0
    data = [1]
    alias = data
    shared = 10
    with sc.checkpoint('a'):
        def f():
            return k * 10 + arg
        def bump():
            nonlocal count
            count += 1
            return count
        def add(x):
            data.append(x)
        def get():
            return shared
        def put(v):
            nonlocal shared
            shared = v
        def make(k):  # its own k: never main's
            def own():
                return k
            return own
        own = make(7)
        callbacks = {'f': f}
        y = f()
        z = bump()
        add(2)
        put(11)
    k = 5
    arg = 100
    bump()
    add(3)
    put(12)
    print('read later', y, f(), callbacks['f']())
    print('nonlocal', z, count)
    print('mutable', data, alias is data)
    print('two functions, one variable', get(), shared)
    print('own scope', own())
main(1)
"""


def test_functions_the_block_defines_in_a_function_close_over_its_live_variables(project: Project) -> None:
    project.write("script.py", HEAD + CLOSURES)
    out = assert_hits_as_fresh(project, "script.py", ("a",))
    assert "read later 21 150 150" in out and "nonlocal 1 2" in out and "True" in out
    assert "two functions, one variable 12 12" in out and "own scope 7" in out


def test_a_function_rebuilt_over_unreadable_frames_warns_and_keeps_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache import StateCacheWarning
    from statecache.entry import main_functions

    def main() -> tuple[types.CellType, types.CellType | None, types.CellType]:
        k = 2

        def f() -> int:
            return k

        code = sys._getframe().f_code
        shared = (getattr(code, "co_qualname", code.co_name), {0: "k"})
        shared_again = main_functions.main_function(__name__, f.__code__, "f", 1, shared)
        with monkeypatch.context() as m:
            m.setattr(main_functions, "frame_cells", lambda frame: None)
            with pytest.warns(StateCacheWarning, match=r"closes over k of \S*main\(\).*holds copies"):
                copied = main_functions.main_function(__name__, f.__code__, "f", 1, shared)
        assert f.__closure__ and shared_again.__closure__ and copied.__closure__
        return f.__closure__[0], shared_again.__closure__[0], copied.__closure__[0]

    live, shared_cell, copied_cell = main()
    assert shared_cell is live and copied_cell is not live


def test_frame_cells_are_the_cells_of_the_running_frame() -> None:
    from statecache._frames import frame_cells

    def outer(a: int) -> tuple[bool, bool]:
        b = 1

        def g() -> int:
            return a + b

        def inner() -> bool:
            c = 3

            def h() -> int:
                return b + c

            cells = frame_cells(sys._getframe())
            assert cells is not None and h.__closure__
            return all(cells[n] is h.__closure__[i] for i, n in enumerate(h.__code__.co_freevars))

        cells = frame_cells(sys._getframe())
        assert cells is not None and g.__closure__
        mine = all(cells[n] is g.__closure__[i] for i, n in enumerate(g.__code__.co_freevars))
        return mine, inner()

    assert outer(5) == (True, True)  # an argument's cell, a local's, a free variable's
    assert cells_here() == {}  # no cell variables there


def cells_here() -> dict[str, object] | None:
    from statecache._frames import frame_cells

    return frame_cells(sys._getframe())


# -- views of inputs, and small arrays that own their data -----------------------------------

ARRAYS = """
import numpy as np
X = np.arange(12.0)
M = np.arange(12.0).reshape(3, 4)
F = np.asfortranarray(np.arange(6.0).reshape(2, 3))
inputs = {'w': np.arange(5, dtype=np.int64)}
ro = np.arange(4.0)
ro.flags.writeable = False
with sc.checkpoint('views'):
    head = X[:4]
    every_other = X[::2]
    backwards = X[::-1]
    as_ints = X.view(np.int64)[1:3]
    grid = X.reshape(3, 4)
    turned = M.T
    col = F[:, 1]
    in_dict = inputs['w'][1:]
    ro_view = ro[1:]
    held = [X[4:6], {'m': M[1]}]
X *= 2
M += 1
F[:] = -F
inputs['w'][:] = 9
for name in ['head', 'every_other', 'backwards', 'as_ints', 'grid', 'turned', 'col', 'in_dict', 'ro_view']:
    v = globals()[name]
    print(name, v.tolist(), v.flags.writeable)
print('held', held[0].tolist(), held[1]['m'].tolist())
print('shares', np.shares_memory(X, head), np.shares_memory(M, turned), np.shares_memory(X, held[0]))

with sc.checkpoint('owned'):
    small = np.arange(10.0)
    fortran = np.asfortranarray(np.ones((3, 4)))
    frozen = np.arange(3)
    frozen.flags.writeable = False
    big = np.arange(100_000.0)
small.resize(12, refcheck=False)
print('small', small.shape, small[-3:].tolist(), fortran.flags.f_contiguous, frozen.flags.writeable)
print('big', big.shape, float(big[-1]))
"""


def test_views_of_inputs_stay_views_and_small_arrays_own_their_data(project: Project) -> None:
    pytest.importorskip("numpy")
    project.write("script.py", HEAD + ARRAYS)
    out = assert_hits_as_fresh(project, "script.py", ("views", "owned"))
    assert "head [0.0, 2.0, 4.0, 6.0] True" in out and "shares True True True" in out
    assert "ro_view [1.0, 2.0, 3.0] False" in out and "small (12,)" in out


def test_a_big_restored_array_is_a_view_of_the_reader_memory(tmp_path: object) -> None:
    """What README says differs for arrays over ``INBAND_MAX``: equal values, not owning."""
    np = pytest.importorskip("numpy")
    from statecache.entry.pickling import INBAND_MAX
    from statecache.entry.reader import read_entry
    from statecache.entry.writer import write_entry

    path = f"{tmp_path}/e.sc"
    n = INBAND_MAX // 8
    state = {"under": np.arange(n - 1.0), "over": np.arange(float(n)), "pair": np.ones((2, n // 4))}
    write_entry(path, state, {"name": "t"})
    _, got = read_entry(path)
    assert got["under"].flags.owndata and not got["over"].flags.owndata
    assert all(np.array_equal(got[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="does not own its data"):
        got["over"].resize(n + 1)
    grown = np.copy(got["over"])
    grown.resize(n + 1, refcheck=False)  # what README tells the user to do
    assert grown.shape == (n + 1,)


def restored(tmp_path: object, state: dict[str, object]) -> dict[str, object]:
    """``state`` written to an entry and read back (a hit's load, in this process)."""
    from statecache.entry.reader import read_entry
    from statecache.entry.writer import write_entry

    path = f"{tmp_path}/t.sc"
    write_entry(path, state, {"name": "t"})
    return read_entry(path)[1]


def test_torch_views_of_an_input_and_small_tensors_come_back_as_computed(tmp_path: object) -> None:
    """In one process, as a hit does: the inputs' objects before, the record of what the state
    kept, the entry written and read, the state rewired over the live inputs."""
    torch = pytest.importorskip("torch")
    from statecache._identity import Before, Rewire, kept

    t = torch.arange(6.0)
    graded = torch.ones(3, requires_grad=True)
    before = Before({"t": t, "graded": graded})
    state: dict[str, object] = {"tail": t[2:], "grid": t.view(2, 3), "g": graded[1:].detach(), "small": torch.arange(4.0)}
    state["kept objects"] = kept(state, before, {})
    t.resize_(6)  # saving left the computing run's tensors resizable
    got = restored(tmp_path, state)
    rewire = Rewire(got.pop("kept objects"), {"t": t, "graded": graded}.__getitem__)  # type: ignore[arg-type]
    rewire.run()
    tail, grid, g, small = (rewire.sub(got[k]) for k in ("tail", "grid", "g", "small"))
    t.mul_(3)
    assert tail.tolist() == [6.0, 9.0, 12.0, 15.0] and grid.tolist() == [[0.0, 3.0, 6.0], [9.0, 12.0, 15.0]]
    assert tail.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
    assert g.untyped_storage().data_ptr() != graded.untyped_storage().data_ptr()  # autograd: a copy
    small.resize_(6)
    assert small.shape == (6,) and small[:4].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_view_is_not_rebuilt_over_memory_outside_its_input(tmp_path: object) -> None:
    """A view of a strided input may reach bytes that are not the input's (not in the key): it
    comes back a copy; so does a view whose input has another layout at the hit."""
    np = pytest.importorskip("numpy")
    from statecache._identity import Before, Rewire, kept

    full = np.arange(12.0)
    strided = full[::2]  # its memory has gaps holding full's odd elements
    x = np.arange(6.0)
    before = Before({"strided": strided, "x": x})
    state: dict[str, object] = {"v": strided[1:], "w": x[2:]}
    state["kept objects"] = kept(state, before, {})
    got = restored(tmp_path, state)
    now = {"strided": strided, "x": np.arange(6.0).reshape(2, 3)}  # x: other shape now
    rewire = Rewire(got.pop("kept objects"), now.__getitem__)  # type: ignore[arg-type]
    v, w = rewire.sub(got["v"]), rewire.sub(got["w"])
    assert v.tolist() == [2.0, 4.0, 6.0, 8.0, 10.0] and not np.shares_memory(v, full)
    assert w.tolist() == [2.0, 3.0, 4.0, 5.0] and not np.shares_memory(w, now["x"])
