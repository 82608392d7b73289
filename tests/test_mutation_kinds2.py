"""What a block changes in place comes back in place for kinds beyond containers, arrays and
Python instances (issue 11 item 6): after a hit every other name for the object sees what the
computing run left. Data a subclass changes on its base class (``Linear.registry[k] = v``), a
scipy.sparse matrix scaled in place (``X.data *= 2``), a masked array masked in place, an
``io.StringIO`` written, a list iterator advanced, numpy generators drawn from, an
``array.array`` appended to.

One script, one checkpoint per case (``multicase``): computed, then a rerun that must hit every
case and print what a fresh ``STATECACHE_DISABLE=1`` run prints. In-process unit tests pin the
merge rules, including the kinds that have none (``itertools.count``: only a rebind)."""

from __future__ import annotations

import io
import itertools
import pickle

import numpy as np
import pytest
from conftest import Project
from multicase import assert_cases, fresh_values

from statecache._identity import fillable, merge, mergeable

SCRIPT = """
import io, random
import numpy as np, scipy.sparse as sp
import statecache as sc

class Model:
    registry = {}
class Linear(Model):
    pass
with sc.checkpoint('base-class-data'):
    Linear.registry['linear'] = 1
print('y base-class-data', sorted(Model.registry.items()))

counts = sp.csr_matrix(np.eye(3)); values = counts.data; features = {'tfidf': counts}
with sc.checkpoint('sparse-scaled'):
    counts.data *= 2
print('y sparse-scaled', features['tfidf'].toarray().diagonal().tolist(), values.tolist())

coo = sp.coo_array(np.eye(2)); held = [coo]
with sc.checkpoint('sparse-array-coo'):
    coo.data += 5
print('y sparse-array-coo', held[0].toarray().tolist())

readings = np.ma.masked_array([1.0, -999.0, 3.0]); series = [readings]
with sc.checkpoint('masked-in-place'):
    readings[readings == -999.0] = np.ma.masked
    readings[0] = 10.0
print('y masked-in-place', series[0].tolist(), np.ma.getmaskarray(series[0]).tolist())

report = io.StringIO(); out = {'report': report}
with sc.checkpoint('stringio-written'):
    print('epoch 1 done', file=report)
report.write('after')  # at the position the block left
print('y stringio-written', repr(out['report'].getvalue()))

buf = io.BytesIO(); sink = [buf]
with sc.checkpoint('bytesio-written'):
    buf.write(b'abc')
print('y bytesio-written', sink[0].getvalue(), sink[0].tell())

batches = iter([1, 2, 3]); stream = batches
with sc.checkpoint('iterator-advanced'):
    warmup = next(batches)
print('y iterator-advanced', next(stream))

words = iter('abc'); rest = words
with sc.checkpoint('iterator-exhausted'):
    letters = list(words)
print('y iterator-exhausted', list(rest))

rng = np.random.default_rng(0); config = {'rng': rng}
with sc.checkpoint('numpy-generator'):
    noise = rng.random(3).tolist()
print('y numpy-generator', noise, config['rng'].random())

import array
samples = array.array('d'); kept_samples = {'s': samples}
with sc.checkpoint('array-appended'):
    samples.append(2.5)
print('y array-appended', kept_samples['s'].tolist())

legacy = np.random.RandomState(1); holder = [legacy]
with sc.checkpoint('numpy-randomstate'):
    legacy.randint(10, size=3)
print('y numpy-randomstate', holder[0].randint(1000))
"""

CASES = [
    "base-class-data", "sparse-scaled", "sparse-array-coo", "masked-in-place", "stringio-written",
    "bytesio-written", "iterator-advanced", "iterator-exhausted", "numpy-generator", "array-appended", "numpy-randomstate",
]


def test_objects_kept_their_state_in_c_or_a_base_class_come_back_in_place(project: Project) -> None:
    pytest.importorskip("scipy")
    project.write("script.py", SCRIPT)
    fresh = fresh_values(project)
    assert_cases(project.run("script.py"), CASES, hit=False, fresh=fresh)
    assert_cases(project.run("script.py"), CASES, hit=True, fresh=fresh)


def _after(value: object, change: object) -> object:
    """What a computing run leaves, as a hit loads it: ``change(value)`` then a pickle trip."""
    change(value)  # type: ignore[operator]
    return pickle.loads(pickle.dumps(value))


def test_a_sparse_matrix_keeps_its_arrays_when_walked() -> None:
    sp = pytest.importorskip("scipy.sparse")
    from statecache._identity import Before, Rewire, kept

    x = sp.csr_matrix(np.eye(3))
    data = x.data
    before = Before({"x": x})
    x.data *= 3
    state = pickle.loads(pickle.dumps({"x": x, "k": kept({"x": x}, before, {"x": "x"})}))
    x.data /= 3  # the next run's equal input
    rewire = Rewire(state["k"], {"x": x}.__getitem__)
    assert rewire.pair(state["x"], x)
    rewire.run()
    assert x.data is data and data.tolist() == [3.0, 3.0, 3.0]


def test_ndarray_subclasses_take_elements_and_attributes_but_not_a_memmap(tmp_path: object) -> None:
    current = np.ma.masked_array([1.0, 2.0, 3.0])
    saved = _after(np.ma.masked_array([1.0, 2.0, 3.0]), lambda a: a.__setitem__(1, np.ma.masked))
    assert mergeable(current, saved)
    merge(current, saved)
    assert np.ma.getmaskarray(current).tolist() == [False, True, False]
    assert not mergeable(np.ma.masked_array([1.0, 2.0]), saved)  # another shape: rebound
    mm = np.memmap(f"{tmp_path}/m.bin", dtype=np.float64, mode="w+", shape=(3,))
    assert not mergeable(mm, np.memmap(f"{tmp_path}/n.bin", dtype=np.float64, mode="w+", shape=(3,)))


def test_streams_and_iterators_take_content_and_position() -> None:
    out = io.StringIO("seed")
    saved = _after(io.StringIO("seed"), lambda s: (s.seek(4), s.write("ed")))
    merge(out, saved) if mergeable(out, saved) else pytest.fail("StringIO not mergeable")
    assert (out.getvalue(), out.tell()) == ("seeded", 6)

    exported = io.BytesIO(b"ab")
    view = exported.getbuffer()  # a buffer exported: a new content would be refused
    assert not mergeable(exported, _after(io.BytesIO(b"ab"), lambda b: b.write(b"xyz")))
    del view

    for sequence in ([1, 2, 3], (1, 2, 3), range(3), range(0, 9, 3), "abc", "\xe9bc", b"abc"):
        for steps in range(5):  # 4: exhausted
            live, ran = iter(sequence), iter(sequence)
            saved = _after(ran, lambda it, n=steps: [next(it, None) for _ in range(n)])
            if type(saved) is not type(live):  # an exhausted bytes iterator pickles as iter(())
                assert steps == 4 and not mergeable(live, saved)
                continue
            assert mergeable(live, saved), (sequence, steps)
            merge(live, saved)
            assert list(live) == list(ran), (sequence, steps)
    backwards = reversed([1, 2, 3])
    merge(backwards, _after(reversed([1, 2, 3]), next))
    assert list(backwards) == [2, 1]
    other = iter([9, 9, 9])
    assert not mergeable(other, _after(iter([1, 2, 3]), next))  # over another sequence


def test_an_array_array_takes_its_items_unless_a_buffer_of_it_is_exported() -> None:
    import array

    items = array.array("d", [1.0])
    merge(items, _after(array.array("d", [1.0]), lambda a: a.append(2.0)))
    assert items.tolist() == [1.0, 2.0]
    view = memoryview(items)
    assert not mergeable(items, array.array("d", [5.0])) and items.tolist() == [1.0, 2.0]
    del view
    assert not mergeable(items, array.array("i", [1, 2]))  # another type code


def test_what_has_no_in_place_rule_is_said_so() -> None:
    count = itertools.count()
    assert not fillable(count) and not mergeable(count, _after(itertools.count(), next))
    assert not fillable(map(str, [1]))
    assert fillable(io.StringIO()) and fillable(iter([1])) and fillable(np.ma.masked_array([1]))
    assert fillable(np.random.default_rng(0))
