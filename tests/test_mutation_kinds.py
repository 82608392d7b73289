"""What a block changes in place comes back in place (issue 11 item 6, and item 9's torch
inputs): after a hit, every other name for a changed object sees what the computing run left,
for kinds that are neither a list nor a dict: an input array whose layout the block set in
place (``arr.shape =``, ``resize``, ``dtype =``), a torch tensor changed by an in-place
method (``add_``, ``resize_``, ``unsqueeze_``, ``t_``) or by ``backward()`` (its ``.grad``),
the data of a class changed through an instance's method, and a module's array changed by a
method or through an import inside a helper.

Real scripts run in subprocesses against a cache under tmp_path, every case a checkpoint of
one script (``multicase``): computed, then a rerun that must hit every case and print what a
fresh ``STATECACHE_DISABLE=1`` run prints, including a last checkpoint that reads the changed
objects (so what a hit restored keys what follows it as the computed state did). In-process
unit tests pin the rules themselves."""

from __future__ import annotations

import pickle

import pytest
from conftest import Project
from multicase import assert_cases, fresh_values

HELPERS = """
import numpy as np
ARR = np.zeros(2)
LOCAL = np.zeros(2)
FROM = np.zeros(2)

class Acc:
    def add(self):
        ARR[0] += 1  # a module array, changed through a method of an instance
"""

NUMPY_SCRIPT = """
import numpy as np
import statecache as sc
import helpers

a = np.arange(4); a_alias = a
with sc.checkpoint('shape-set'):
    a.shape = (2, 2)
print('y shape-set', a_alias.tolist(), a_alias.shape, a_alias is a)

b = np.arange(4.0); b_alias = b
with sc.checkpoint('resize'):
    b.resize((3, 2), refcheck=False)
    b[2] = 7
print('y resize', b_alias.tolist(), b_alias is b)

c = np.arange(4); c_alias = c
with sc.checkpoint('dtype-set'):
    c.dtype = np.int32
print('y dtype-set', c_alias.tolist(), str(c_alias.dtype), c_alias is c)

d = np.zeros(6); d_holder = {'d': d}
with sc.checkpoint('reshape-then-write'):
    d.shape = (3, 2)
    d[1] += 5
print('y reshape-then-write', d_holder['d'].tolist())

class Model:
    arr = np.zeros(3)
    def add(self):
        self.arr[0] += 1
m = Model()
with sc.checkpoint('class-array'):
    m.add()
print('y class-array', Model.arr.tolist())

class Bank:
    weights = {'w': np.zeros(2)}  # a dict of arrays: not plain data
    def bump(self):
        self.weights['w'] += 2
class Child(Bank):
    pass
models = [Child()]
with sc.checkpoint('base-class-dict'):
    models[0].bump()
print('y base-class-dict', Bank.weights['w'].tolist())

acc = helpers.Acc()
with sc.checkpoint('module-array-by-method'):
    acc.add()
print('y module-array-by-method', helpers.ARR.tolist())

def bump_local():
    import helpers as h
    h.LOCAL += 3
def bump_from():
    from helpers import FROM
    FROM += 4
with sc.checkpoint('local-imports'):
    bump_local()
    bump_from()
print('y local-imports', helpers.LOCAL.tolist(), helpers.FROM.tolist())

with sc.checkpoint('after'):
    seen = [a.shape, b.tolist(), str(c.dtype), d.tolist(), Model.arr.tolist(), Bank.weights['w'].tolist(),
            helpers.ARR.tolist(), helpers.LOCAL.tolist()]
print('y after', seen)
"""

NUMPY_CASES = ["shape-set", "resize", "dtype-set", "reshape-then-write", "class-array", "base-class-dict",
               "module-array-by-method", "local-imports", "after"]


def test_numpy_layouts_and_class_and_module_data_come_back_in_place(project: Project) -> None:
    pytest.importorskip("numpy")
    project.write("helpers.py", HELPERS)
    project.write("script.py", NUMPY_SCRIPT)
    fresh = fresh_values(project)
    assert_cases(project.run("script.py"), NUMPY_CASES, hit=False, fresh=fresh)
    assert_cases(project.run("script.py"), NUMPY_CASES, hit=True, fresh=fresh)


TORCH_SCRIPT = """
import os
import torch
import statecache as sc

t = torch.zeros(4); t_alias = t
with sc.checkpoint('add_'):
    t.add_(1)
print('y add_', t_alias.tolist(), t_alias is t)

r = torch.zeros(4); r_view = r[:]  # shares r's storage
with sc.checkpoint('unsqueeze_-t_'):
    r.unsqueeze_(0)
    r.t_()
    r += 2
print('y unsqueeze_-t_', tuple(r.shape), r.stride(), r_view.tolist())

q = torch.zeros(2); q_alias = q
with sc.checkpoint('resize_'):
    q.resize_(5)
    q.fill_(3)
print('y resize_', q_alias.tolist(), q_alias is q)

w = torch.ones(2, requires_grad=True)
(w * float(os.environ.get('K', '2'))).sum().backward()
with sc.checkpoint('grad-input'):
    g = w.grad.tolist()
print('y grad-input', g)

v = torch.ones(2, requires_grad=True)
with sc.checkpoint('backward'):
    (v * 3).sum().backward()
print('y backward', None if v.grad is None else v.grad.tolist())

with sc.checkpoint('after'):
    seen = [t.tolist(), tuple(r.shape), q.tolist(), v.grad.tolist()]
print('y after', seen)
"""

TORCH_CASES = ["add_", "unsqueeze_-t_", "resize_", "grad-input", "backward", "after"]


@pytest.mark.extended  # five runs importing torch cost ~20 CPU-s: -m extended (the rules run below, in process)
def test_torch_tensors_changed_in_place_and_their_gradients_come_back(project: Project) -> None:
    pytest.importorskip("torch", reason="torch is not installed (the [torch] extra)")
    project.write("script.py", TORCH_SCRIPT)
    fresh = fresh_values(project)
    assert_cases(project.run("script.py"), TORCH_CASES, hit=False, fresh=fresh)
    assert_cases(project.run("script.py"), TORCH_CASES, hit=True, fresh=fresh)
    changed = project.run("script.py", env={"K": "5"})  # other gradients above the block
    assert_cases(changed, ["grad-input"], hit=False, fresh=fresh_values(project, env={"K": "5"}))
    assert_cases(changed, ["backward"], hit=True, fresh=fresh)


# -- the rules, in process ---------------------------------------------------------------------


def _through_an_entry(value: object) -> object:
    return pickle.loads(pickle.dumps(value, 5))


def test_an_array_takes_a_saved_layout_in_place_when_its_memory_allows() -> None:
    np = pytest.importorskip("numpy")
    from statecache._identity import merge, mergeable

    for change in (lambda x: setattr(x, "shape", (2, 3)), lambda x: x.resize((8,), refcheck=False),
                   lambda x: setattr(x, "dtype", np.int32)):
        computed = np.arange(6)
        change(computed)
        current = np.arange(6)
        alias = current
        saved = _through_an_entry(computed)
        assert not mergeable(current, saved)  # unless it is known to be the same object
        assert mergeable(current, saved, relayout=True)
        merge(current, saved)
        assert alias is current and alias.shape == computed.shape and alias.dtype == computed.dtype
        assert alias.tolist() == computed.tolist()
    view = np.arange(12)[::2]  # a view: its memory is not its own to resize
    assert not mergeable(view, np.arange(8), relayout=True)
    assert view.tolist() == [0, 2, 4, 6, 8, 10]


def test_a_tensor_takes_a_saved_layout_and_gradient_in_place() -> None:
    """As a hit does it: the inputs before, the record of what the state kept, an entry's
    pickle, the state rewired over the live input (a view made before the block shares its
    storage still)."""
    torch = pytest.importorskip("torch")
    from statecache._identity import Before, Rewire, kept

    cases = [(lambda x: x.unsqueeze_(0).t_(), False), (lambda x: x.resize_(6), False), (lambda x: x.add_(1), True)]
    for change, graded in cases:  # torch resizes no tensor that requires grad
        computed = torch.zeros(4, requires_grad=graded)
        before = Before({"x": computed})
        with torch.no_grad():
            change(computed)
            computed += 2
        if graded:
            computed.grad = torch.full(computed.shape, 3.0)
        state = {"x": computed}
        saved = _through_an_entry({**state, "kept objects": kept(state, before, {"x": "x"})})
        current = torch.zeros(4, requires_grad=graded)
        view = current.detach()[:]
        rewire = Rewire(saved.pop("kept objects"), {"x": current}.__getitem__)  # type: ignore[attr-defined]
        assert rewire.pair(saved["x"], current)  # type: ignore[index]
        rewire.run()
        assert current.shape == computed.shape and current.stride() == computed.stride()
        assert current.tolist() == computed.tolist()
        assert (current.grad is None) if not graded else current.grad.tolist() == [3.0] * 4
        assert view.tolist() == current.detach().reshape(-1)[:4].tolist()
        view[0] = 9  # still the same storage: writes through
        assert current.detach().reshape(-1)[0] == 9


def test_a_tensor_the_block_points_at_another_inputs_storage_shares_it_after_a_hit() -> None:
    torch = pytest.importorskip("torch")
    from statecache._identity import Before, Rewire, kept

    t, u = torch.zeros(4), torch.arange(6.0)
    before = Before({"t": t, "u": u})
    t.set_(u.untyped_storage(), 1, (2, 2), (2, 1))
    state = {"t": t}
    saved = _through_an_entry({**state, "kept objects": kept(state, before, {"t": "t"})})
    live = {"t": torch.zeros(4), "u": torch.arange(6.0)}
    rewire = Rewire(saved.pop("kept objects"), live.__getitem__)  # type: ignore[attr-defined]
    assert rewire.pair(saved["t"], live["t"])  # type: ignore[index]
    rewire.run()
    assert live["t"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    live["u"][1] = 50  # t is over u's memory, as after the computing run
    assert live["t"][0, 0] == 50


def test_a_model_and_its_optimizer_stepped_in_the_block_keep_their_parameters() -> None:
    """A training step in the block: after the hit, the parameter a name held before it is
    still the model's, with the step's weights and gradient, and the optimizer's momentum is
    keyed by it (it was a copy that no other name reached, and the optimizer's, not the
    model's)."""
    torch = pytest.importorskip("torch")
    from statecache._identity import Before, Rewire, kept

    def made() -> tuple[object, object]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    model, opt = made()
    before = Before({"model": model, "opt": opt})
    opt.zero_grad()  # type: ignore[attr-defined]
    model(torch.ones(4, 2)).sum().backward()  # type: ignore[operator]
    opt.step()  # type: ignore[attr-defined]
    state = {"model": model, "opt": opt}
    saved = _through_an_entry({**state, "kept objects": kept(state, before, {"model": "model", "opt": "opt"})})
    live = dict(zip(("model", "opt"), made(), strict=True))
    weight = live["model"][0].weight  # type: ignore[index]
    rewire = Rewire(saved.pop("kept objects"), live.__getitem__)  # type: ignore[attr-defined]
    assert all(rewire.pair(saved[k], live[k]) for k in live)  # type: ignore[index]
    rewire.run()
    computed = model[0].weight  # type: ignore[index]
    assert weight is live["model"][0].weight and weight.tolist() == computed.tolist()  # type: ignore[index]
    assert weight.grad is not None and weight.grad.tolist() == computed.grad.tolist()
    momentum = live["opt"].state[weight]["momentum_buffer"]  # type: ignore[attr-defined]
    assert momentum.tolist() == opt.state[computed]["momentum_buffer"].tolist()  # type: ignore[attr-defined]


def test_fingerprints_see_a_gradient_and_leave_a_tensor_resizable() -> None:
    torch = pytest.importorskip("torch")
    from statecache.key.values import Fingerprinter

    w = torch.ones(3, requires_grad=True)
    before = Fingerprinter().value(w, "w")
    (w * 2).sum().backward()
    after = Fingerprinter().value(w, "w")
    assert after != before
    w.grad.mul_(2)
    assert Fingerprinter().value(w, "w") not in (before, after)
    t = torch.zeros(2)
    Fingerprinter().value(t, "t")
    t.resize_(5)  # raised before: fingerprinting had marked the storage not resizable
    assert t.shape == (5,)


def test_the_classes_of_the_instances_an_input_holds_are_reached() -> None:
    from statecache._watched import instance_classes

    class Base:
        pass

    class Child(Base):
        pass

    class Other:
        pass

    found = instance_classes([{"k": [Child()]}, 3, Other])  # a class itself is no instance
    assert Child in found and Base in found and Other not in found


class Frames:
    """A class of the user's with data that is no plain data (set in the test below)."""

    table: object = None

    def grow(self) -> None:
        self.table.iloc[0, 0] = 5  # type: ignore[attr-defined]


def test_class_data_that_is_not_plain_counts_by_content_where_an_instance_reaches_it() -> None:
    pd = pytest.importorskip("pandas")
    from statecache._watched import Watched
    from statecache.key.inputs import MISSING

    Frames.table = pd.DataFrame({"a": [1, 2]})
    values = {"f": Frames()}

    def changed() -> list[object]:
        state, _gone, in_place = watched.changes(set())
        return [state[label] for label in in_place]

    watched = Watched.before(lambda name: MISSING, values, {}, ())
    str(Frames.table)  # reading it fills pandas' caches: no change
    assert changed() == []
    watched = Watched.before(lambda name: MISSING, values, {}, ())
    values["f"].grow()
    assert changed() == [Frames]
