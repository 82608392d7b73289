"""Identity across a restore: which objects a computing run kept, and putting a hit's state
into those same objects.

A block that fits ``pipe`` fits the step objects ``pipe`` refers to, and the script may hold a
step under another name (``clf``). A hit must leave ``clf`` fitted, as after the computing run:
so the computing run walks its inputs' object graphs before the code runs (``Before``), and its
saved state afterwards (``kept``), and records each saved object that is one of the objects it
had before, by the path from an input to it. A hit follows those paths in its own (equal) inputs
to the objects the script holds now and gives them the saved content (``Rewire``); objects the
block replaced are not on any path, so they keep the state they had, as after the computing run.

The walks enter lists, tuples, deques, dicts, instances of Python classes and the default
arguments and closures of functions (``def f(c=CONFIG)`` keeps ``CONFIG`` itself); objects of the
array and table libraries are merged whole (``merge``; arrays and their subclasses by
``_arraymerge``, streams and iterators by ``_setstate``), never walked into, but for torch's
modules and optimizers (their parameters stay the objects other names hold, filled in place
with their gradients, and an optimizer's state stays keyed by them) and scipy's sparse matrices
(their ``data`` array stays the one other names hold).
"""

from __future__ import annotations

import collections
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._setstate import has_rule, set_state, settable

_ATOMIC = frozenset({int, float, complex, str, bytes, bool, type(None), range, slice})
_DICTS = frozenset({dict, collections.OrderedDict, collections.defaultdict, collections.Counter})
_SEQUENCES = frozenset({list, tuple, collections.deque})
#: packages whose objects are merged whole: their attributes are internal caches and managers
_OPAQUE = ("numpy", "pandas", "polars", "pyarrow", "scipy")
_WALKED = "scipy.sparse."  # but a sparse matrix: its state is its arrays (``X.data *= 2``)
_BUDGET = 100_000  # objects a walk visits at most (beyond it, objects come back as copies)
_MAX_DEPTH = 200
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python
_MISSING = object()

Step = tuple[str, Any]  # ("i", index), ("k", key), ("a", attribute), ("d"/"w", default), ("c", cell)


def immutable(value: Any) -> bool:
    """A number, string, bytes, None, range or slice, or a tuple or frozenset of them: a value
    whose identity no code can tell from an equal one's by changing it."""
    kind = type(value)
    if kind in _ATOMIC:
        return True
    return (kind is tuple or kind is frozenset) and all(immutable(v) for v in value)


def plain_instance(value: Any) -> bool:
    """An instance whose whole state is its ``__dict__``: every class of its type is defined in
    Python (no C base holding state), without ``__slots__`` (but empty ones: ``abc.ABC``'s), and
    it is no class or exception."""
    if isinstance(value, (type, BaseException)) or not isinstance(getattr(value, "__dict__", None), dict):
        return False
    return _python_classes(type(value).__mro__)


def _python_classes(classes: Iterable[type]) -> bool:
    """Classes defined in Python that add no ``__slots__``: an instance's state they hold is
    its ``__dict__``."""
    return all(c is object or (c.__flags__ & _HEAPTYPE and not c.__dict__.get("__slots__")) for c in classes)


def _array_subclass_in_dict(value: Any, np: Any) -> bool:
    """An ndarray subclass whose own state is its ``__dict__`` (``np.ma.MaskedArray``), no
    memory map (whose elements are a file's bytes: a fill would write the file)."""
    if isinstance(value, np.memmap) or not isinstance(getattr(value, "__dict__", None), dict):
        return False
    mro = type(value).__mro__
    return _python_classes(mro[: mro.index(np.ndarray)])


def _opaque(value: Any) -> bool:
    module = getattr(type(value), "__module__", "") or ""
    return module.partition(".")[0] in _OPAQUE and not module.startswith(_WALKED)


def children(value: Any) -> Iterator[tuple[Step, Any]]:
    """The objects ``value`` refers to that are no plain numbers or strings, each with the step
    that reaches it (a container of numbers only is checked at C speed)."""
    kind = type(value)
    if kind in _SEQUENCES:
        if not _ATOMIC.issuperset(map(type, value)):
            for index, item in enumerate(value):
                if type(item) not in _ATOMIC:
                    yield ("i", index), item
    elif kind in _DICTS:
        if not _ATOMIC.issuperset(map(type, value.values())):
            for key, item in list(value.items()):
                if type(item) not in _ATOMIC:
                    yield ("k", key), item
    elif kind not in _ATOMIC and not _opaque(value) and plain_instance(value):
        for name, item in list(vars(value).items()):
            if type(item) not in _ATOMIC:
                yield ("a", name), item
    elif kind is types.FunctionType:  # its default arguments (def f(c=CONFIG))
        for index, item in enumerate(value.__defaults__ or ()):
            if type(item) not in _ATOMIC:
                yield ("d", index), item
        for name, item in (value.__kwdefaults__ or {}).items():
            if type(item) not in _ATOMIC:
                yield ("w", name), item
        for index, cell in enumerate(value.__closure__ or ()):
            item = _cell_content(cell)
            if item is not _MISSING and type(item) not in _ATOMIC:
                yield ("c", index), item


def follow(value: Any, steps: tuple[Step, ...]) -> Any:
    """The object at ``steps`` from ``value`` (``_MISSING`` when the path does not exist)."""
    for how, key in steps:
        kind = type(value)
        try:
            if how == "i" and kind in _SEQUENCES:
                value = value[key]
            elif how == "k" and kind in _DICTS:
                value = dict.__getitem__(value, key)  # a defaultdict must not grow here
            elif how == "a" and plain_instance(value):
                value = vars(value)[key]
            elif how == "d" and kind is types.FunctionType:
                value = (value.__defaults__ or ())[key]
            elif how == "w" and kind is types.FunctionType:
                value = (value.__kwdefaults__ or {})[key]
            elif how == "c" and kind is types.FunctionType:
                value = _cell_content((value.__closure__ or ())[key])
            else:
                return _MISSING
        except (IndexError, KeyError, TypeError):
            return _MISSING
    return value


def fillable(value: Any) -> bool:
    """Whether a hit can give this object a saved content in place (``merge`` has a rule for
    its kind), so its identity is worth keeping; an object changed in place that is not (an
    ``itertools.count``, a ``map``) can only be rebound, and other names for it then keep
    what it was before the block."""
    kind = type(value)
    if kind in _ATOMIC:
        return False
    if kind in _SEQUENCES or kind in _DICTS or kind is set or kind is bytearray:
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return True
    return _tensor_type(kind) or plain_instance(value) or has_rule(kind)


def _tensor_type(kind: type) -> bool:
    """A torch tensor or parameter (``_arraymerge`` fills one in place)."""
    torch = sys.modules.get("torch")
    return torch is not None and (kind is torch.Tensor or kind is getattr(torch.nn, "Parameter", None))


class Before:
    """The objects reachable from a block's inputs before it runs, each with where it was first
    found (its parent's id and the step from it, or the input label). Holding the objects keeps
    their ids from being reused while the code runs."""

    def __init__(self, roots: dict[str, Any]):
        #: id -> (the object, the id of its parent or the input label, the step from the parent)
        self.objects: dict[int, tuple[Any, int | str, Step | None]] = {}
        self._memory: dict[Any, list[Any]] | None = None  # memory key -> input arrays (``view``)
        objects = self.objects
        stack: list[tuple[Any, int | str, Step | None]] = [
            (value, label, None) for label, value in reversed(list(roots.items())) if type(value) not in _ATOMIC
        ]
        while stack and len(objects) < _BUDGET:
            value, parent, step = stack.pop()
            key = id(value)
            if key in objects:
                continue
            objects[key] = (value, parent, step)
            kind = type(value)
            if (kind is dict or kind is list) and _ATOMIC.issuperset(map(type, value.values() if kind is dict else value)):
                continue  # a record of numbers and strings: nothing below it (the common case, fast)
            stack.extend((item, key, how) for how, item in children(value))

    def origin(self, value: Any) -> tuple[str, tuple[Step, ...]] | None:
        """(input label, path from it) of an object the inputs held, if ``merge`` can fill it."""
        return self.path(value) if fillable(value) else None

    def view(self, value: Any) -> tuple[str, tuple[Step, ...], Any, Any] | None:
        """(input label, path, how it lies there, the input's layout) for an array or tensor
        that is a view of one the inputs held (``_views``); None at once for an array that
        owns its memory."""
        from ._views import array_types, memory_key, view_origin

        if getattr(value, "base", True) is None:
            return None
        key = memory_key(value)
        if key is None:
            return None
        if self._memory is None:
            self._memory = {}
            kinds = array_types()
            for obj, _parent, _step in self.objects.values():
                found = memory_key(obj) if type(obj) in kinds else None
                if found is not None:
                    self._memory.setdefault(found, []).append(obj)
        for base in self._memory.get(key, ()):
            lies, path = view_origin(value, base), self.path(base)
            if lies is not None and path is not None:
                return (*path, *lies)
        return None

    def path(self, value: Any) -> tuple[str, tuple[Step, ...]] | None:
        """(input label, path from it) of an object the inputs held."""
        entry = self.objects.get(id(value))
        if entry is None or entry[0] is not value:
            return None
        steps: list[Step] = []
        while True:
            _obj, parent, step = entry
            if not isinstance(parent, int):
                return parent, tuple(reversed(steps))
            assert step is not None
            steps.append(step)
            entry = self.objects[parent]
            if len(steps) > _MAX_DEPTH:
                return None


def kept(state: dict[str, Any], before: Before, implied: dict[str, str]) -> dict[str, Any] | None:
    """The record of the saved objects that the run kept from before it ran: ``{"kept":
    [(object, input label, path)], "through": [objects holding such an object]}``, or None
    when there is none beyond ``implied`` (state label -> the input label whose object it is:
    the mutated inputs, which a hit finds without a record).
    The record is saved in the same pickle stream as the state, so its objects are the
    state's own after a load."""
    pairs: list[tuple[Any, str, tuple[Step, ...]]] = []
    views: list[tuple[Any, ...]] = []
    through: list[Any] = []
    grads: list[tuple[Any, Any]] = []  # (tensor, its .grad): a tensor's pickle drops it
    rebased: list[tuple[Any, ...]] = []  # a kept tensor now over another input's storage
    status: dict[int, bool] = {}
    budget = [_BUDGET]
    arrays = _array_types()
    tensor_grad = _grad_reader()

    def visit(value: Any, depth: int, root: str) -> bool:
        if type(value) in _ATOMIC:
            return False
        key = id(value)
        if key in status:
            return status[key]
        status[key] = False  # in progress: a cycle back to it adds nothing
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            return False
        dirty = False
        for _step, item in children(value):
            dirty = visit(item, depth + 1, "") or dirty
        origin = before.origin(value)
        view = before.view(value) if origin is None and type(value) in arrays else None
        grad = tensor_grad(value)
        if grad is not None:
            grads.append((value, grad))
        onto = before.view(value) if origin is not None and _tensor_type(type(value)) else None
        if onto is not None:  # ``t.set_(u.untyped_storage(), ...)``: t shares u's memory
            rebased.append((value, *onto))
        if origin is not None and not (root in implied and origin == (implied[root], ())):
            pairs.append((value, *origin))
        elif view is not None:
            views.append((value, *view))
        elif origin is None and dirty:
            through.append(value)
        status[key] = origin is not None or view is not None or dirty
        return status[key]

    for label, value in state.items():
        visit(value, 0, label)
    if not pairs and not through and not views and not grads and not rebased:
        return None
    return {"kept": pairs, "through": through, "views": views, "grads": grads, "rebased": rebased}


def _grad_reader() -> Callable[[Any], Any]:
    """``key.tensorprint.tensor_grad`` where torch is loaded (else no value has a gradient):
    a tensor's pickle drops its ``.grad``, so ``kept`` records it beside the state."""
    if "torch" not in sys.modules:
        return lambda value: None
    from .key.tensorprint import tensor_grad

    return tensor_grad


def _array_types() -> tuple[type, ...]:
    """The array and tensor types of the loaded libraries (``_views``), without importing
    ``_views`` for a state that cannot hold one."""
    if "numpy" not in sys.modules and "torch" not in sys.modules:
        return ()
    from ._views import array_types

    return array_types()


def mergeable(current: Any, saved: Any, relayout: bool = False) -> bool:
    """Whether ``merge`` can give ``current`` the content of ``saved``; an array or tensor
    whose layout differs only with ``relayout``: when ``saved`` is known to be what became of
    this very object in the computing run (a resize there must not become one here of an
    object the run replaced)."""
    kind = type(current)
    if kind is not type(saved) or current is saved:
        return False
    if kind is tuple:
        return len(current) == len(saved)
    if kind is collections.deque:
        return current.maxlen == saved.maxlen
    if kind in _SEQUENCES or kind in _DICTS or kind is set or kind is bytearray:
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(current, np.ndarray):
        if kind is not np.ndarray and not _array_subclass_in_dict(current, np):
            return False
        from ._arraymerge import array_mergeable

        return array_mergeable(current, saved, relayout)
    if _tensor_type(kind):
        from ._arraymerge import tensor_mergeable

        return tensor_mergeable(current, saved, relayout)
    if has_rule(kind):  # first: a C type made from a spec (3.12's io) passes for a Python one
        return settable(current, saved)
    return plain_instance(current)


def merge(current: Any, saved: Any, sub: Callable[[Any], Any] = lambda v: v) -> None:
    """Give ``current`` the content of ``saved`` (``mergeable`` said it can), each object it
    refers to passed through ``sub`` (the object the script holds for a kept one)."""
    kind = type(current)
    if kind is tuple:
        for item in saved:
            sub(item)  # immutable: its items are the current tuple's (kept) objects
    elif kind is list:
        current[:] = [sub(v) for v in saved]
    elif kind is bytearray:
        current[:] = saved
    elif kind is collections.deque:
        items = [sub(v) for v in saved]
        current.clear()
        current.extend(items)
    elif kind in _DICTS:  # a key that is a kept object too: an optimizer's state, by parameter
        items = [(k if type(k) in _ATOMIC else sub(k), sub(v)) for k, v in saved.items()]
        current.clear()
        current.update(items)
        if kind is collections.defaultdict:
            current.default_factory = saved.default_factory
    elif kind is set:
        current.clear()
        current.update(saved)
    elif _tensor_type(kind):
        from ._arraymerge import merge_tensor

        merge_tensor(current, saved)
    elif has_rule(kind):  # a stream, an iterator: its type's own state API
        set_state(current, saved)
    elif plain_instance(current):
        _merge_instance(current, saved, sub)
    else:
        from ._arraymerge import merge_array

        merge_array(current, saved, sub)


def _merge_instance(current: Any, saved: Any, sub: Callable[[Any], Any]) -> None:
    kind = type(current)
    setstate: Any = getattr(kind, "__setstate__", None)
    getstate: Any = getattr(saved, "__getstate__", None)
    custom = setstate is not None and getstate is not None
    state = getstate() if custom else dict(vars(saved))
    if isinstance(state, dict) and not _opaque(current):
        state = {k: sub(v) for k, v in state.items()}
    vars(current).clear()
    if custom:
        current.__setstate__(state)  # pandas rebuilds its back-references
    else:
        vars(current).update(state)


class Rewire:
    """A hit's state put into the objects the script holds now: ``sub(saved)`` is the object to
    bind for a saved one (the current object, filled, for a kept one; the saved object with
    its references rewired otherwise)."""

    def __init__(self, record: dict[str, Any] | None, now: Callable[[str], Any]):
        self.current: dict[int, Any] = {}
        self.done: dict[int, Any] = {}
        self.through: dict[int, Any] = {}
        self._saved: list[Any] = []  # keeps ids stable while the rewiring runs
        self.views: dict[int, tuple[Any, ...]] = {}  # id(saved view) -> (live base, how it lies)
        self.grads: list[tuple[Any, Any]] = list(record.get("grads", ())) if record else []
        self.rebased: list[tuple[Any, Any, Any, Any]] = []  # (saved tensor, live base, how, layout)
        if record:
            for saved, label, steps in record.get("kept", ()):
                self.pair(saved, follow(now(label), tuple(steps)))
            self.through = {id(v): v for v in record.get("through", ())}
            for saved, label, steps, lies, layout in record.get("views", ()):
                self.views[id(saved)] = (follow(now(label), tuple(steps)), lies, layout)
                self._saved.append(saved)
            for saved, label, steps, lies, layout in record.get("rebased", ()):
                self.rebased.append((saved, follow(now(label), tuple(steps)), lies, layout))

    def pair(self, saved: Any, current: Any) -> bool:
        """Make ``current`` the object that stands for ``saved`` (when it can take its content)."""
        if current is _MISSING or not mergeable(current, saved, relayout=True):  # the same object
            return False
        self.current[id(saved)] = current
        self._saved.append(saved)
        return True

    def run(self) -> None:
        """Fill every kept object (also those no saved name reaches any more), the objects
        before the views over them (a resize moves an array's memory), then give each
        tensor its gradient."""
        saved = sorted(self._saved, key=lambda v: id(v) not in self.current)  # stable: kept first
        for value in saved:
            self.sub(value)
        for tensor, base, lies, layout in self.rebased:
            _rebase(self.sub(tensor), base, lies, layout)
        for tensor, grad in self.grads:
            _set_grad(self.sub(tensor), self.sub(grad))

    def sub(self, saved: Any) -> Any:
        key = id(saved)
        if key in self.done:
            return self.done[key]
        current = self.current.get(key)
        if current is not None:
            self.done[key] = current
            try:
                merge(current, saved, self.sub)
            except Exception:  # a __setstate__ that refuses: the saved copy, as before
                self.done[key] = saved
            return self.done[key]
        if key in self.through:
            self.done[key] = saved
            self.done[key] = _rewired(saved, self.sub)
        elif key in self.views:
            self.done[key] = _view_of_live(saved, *self.views[key])
        return self.done.get(key, saved)


def _rebase(tensor: Any, base: Any, lies: Any, layout: Any) -> None:
    """Point a live tensor at the live ``base``'s storage as the computing run left it (the
    content, filled already, stays when ``base`` is gone or has another layout now)."""
    from ._views import rebuild_view

    made = None if base is _MISSING or not _tensor_type(type(tensor)) else rebuild_view(base, lies, layout)
    if made is not None:
        with sys.modules["torch"].no_grad():
            tensor.set_(made.untyped_storage(), made.storage_offset(), made.size(), made.stride())


def _set_grad(tensor: Any, grad: Any) -> None:
    try:
        tensor.grad = grad
    except (RuntimeError, TypeError, AttributeError):  # not a tensor now (its input is gone)
        pass


def _view_of_live(saved: Any, base: Any, lies: Any, layout: Any) -> Any:
    """A saved view of an input, made again over the live input (the saved copy when that
    input is gone or has another layout now)."""
    from ._views import rebuild_view

    made = None if base is _MISSING else rebuild_view(base, lies, layout)
    return saved if made is None else made


def _rewired(value: Any, sub: Callable[[Any], Any]) -> Any:
    """``value`` (an object the block made) referring to the current objects: in place, or a
    new tuple."""
    kind = type(value)
    if kind is tuple:
        return tuple(sub(v) for v in value)
    if kind is list:
        value[:] = [sub(v) for v in value]
    elif kind is collections.deque:
        items = [sub(v) for v in value]
        value.clear()
        value.extend(items)
    elif kind in _DICTS:
        for k, v in list(value.items()):
            value[k] = sub(v)
    elif plain_instance(value):
        namespace = vars(value)
        for k, v in list(namespace.items()):
            namespace[k] = sub(v)
    elif kind is types.FunctionType:
        if value.__defaults__:
            value.__defaults__ = tuple(sub(v) for v in value.__defaults__)
        if value.__kwdefaults__:
            value.__kwdefaults__ = {k: sub(v) for k, v in value.__kwdefaults__.items()}
        for cell in value.__closure__ or ():
            item = _cell_content(cell)
            if item is not _MISSING:
                cell.cell_contents = sub(item)
    return value


def _cell_content(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a variable of the enclosing scope not assigned yet
        return _MISSING
