"""Identity across a restore: which objects a computing run kept, and putting a hit's state
into those same objects.

A block that fits ``pipe`` fits the step objects ``pipe`` refers to, and the script may hold a
step under another name (``clf``). A hit must leave ``clf`` fitted, as after the computing run:
so the computing run walks its inputs' object graphs before the code runs (``Before``), and its
saved state afterwards (``kept``), and records each saved object that is one of the objects it
had before, by the path from an input to it. A hit follows those paths in its own (equal) inputs
to the objects the script holds now and gives them the saved content (``Rewire``); objects the
block replaced are not on any path, so they keep the state they had, as after the computing run.

The walks enter lists, tuples, deques, dicts, instances of Python classes, the arguments of a
``functools.partial`` and the default arguments and closures of functions (``def f(c=CONFIG)`` keeps ``CONFIG`` itself); objects of the
array and table libraries are merged whole (``_fill.merge``; arrays and their subclasses by
``_arraymerge``, streams and iterators by ``_setstate``), never walked into, but for torch's
modules and optimizers (their parameters stay the objects other names hold, filled in place
with their gradients, and an optimizer's state stays keyed by them) and scipy's sparse matrices
(their ``data`` array stays the one other names hold).
"""

from __future__ import annotations

import collections
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from ._fill import (
    ATOMIC,
    DICTS,
    PARTIAL,
    SEQUENCES,
    fillable,
    immutable,
    merge,
    mergeable,
    opaque,
    partial_state,
    plain_instance,
    tensor_type,
)
from ._unrestorable import advanced, consumable, note

#: the fill rules, also by their older place here (``_fill`` holds them)
__all__ = ["Before", "Rewire", "children", "fillable", "follow", "immutable", "kept", "merge", "mergeable",
           "plain_instance"]

_BUDGET = 100_000  # objects a walk visits at most (beyond it, objects come back as copies)
_MAX_DEPTH = 200
_MISSING = object()

#: ("i", index), ("k", key), ("a", attribute), ("d"/"w", default), ("c", cell), ("p"/"q", a
#: partial's argument or keyword)
Step = tuple[str, Any]


def children(value: Any) -> Iterator[tuple[Step, Any]]:
    """The objects ``value`` refers to that are no plain numbers or strings, each with the step
    that reaches it (a container of numbers only is checked at C speed)."""
    kind = type(value)
    if kind in SEQUENCES:
        if not ATOMIC.issuperset(map(type, value)):
            for index, item in enumerate(value):
                if type(item) not in ATOMIC:
                    yield ("i", index), item
    elif kind in DICTS:
        if not ATOMIC.issuperset(map(type, value.values())):
            for key, item in list(value.items()):
                if type(item) not in ATOMIC:
                    yield ("k", key), item
    elif kind not in ATOMIC and not opaque(value) and plain_instance(value):
        for name, item in list(vars(value).items()):
            if type(item) not in ATOMIC:
                yield ("a", name), item
    elif kind is PARTIAL:  # partial(fit, config): its arguments
        for index, item in enumerate(value.args):
            if type(item) not in ATOMIC:
                yield ("p", index), item
        for name, item in value.keywords.items():
            if type(item) not in ATOMIC:
                yield ("q", name), item
    elif kind is types.FunctionType:  # its default arguments (def f(c=CONFIG))
        for index, item in enumerate(value.__defaults__ or ()):
            if type(item) not in ATOMIC:
                yield ("d", index), item
        for name, item in (value.__kwdefaults__ or {}).items():
            if type(item) not in ATOMIC:
                yield ("w", name), item
        for index, cell in enumerate(value.__closure__ or ()):
            item = _cell_content(cell)
            if item is not _MISSING and type(item) not in ATOMIC:
                yield ("c", index), item


def follow(value: Any, steps: tuple[Step, ...]) -> Any:
    """The object at ``steps`` from ``value`` (``_MISSING`` when the path does not exist)."""
    for how, key in steps:
        kind = type(value)
        try:
            if how == "i" and kind in SEQUENCES:
                value = value[key]
            elif how == "k" and kind in DICTS:
                value = dict.__getitem__(value, key)  # a defaultdict must not grow here
            elif how == "a" and plain_instance(value):
                value = vars(value)[key]
            elif how == "d" and kind is types.FunctionType:
                value = (value.__defaults__ or ())[key]
            elif how == "w" and kind is types.FunctionType:
                value = (value.__kwdefaults__ or {})[key]
            elif how == "c" and kind is types.FunctionType:
                value = _cell_content((value.__closure__ or ())[key])
            elif how == "p" and kind is PARTIAL:
                value = value.args[key]
            elif how == "q" and kind is PARTIAL:
                value = value.keywords[key]
            else:
                return _MISSING
        except (IndexError, KeyError, TypeError):
            return _MISSING
    return value


class Before:
    """The objects reachable from a block's inputs before it runs, each with where it was first
    found (its parent's id and the step from it, or the input label). Holding the objects keeps
    their ids from being reused while the code runs."""

    def __init__(self, roots: dict[str, Any]):
        #: id -> (the object, the id of its parent or the input label, the step from the parent)
        self.objects: dict[int, tuple[Any, int | str, Step | None]] = {}
        self._memory: dict[Any, list[Any]] | None = None  # memory key -> input arrays (``view``)
        objects = self.objects
        iterators: list[Any] = []
        stack: list[tuple[Any, int | str, Step | None]] = [
            (value, label, None) for label, value in reversed(list(roots.items())) if type(value) not in ATOMIC
        ]
        while stack and len(objects) < _BUDGET:
            value, parent, step = stack.pop()
            key = id(value)
            if key in objects:
                continue
            objects[key] = (value, parent, step)
            kind = type(value)
            if (kind is dict or kind is list) and ATOMIC.issuperset(map(type, value.values() if kind is dict else value)):
                continue  # a record of numbers and strings: nothing below it (the common case, fast)
            if consumable(kind):
                iterators.append(value)
            stack.extend((item, key, how) for how, item in children(value))
        #: (iterator, digest) of those a hit could not put back if consumed (``_unrestorable``)
        self.iterators = note(iterators) if iterators else []

    def advanced(self) -> list[tuple[str, Any]]:
        """(where the inputs held it, the iterator) of each noted iterator the code consumed."""
        return [(self.where(value), value) for value in advanced(self.iterators)] if self.iterators else []

    def where(self, value: Any) -> str:
        """An object the inputs held, as the code names it: ``d['ids']``, ``cfg.stream``."""
        found = self.path(value)
        if found is None:
            return "an object its inputs hold"
        label, steps = found
        text = {"i": "[{!r}]", "k": "[{!r}]", "a": ".{}", "p": ".args[{!r}]", "q": ".keywords[{!r}]"}
        return repr(label + "".join(text.get(how, "<{}>").format(key) for how, key in steps))

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
        if type(value) in ATOMIC:
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
        onto = before.view(value) if origin is not None and tensor_type(type(value)) else None
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


class Rewire:
    """A hit's state put into the objects the script holds now: ``sub(saved)`` is the object to
    bind for a saved one (the current object, filled, for a kept one; the saved object with
    its references rewired otherwise, and for a kept one whose fill failed: ``failed``)."""

    def __init__(self, record: dict[str, Any] | None, now: Callable[[str], Any]):
        self.current: dict[int, Any] = {}
        self.done: dict[int, Any] = {}
        self.through: dict[int, Any] = {}
        self._saved: list[Any] = []  # keeps ids stable while the rewiring runs
        self.views: dict[int, tuple[Any, ...]] = {}  # id(saved view) -> (live base, how it lies)
        self.grads: list[tuple[Any, Any]] = list(record.get("grads", ())) if record else []
        self.rebased: list[tuple[Any, Any, Any, Any]] = []  # (saved tensor, live base, how, layout)
        #: (the live object, why) of each fill that failed: the saved copy stands for it instead
        self.failed: list[tuple[Any, BaseException]] = []
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
            except Exception as exc:  # a __setstate__ that refuses: ``current`` is as it was
                self.failed.append((current, exc))
                self.done[key] = saved  # the saved copy, over the live objects it holds
                self.done[key] = _rewired(saved, self.sub)
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

    made = None if base is _MISSING or not tensor_type(type(tensor)) else rebuild_view(base, lies, layout)
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
    elif kind in DICTS:
        for k, v in list(value.items()):
            value[k] = sub(v)
    elif plain_instance(value):
        namespace = vars(value)
        for k, v in list(namespace.items()):
            namespace[k] = sub(v)
    elif kind is PARTIAL:
        value.__setstate__(partial_state(value, sub))
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
