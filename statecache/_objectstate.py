"""The saved state of objects that are pickled by reference, so that a hit can put it back
into the objects the script holds: a class (``ClassState``: what the code set, patched or
deleted on it) and a function (``FunctionState``: its defaults, attributes and closure cells).
Both are applied in place: other names for the class, the function or the objects they hold
see the change, as after the computing run.

A hit loads this module only when its state holds such a record (unpickling it imports it):
``_binders`` looks for it in ``sys.modules``.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any

_MISSING = object()
#: What a class or function holds that is code: kept as the object the script holds on a hit
#: unless the code bound it anew (a function pickled by value would come back as a copy).
CODE = (types.FunctionType, types.BuiltinFunctionType, classmethod, staticmethod, property, type, types.ModuleType)


def is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def picklable(value: Any) -> bool:
    """Whether a class attribute can be saved (a lock or a client on a class stays out)."""
    import pickle

    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


class ObjectState:
    """The saved state of an object pickled by reference; ``apply`` puts it back."""

    def apply(self, target: Any) -> None:
        raise NotImplementedError


class ClassState(ObjectState):
    """What the code changed on a class (``Model.default = 5``, ``Model.predict = fast``, a
    property): its data attributes, and, when its dict before the code ran is known, every
    attribute the code bound anew whatever its kind (the code the key covers is the class as
    it was before the block: a method the block patches on is the block's output) and those it
    deleted."""

    def __init__(self, attributes: dict[str, Any], deleted: Iterable[str] = (), rebound: Iterable[str] = ()):
        self.attributes = attributes
        self.deleted = tuple(deleted)
        self.rebound = frozenset(rebound)  # the others were the same objects: filled in place

    @classmethod
    def of(cls, kind: type, before: dict[str, Any] | None = None) -> ClassState:
        from .key.codegraph import CLASS_SKIP

        now = vars(kind)
        attributes = {k: v for k, v in now.items() if not is_dunder(k) and not isinstance(v, CODE) and picklable(v)}
        if before is None:
            return cls(attributes, (), attributes)
        rebound = [k for k, v in now.items() if k not in CLASS_SKIP and before.get(k, _MISSING) is not v]
        attributes.update((k, now[k]) for k in rebound)
        return cls(attributes, [k for k in before if k not in now and k not in CLASS_SKIP], rebound)

    def apply(self, target: Any) -> None:
        """Set, then fill in place, then delete, in the class's dict as the computing run left
        it (``type.__setattr__``: a metaclass's ``__setattr__`` ran then and is not replayed, as
        an instance's is not when it is unpickled); all or nothing: an attribute the class
        refuses puts back what was set and raises."""
        if not isinstance(target, type):
            return
        rebound = getattr(self, "rebound", None)  # an entry of an older version has none
        namespace = vars(target)
        fills: dict[str, tuple[Any, Any]] = {}
        undo: list[tuple[str, Any]] = []  # (name, its value before or _MISSING), in order
        try:
            for name, value in self.attributes.items():
                current = namespace.get(name, _MISSING)
                if rebound is not None and name not in rebound and current is not _MISSING and mergeable_now(current, value):
                    fills[name] = (current, value)
                    continue
                undo.append((name, current))
                type.__setattr__(target, name, value)
            for name in getattr(self, "deleted", ()):
                if name in namespace:
                    undo.append((name, namespace[name]))
                    type.__delattr__(target, name)
        except BaseException:
            _undo(target, undo)
            raise
        for name, (current, value) in fills.items():
            if not update_in_place(current, value, True):
                type.__setattr__(target, name, value)  # a fill that failed: the saved copy


def _undo(target: type, undo: list[tuple[str, Any]]) -> None:
    for name, value in reversed(undo):
        if value is not _MISSING:
            type.__setattr__(target, name, value)
        elif name in vars(target):
            type.__delattr__(target, name)


def mergeable_now(current: Any, saved: Any) -> bool:
    """Whether ``update_in_place`` can fill ``current`` (what became of this very object)."""
    if isinstance(saved, ObjectState):
        return True
    from ._fill import mergeable

    return mergeable(current, saved, relayout=True)


def function_parts(fn: types.FunctionType) -> tuple[Any, ...]:
    """What of a function the code can change without rebinding it (its defaults, keyword
    defaults, attributes and closure cells), code left out as its qualified name: the globals
    a function reads are watched where they live (``_watched``), not through it."""
    from .key.walk import cells

    def data(value: Any) -> Any:
        return f"<code {getattr(value, '__qualname__', type(value).__name__)}>" if isinstance(value, CODE) else value

    return (
        tuple(map(data, fn.__defaults__ or ())),
        {k: data(v) for k, v in (fn.__kwdefaults__ or {}).items()},
        {k: data(v) for k, v in fn.__dict__.items()},
        tuple(map(data, cells(fn) or ())),
    )


class FunctionState(ObjectState):
    """A function's defaults, keyword defaults, attributes and closure cells (and its code when
    the code replaced it), put back into the function the script holds (a ``def f(acc=[])`` the code appended to, ``f.calls += 1``, a
    ``nonlocal`` it changed): rebinding the name to a copy would lose the function's identity
    (a registry holding it) and its source (a copy's code comes from the pickle)."""

    def __init__(self, fn: types.FunctionType, recoded: bool = False):
        self.code = fn.__code__ if recoded else None  # ``f.__code__ = g.__code__`` in the block
        self.defaults = tuple(_data_or_keep(v) for v in fn.__defaults__ or ())
        self.kwdefaults = {k: _data_or_keep(v) for k, v in (fn.__kwdefaults__ or {}).items()}
        self.attributes = {k: _data_or_keep(v) for k, v in fn.__dict__.items()}
        self.cells = tuple(_data_or_keep(_cell(c)) for c in fn.__closure__ or ())

    def apply(self, target: Any) -> None:
        if not isinstance(target, types.FunctionType):
            return
        code = getattr(self, "code", None)
        if code is not None and len(code.co_freevars) == len(target.__closure__ or ()):
            target.__code__ = code
        if self.defaults or target.__defaults__:
            target.__defaults__ = _filled(target.__defaults__ or (), self.defaults) or None
        if self.kwdefaults or target.__kwdefaults__:
            current = target.__kwdefaults__ or {}
            target.__kwdefaults__ = {k: _fill(current.get(k, _MISSING), v) for k, v in self.kwdefaults.items()} or None
        current = dict(target.__dict__)
        target.__dict__.clear()
        target.__dict__.update({k: _fill(current.get(k, _MISSING), v) for k, v in self.attributes.items()})
        for cell, saved in zip(target.__closure__ or (), self.cells, strict=False):
            now = _cell(cell)
            value = _fill(now, saved)
            if value is not now and value is not _MISSING:
                cell.cell_contents = value


class _Keep:
    """Stands for code a function holds: the object the script holds now is kept."""


_KEEP = _Keep()


def _data_or_keep(value: Any) -> Any:
    return _KEEP if isinstance(value, CODE) else value


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # not assigned yet
        return _MISSING


def _fill(current: Any, saved: Any) -> Any:
    """The object to hold for ``saved``: ``current`` filled with its content when it can be,
    ``current`` itself for code, else ``saved``."""
    if isinstance(saved, _Keep):
        return current
    if current is not _MISSING and update_in_place(current, saved):
        return current
    return saved


def _filled(current: tuple[Any, ...], saved: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_fill(current[i] if i < len(current) else _MISSING, v) for i, v in enumerate(saved))


def update_in_place(current: Any, saved: Any, same_object: bool = False) -> bool:
    """Give ``current`` the content of ``saved`` without changing its identity (a class or a
    function takes an ``ObjectState``); False (nothing done) when it cannot (see
    ``_fill.mergeable``; ``same_object``: ``saved`` is what became of this very object,
    so an array may take another layout), or when the fill failed (``_fill.merge`` puts the
    object back as it was)."""
    if isinstance(saved, ObjectState):
        saved.apply(current)
        return True  # never bind the record itself to a name
    from ._fill import merge, mergeable

    if not mergeable(current, saved, relayout=same_object):
        return False
    try:
        merge(current, saved)
    except Exception:
        return False
    return True
