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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .._errors import UnpicklableError
from .main_functions import live_globals, reduce_main_function
from .meta import VariableRecord
from .tensors import tensor_reducer

if TYPE_CHECKING:
    from .ndviews import ArrayViews

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


def new_pickler(
    pickler: str, saved_names: frozenset[str], file: Sink, buffer_callback: Any, arrays: ArrayViews | None = None
) -> Any:
    """The pickler for one attempt, protocol 5. torch tensors and storages go out of band
    (``tensors``) under all three; numpy views of arrays in the same stream are saved as views
    (``arrays``, ``ndviews``). ``__main__`` functions and classes defined by the block go
    by value (plain pickle refuses them so that cloudpickle takes over; their functions are
    rebuilt over the live module's globals, ``main_functions``); those defined before the
    block go by reference, also under cloudpickle and dill; dill decides for the rest.

    Plain pickle gets a ``reducer_override`` only when the state needs one: called for every
    object that is not a builtin container, a Python-level override cost as much again as
    pickling a small instance (a list of dates: 1.5-2x the save). The arrays' reducer is a
    ``dispatch_table`` entry instead, called for plain ndarrays only."""
    tensors = tensor_reducer()
    table = None if arrays is None or pickler == "dill" else _array_table(pickler, arrays)
    if pickler == "pickle" and not defines_main_code(saved_names):
        if tensors is None:
            p = pickle.Pickler(file, protocol=5, buffer_callback=buffer_callback)
        else:
            p = _TensorPickler(file, protocol=5, buffer_callback=buffer_callback, tensors=tensors)
        if table is not None:
            p.dispatch_table = table  # the C pickler's own slot: read at each save
        return p
    cls = _overriding_class(pickler, saved_names, tensors, arrays if pickler == "dill" else None)
    p = cls.__new__(cls)
    if table is not None:  # before __init__, which reads it (cloudpickle's is a class attribute)
        p.dispatch_table = table
    p.__init__(file, protocol=5, buffer_callback=buffer_callback)
    return p


def _array_table(pickler: str, arrays: ArrayViews) -> Any:
    """A dispatch table with the arrays' reducer before the pickler's own table."""
    import copyreg
    from collections import ChainMap

    own = pickler_module(pickler).Pickler.dispatch_table if pickler == "cloudpickle" else copyreg.dispatch_table
    return ChainMap({arrays.np.ndarray: arrays.table_entry}, own)


def _overriding_class(pickler: str, saved_names: frozenset[str], tensors: Any, arrays: ArrayViews | None) -> Any:
    """A pickler class of ``pickler`` whose ``reducer_override`` decides ``__main__`` code
    (and, under dill, whose own rules for arrays come after the arrays' reducer)."""
    base = pickler_module(pickler).Pickler
    ndarray = arrays.np.ndarray if arrays is not None else None

    class Pickler(base):  # type: ignore[misc, valid-type]
        def reducer_override(self, obj: Any) -> Any:
            if tensors is not None:
                reduced = tensors(obj)
                if reduced is not NotImplemented:
                    return reduced
            if type(obj) is ndarray:
                assert arrays is not None
                reduced = arrays.reduce(obj)
                return NotImplemented if reduced is None else reduced
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


class Refused:
    """A value its caller will not have saved, with why (an object a hit could not put back,
    ``_unrestorable``): ``serialise`` raises UnpicklableError with the reasons, so nothing is
    written and the program goes on with the state it computed."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons


class Serialised(NamedTuple):
    """One successful pickling of the whole state."""

    pickler: str
    sink: Any  # the sink the stream went to
    buffers: list[memoryview]  # out-of-band buffers, in the order the stream refers to them
    variables: dict[str, VariableRecord]


def serialise(state: dict[str, Any], new_sink: Callable[[], Sink]) -> Serialised:
    """Pickle the whole state with pickle, else cloudpickle, else dill, into a fresh sink per
    attempt; else raise UnpicklableError naming the variables that no pickler accepts. A
    state where a numpy view comes before the array it is a view of is pickled twice: the
    second time saves it as a view too (``ndviews``)."""
    from .ndviews import array_views

    refused = [n for n, v in state.items() if isinstance(v, Refused)]
    if refused:
        reasons = [r for n in refused for r in state[n].reasons]
        raise UnpicklableError("; ".join(reasons), names=refused)
    failures: dict[str, BaseException] = {}
    names = code_names(state)
    for pickler in PICKLERS[1:] if saves_main_code(state) else PICKLERS:
        arrays = array_views()
        try:
            done = _attempt(pickler, state, names, new_sink, arrays)
            if arrays is not None and arrays.late:
                done = _attempt(pickler, state, names, new_sink, arrays.again())
        except Exception as exc:
            failures[pickler] = exc
            continue
        return done
    raise unpicklable_error(state, failures)


def _attempt(
    pickler: str, state: dict[str, Any], names: frozenset[str], new_sink: Callable[[], Sink],
    arrays: ArrayViews | None,
) -> Serialised:
    """One pickling of the whole state with ``pickler``, into a fresh sink."""
    sink = new_sink()
    buffers: list[memoryview] = []
    keep: list[Any] = []

    def out_of_band(pb: pickle.PickleBuffer) -> bool:
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
    p = new_pickler(pickler, names, sink, out_of_band, arrays)
    for name, value in state.items():
        start, first = sink.pos, len(buffers)
        p.dump(value)
        size = sink.pos - start + sum(b.nbytes for b in buffers[first:])
        variables[name] = {"type": type_name(value), "size": size}
    sink.finish()
    return Serialised(pickler, sink, buffers, variables)


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

