"""Giving a live object a hit's saved content in place, by the rule of its kind: lists, tuples,
deques, dicts, sets and bytearrays by their items; instances of Python classes by their
``__dict__`` (or their own ``__setstate__``); a ``functools.partial`` by its function,
arguments and keywords; arrays and tensors by ``_arraymerge``; streams, iterators and random
generators by ``_setstate``. The object keeps its identity, so other names for it see the
content, as after the computing run (``_identity`` decides which objects; this says how).

A fill is all or nothing: one that raises part-way (a ``__setstate__`` that refuses) puts the
object back as it was before and raises, so that the caller binds the saved copy instead;
never an object half filled.
"""

from __future__ import annotations

import collections
import functools
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ._setstate import has_rule, set_state, settable

ATOMIC = frozenset({int, float, complex, str, bytes, bool, type(None), range, slice})
DICTS = frozenset({dict, collections.OrderedDict, collections.defaultdict, collections.Counter})
SEQUENCES = frozenset({list, tuple, collections.deque})
#: packages whose objects are merged whole: their attributes are internal caches and managers
_OPAQUE = ("numpy", "pandas", "polars", "pyarrow", "scipy")
_WALKED = "scipy.sparse."  # but a sparse matrix: its state is its arrays (``X.data *= 2``)
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python (or made from a C spec)
_POINTER = struct.calcsize("P")
_OBJECT_SIZE = object.__basicsize__
PARTIAL = functools.partial


def immutable(value: Any) -> bool:
    """A number, string, bytes, None, range or slice, or a tuple or frozenset of them: a value
    whose identity no code can tell from an equal one's by changing it."""
    kind = type(value)
    if kind in ATOMIC:
        return True
    return (kind is tuple or kind is frozenset) and all(immutable(v) for v in value)


def plain_instance(value: Any) -> bool:
    """An instance whose whole state is its ``__dict__``: every class of its type is defined in
    Python (no C base holding state), without ``__slots__`` (but empty ones: ``abc.ABC``'s), and
    it is no class or exception."""
    if isinstance(value, (type, BaseException)) or not isinstance(getattr(value, "__dict__", None), dict):
        return False
    return python_classes(type(value).__mro__)


def python_classes(classes: Iterable[type]) -> bool:
    """Classes defined in Python that add no ``__slots__``: an instance's state they hold is
    its ``__dict__``. A C type made from a spec is a heap type too (``functools.partial``,
    ``random.Random``'s base, 3.12's io): its instances are larger than their dict and weak
    reference pointers make them, by the fields that hold its state."""
    classes = tuple(classes)
    if not all(c is object or (c.__flags__ & _HEAPTYPE and not c.__dict__.get("__slots__")) for c in classes):
        return False
    kind = classes[0]
    size = kind.__basicsize__
    size -= _POINTER if kind.__dictoffset__ > 0 else 0
    size -= _POINTER if kind.__weakrefoffset__ > 0 else 0
    return size <= _OBJECT_SIZE


def array_subclass_in_dict(value: Any, np: Any) -> bool:
    """An ndarray subclass whose own state is its ``__dict__`` (``np.ma.MaskedArray``), no
    memory map (whose elements are a file's bytes: a fill would write the file)."""
    if isinstance(value, np.memmap) or not isinstance(getattr(value, "__dict__", None), dict):
        return False
    mro = type(value).__mro__
    return all(c.__flags__ & _HEAPTYPE and not c.__dict__.get("__slots__") for c in mro[: mro.index(np.ndarray)])


def opaque(value: Any) -> bool:
    """An object of the array and table libraries: merged whole, never walked into."""
    module = getattr(type(value), "__module__", "") or ""
    return module.partition(".")[0] in _OPAQUE and not module.startswith(_WALKED)


def tensor_type(kind: type) -> bool:
    """A torch tensor or parameter (``_arraymerge`` fills one in place)."""
    torch = sys.modules.get("torch")
    return torch is not None and (kind is torch.Tensor or kind is getattr(torch.nn, "Parameter", None))


def fillable(value: Any) -> bool:
    """Whether a hit can give this object a saved content in place (``merge`` has a rule for
    its kind), so its identity is worth keeping; an object changed in place that is not (an
    ``itertools.count``, a ``map``) can only be rebound, and other names for it then keep
    what it was before the block."""
    kind = type(value)
    if kind in ATOMIC:
        return False
    if kind in SEQUENCES or kind in DICTS or kind is set or kind is bytearray or kind is PARTIAL:
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return True
    return tensor_type(kind) or plain_instance(value) or has_rule(kind)


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
    if kind in SEQUENCES or kind in DICTS or kind is set or kind is bytearray or kind is PARTIAL:
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(current, np.ndarray):
        if kind is not np.ndarray and not array_subclass_in_dict(current, np):
            return False
        from ._arraymerge import array_mergeable

        return array_mergeable(current, saved, relayout)
    if tensor_type(kind):
        from ._arraymerge import tensor_mergeable

        return tensor_mergeable(current, saved, relayout)
    if has_rule(kind):  # first: a C type made from a spec (3.12's io) passes for a Python one
        return settable(current, saved)
    return plain_instance(current)


def merge(current: Any, saved: Any, sub: Callable[[Any], Any] = lambda v: v) -> None:
    """Give ``current`` the content of ``saved`` (``mergeable`` said it can), each object it
    refers to passed through ``sub`` (the object the script holds for a kept one). Raises,
    with ``current`` as it was, when the fill fails part-way."""
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
    elif kind in DICTS:  # a key that is a kept object too: an optimizer's state, by parameter
        items = [(k if type(k) in ATOMIC else sub(k), sub(v)) for k, v in saved.items()]
        current.clear()
        current.update(items)
        if kind is collections.defaultdict:
            current.default_factory = saved.default_factory
    elif kind is set:
        current.clear()
        current.update(saved)
    elif kind is PARTIAL:
        current.__setstate__(partial_state(saved, sub))  # checks it all before it sets any
    elif tensor_type(kind):
        from ._arraymerge import merge_tensor

        merge_tensor(current, saved)
    elif has_rule(kind):  # a stream, an iterator: its type's own state API
        set_state(current, saved)
    elif plain_instance(current):
        _merge_instance(current, saved, sub)
    else:
        from ._arraymerge import merge_array

        merge_array(current, saved, sub)


def partial_state(value: Any, sub: Callable[[Any], Any]) -> tuple[Any, ...]:
    """A ``functools.partial``'s state (function, arguments, keywords, attributes), each object
    passed through ``sub``."""
    return (
        sub(value.func),
        tuple(sub(v) for v in value.args),
        {k: sub(v) for k, v in value.keywords.items()},
        {k: sub(v) for k, v in vars(value).items()} or None,
    )


def _merge_instance(current: Any, saved: Any, sub: Callable[[Any], Any]) -> None:
    kind = type(current)
    setstate: Any = getattr(kind, "__setstate__", None)
    getstate: Any = getattr(saved, "__getstate__", None)
    custom = setstate is not None and getstate is not None
    state = getstate() if custom else dict(vars(saved))
    if isinstance(state, dict) and not opaque(current):
        state = {k: sub(v) for k, v in state.items()}
    namespace = vars(current)
    before = dict(namespace)
    namespace.clear()
    try:
        if custom:
            current.__setstate__(state)  # pandas rebuilds its back-references
        else:
            namespace.update(state)
    except BaseException:
        namespace = vars(current)  # a __setstate__ may have replaced it
        namespace.clear()
        namespace.update(before)
        raise
