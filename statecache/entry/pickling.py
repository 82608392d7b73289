"""Turning the state into a pickle stream: pickle first, then cloudpickle, then dill for what
plain pickle refuses (lambdas, local classes, closures), and the error that names the
variables no pickler accepts. Loading it back is the reader's (``reader.unpickler_class``).

Protocol 5 with one Pickler per attempt (one shared memo, so references between variables
survive); buffers of INBAND_MAX bytes or more go out of band, for the codec to store raw or
compressed, numpy's and, through ``tensors``, torch storages' alike. Where the stream goes is
the caller's: ``serialise`` takes a sink factory.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from types import FunctionType
from typing import Any, NamedTuple, Protocol

from .._errors import UnpicklableError
from .main_functions import live_globals, reduce_main_function
from .meta import VariableRecord
from .tensors import tensor_reducer

PICKLERS = ("pickle", "cloudpickle", "dill")
INBAND_MAX = 16 << 10  # smaller buffers ride in the pickle stream: a section each costs more


class Sink(Protocol):
    """Where the pickle stream goes: a write-only file that counts its bytes."""

    pos: int

    def write(self, data: Any) -> int: ...

    def finish(self) -> None: ...


def type_name(value: Any) -> str:
    """The qualified name of the value's type, as ``ls``/``show`` print it."""
    t = type(value)
    module = getattr(t, "__module__", None)
    qualname = getattr(t, "__qualname__", t.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


class _NullSink:
    """A file that discards what is written (to test each variable alone)."""


    def write(self, data: Any) -> int:
        return len(data) if not isinstance(data, memoryview) else data.nbytes


def pickler_module(name: str) -> Any:
    if name == "pickle":
        return pickle
    if name == "cloudpickle":
        import cloudpickle

        return cloudpickle
    import dill

    return dill


def main_object_saved_by_value(obj: Any, saved_names: frozenset[str]) -> bool | None:
    """For a function or class of ``__main__``: True when it must be pickled by value, because
    a name of ``saved_names`` (``code_names``) binds it or what holds it (defined by the block,
    so it will not exist in ``__main__`` when a later run loads the entry), or no name reaches
    it; False when it can go by reference (defined outside the block: restored instances keep
    ``isinstance`` with the live class, a restored registry holds the live class itself).
    None for every other object."""
    if not isinstance(obj, type) and type(obj).__name__ != "function":
        return None
    if getattr(obj, "__module__", None) != "__main__":
        return None
    qualname = getattr(obj, "__qualname__", "")
    if "<locals>" in qualname:
        return True
    main = sys.modules.get("__main__")
    found: Any = main
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is not obj or qualname.split(".")[0] in saved_names


def code_names(state: dict[str, Any]) -> frozenset[str]:
    """The names the state binds to a class or function: the only names under which the block
    can have defined code of ``__main__`` (``main_object_saved_by_value``). A class or function
    the block changed in place is saved as its record (``_objectstate.ObjectState``) under its
    name, and stays the script's own object: pickled by reference, so that a registry or a
    default that holds it still holds the script's class after a hit."""
    return frozenset(n for n, v in state.items() if isinstance(v, (type, FunctionType)))


def defines_main_code(saved_names: frozenset[str]) -> bool:
    """Whether a saved name is bound in ``__main__`` to a class or function: the only way a
    ``__main__`` object that plain pickle would save by reference is one the block defined
    (``main_object_saved_by_value``: its qualified name starts with a saved name); every other
    object of ``__main__`` saved by value is one that plain pickle refuses by itself."""
    namespace = getattr(sys.modules.get("__main__"), "__dict__", {})
    return any(
        isinstance(value, type) or hasattr(value, "__code__")
        for value in (namespace.get(n) for n in saved_names)
    )


def saves_main_code(state: dict[str, Any]) -> bool:
    """Whether the state holds, under its own name, a function or class that the block defined
    at the top level of ``__main__``: plain pickle is sure to refuse it (``new_pickler``), so
    its attempt, which may first pickle everything else, is skipped."""
    namespace = getattr(sys.modules.get("__main__"), "__dict__", {})
    return any(
        value is namespace.get(name, state)
        and (isinstance(value, type) or hasattr(value, "__code__"))
        and getattr(value, "__module__", None) == "__main__"
        and getattr(value, "__qualname__", None) == name
        for name, value in state.items()
    )


class _TensorPickler(pickle.Pickler):
    """The C pickler whose ``reducer_override`` is the tensor reducer itself (a lookup of the
    object's type, without the tests for ``__main__`` code of ``_overriding_class``)."""

    def __init__(self, *args: Any, tensors: Any, **kwargs: Any) -> None:
        self.reducer_override = tensors  # type: ignore[method-assign]  # read by the C __init__
        super().__init__(*args, **kwargs)


def new_pickler(pickler: str, saved_names: frozenset[str], file: Sink, buffer_callback: Any) -> Any:
    """The pickler for one attempt, protocol 5. torch tensors and storages go out of band
    (``tensors``) under all three. ``__main__`` functions and classes defined by the block go
    by value (plain pickle refuses them so that cloudpickle takes over; their functions are
    rebuilt over the live module's globals, ``main_functions``); those defined before the
    block go by reference, also under cloudpickle and dill; dill decides for the rest.

    Plain pickle gets a ``reducer_override`` only when the state needs one: called for every
    object that is not a builtin container, a Python-level override cost as much again as
    pickling a small instance (a list of dates: 1.5-2x the save)."""
    tensors = tensor_reducer()
    if pickler == "pickle" and not defines_main_code(saved_names):
        if tensors is None:
            return pickle.Pickler(file, protocol=5, buffer_callback=buffer_callback)
        return _TensorPickler(file, protocol=5, buffer_callback=buffer_callback, tensors=tensors)
    cls = _overriding_class(pickler, saved_names, tensors)
    return cls(file, protocol=5, buffer_callback=buffer_callback)


def _overriding_class(pickler: str, saved_names: frozenset[str], tensors: Any) -> Any:
    """A pickler class of ``pickler`` whose ``reducer_override`` decides ``__main__`` code."""
    base = pickler_module(pickler).Pickler

    class Pickler(base):  # type: ignore[misc, valid-type]
        def reducer_override(self, obj: Any) -> Any:
            if tensors is not None:
                reduced = tensors(obj)
                if reduced is not NotImplemented:
                    return reduced
            by_value = main_object_saved_by_value(obj, saved_names)
            if by_value is False:  # by reference; dill would copy code of __main__
                return obj.__qualname__ if pickler == "dill" else NotImplemented
            if pickler == "dill":
                return NotImplemented
            if by_value and pickler == "pickle":
                raise pickle.PicklingError(f"{obj!r} is defined by the block in __main__")
            if by_value and isinstance(obj, FunctionType) and live_globals(obj) is not None:
                return reduce_main_function(obj)
            parent = getattr(super(), "reducer_override", None)
            return parent(obj) if parent is not None else NotImplemented

    return Pickler


class Serialised(NamedTuple):
    """One successful pickling of the whole state."""

    pickler: str
    sink: Any  # the sink the stream went to
    buffers: list[memoryview]  # out-of-band buffers, in the order the stream refers to them
    variables: dict[str, VariableRecord]


def serialise(state: dict[str, Any], new_sink: Callable[[], Sink]) -> Serialised:
    """Pickle the whole state with pickle, else cloudpickle, else dill, into a fresh sink per
    attempt; else raise UnpicklableError naming the variables that no pickler accepts."""
    failures: dict[str, BaseException] = {}
    for pickler in PICKLERS[1:] if saves_main_code(state) else PICKLERS:
        sink = new_sink()
        buffers: list[memoryview] = []
        keep: list[Any] = []

        def out_of_band(
            pb: pickle.PickleBuffer, buffers: list[memoryview] = buffers, keep: list[Any] = keep
        ) -> bool:
            try:
                raw = pb.raw()
            except BufferError:  # not contiguous: let the pickler copy it in-band
                return True
            if raw.nbytes < INBAND_MAX:
                return True
            keep.append(pb)
            buffers.append(raw)
            return False

        variables: dict[str, VariableRecord] = {}
        try:
            p = new_pickler(pickler, code_names(state), sink, out_of_band)
            for name, value in state.items():
                start, first = sink.pos, len(buffers)
                p.dump(value)
                size = sink.pos - start + sum(b.nbytes for b in buffers[first:])
                variables[name] = {"type": type_name(value), "size": size}
            sink.finish()
        except Exception as exc:
            failures[pickler] = exc
            continue
        return Serialised(pickler, sink, buffers, variables)
    raise unpicklable_error(state, failures)


def unpicklable_error(
    state: dict[str, Any], failures: dict[str, BaseException]
) -> UnpicklableError:
    """The error for a state that no pickler accepts: each variable is tried alone to name the
    culprits and what each pickler said, or, if each works alone, the ones involved."""
    culprits: dict[str, dict[str, str]] = {}
    involved: list[str] = []
    for name, value in state.items():
        complaints: dict[str, str] = {}
        for pickler in PICKLERS:
            try:
                module = pickler_module(pickler)
                module.Pickler(_NullSink(), protocol=5, buffer_callback=lambda pb: False).dump(
                    value
                )
            except Exception as exc:
                complaints[pickler] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                break
        if len(complaints) == len(PICKLERS):
            culprits[name] = complaints
        elif complaints:
            involved.append(name)
    if culprits:
        lines = []
        for name, complaints in culprits.items():
            distinct = list(dict.fromkeys(complaints.values()))
            lines.append(f"  {name!r} ({type_name(state[name])}): " + "; ".join(distinct))
        names = list(culprits)
        return UnpicklableError(
            "cannot save the state: no pickler (pickle, cloudpickle, dill) accepts "
            + ("this variable" if len(names) == 1 else "these variables")
            + ":\n"
            + "\n".join(lines)
            + f"\nFix: `del {', '.join(names)}` before the end of the block (create it after the "
            "block instead), or make it picklable (define __getstate__/__reduce__). Nothing was "
            "written; the program goes on with the state it computed.",
            names=names,
        )
    complaint = "; ".join(f"{k}: {type(v).__name__}: {v}"[:300] for k, v in failures.items())
    names = involved or list(state)
    return UnpicklableError(
        "cannot save the state: each variable can be pickled on its own, but no single pickler "
        f"accepts them all together ({complaint}). Variables involved: {names!r}. Fix: leave "
        "some out with ignore=[...] or `del` them before the end of the block. Nothing was written.",
        names=names,
    )

