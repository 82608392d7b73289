"""Binders: how a front end's code meets its namespace. A binder collects the code's inputs
(by the rules of ``key.inputs``), collects the state it produced, and puts a hit's state back.

- ``FrameBinder``: a ``with checkpoint`` block, in a module frame or a function frame (its
  locals are written back through ``_frames.write_names``);
- ``GlobalsBinder``: a ``cached_setup`` function (arguments, return value, ``global`` names);
- ``NamespaceBinder``: a ``%%checkpoint`` cell in an IPython user namespace.

The rules on state are the same for all three and live here once: a file object open for
writing is never saved (``_openfiles``: restoring it would reopen and empty the file); an
input the code mutated in place is saved and, on a hit, its object takes the saved content,
as do the objects it refers to that the code kept (other names for them see the change, see
``_identity``); what the code changed outside its names, through its helpers too (attributes
of the user's modules, data the helpers read, what it patched onto a class), is saved and set
again (``_watched``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import CodeType, FrameType

from ._frames import is_function_frame, write_names
from ._warnings import warn
from .key.components import fingerprint_values
from .key.inputs import MISSING, Reads, implicit_values, input_values, resolve

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path

if TYPE_CHECKING:
    from typing import Any

    from ._identity import Before
    from ._watched import Watched

#: The name under which a ``cached_setup`` function's return value is saved.
RETURN = "return"
#: The state label of the record of the objects the code kept (``_identity.kept``): a label
#: that is no Python name, so it binds nothing.
KEPT = "kept objects"
_ARGUMENT = "argument "  # prefix of the saved state of an argument the function mutated
#: the state label of the refusal of a state a hit could not put back (``_unrestorable``)
NOT_RESTORABLE = "not restorable"

EMPTY_READS = Reads((), (), (), (), ())


def __getattr__(name: str) -> Any:
    """``ClassState`` by its old place, for entries pickled before it moved to ``_objectstate``."""
    if name == "ClassState":
        from ._objectstate import ClassState

        return ClassState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Binder:
    """Inputs, state and restore for one namespace; subclasses say how names are looked up
    and bound."""

    def __init__(self, reads: Reads, name: str, ignore: Iterable[str], context: str, package: str = ""):
        self.reads = reads
        self.name = name
        self.ignore = tuple(ignore)
        self.context = context
        self.package = package
        self.values: dict[str, Any] = {}  # input label -> the value it had before the code ran
        self.fingerprints: dict[str, str] = {}
        self.chains: set[str] = set()  # labels that are attributes of the user's modules
        self.before: Before | None = None  # the inputs' objects before the code ran
        self.watched: Watched | None = None  # what the code may change besides its names

    # -- the namespace (subclasses) --

    def lookup(self, name: str) -> Any:
        """The current value of ``name`` as the code reads it, or MISSING."""
        raise NotImplementedError

    def bind(self, values: dict[str, Any], unbound: list[str]) -> None:
        """Bind ``values`` and unbind ``unbound`` where the code binds names."""
        raise NotImplementedError

    def assigned_value(self, name: str) -> Any:
        """The value of a name the code binds, in the scope it binds it (MISSING if unbound)."""
        return self.lookup(name)

    def label(self, name: str) -> str:
        """How an input is named in an error message."""
        return name

    # -- inputs --

    def inputs(self) -> dict[str, str]:
        """label -> fingerprint of every input (FingerprintError names the one that fails)."""
        self.values, self.chains = input_values(self.reads, self.lookup, self.ignore, self.package)
        self.fingerprints = fingerprint_values(self.values, self.ignore, self.label, self.context)
        return self.fingerprints

    def remember_inputs(self) -> None:
        """Note the objects reachable from the inputs a hit can find again (see ``_identity``),
        and the state outside the code's names it may change (``_watched``); the engine calls
        it when the code is about to run, after ``inputs``."""
        from ._identity import Before  # a computing run only: a hit needs no walk
        from ._watched import Watched

        self.watched = Watched.before(self.lookup, self.values, self.own_globals(), self.ignore, self.reserved())
        roots = {k: v for k, v in self.values.items() if v is not MISSING and (k in self.chains or self.restorable(k))}
        self.before = Before({**self.watched.roots(), **roots})

    def own_globals(self) -> dict[str, Any]:
        """The globals the code binds its global names in."""
        raise NotImplementedError

    def reserved(self) -> set[str]:
        """Labels of the state that mean something else to this binder."""
        return set()

    # -- state --

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what the code bound, plus inputs it mutated in place and the record of the objects
        it kept, ``KEPT``; ``{"unbound": [...]}``)."""
        state, extra = self.collected()
        return self.with_kept(state), extra

    def collected(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """What the code bound and the inputs it mutated (no identity record yet)."""
        from ._openfiles import file_object, reopen_hazard
        from ._spent import spent_resource

        state: dict[str, Any] = {}
        unbound: list[str] = []
        for name in self.reads.assigned:
            value = self.assigned_value(name)
            if value is MISSING:
                unbound.append(name)
            elif spent_resource(value):
                unbound.append(name)  # `with Pool() as pool:` left it terminated: no use after the block
            elif reopen_hazard(value):
                unbound.append(name)  # after a hit the name is unbound (loud), never an empty file
                if not file_object(value).closed:
                    warn(
                        f"statecache: '{self.name}' does not save {name!r}, a file open for "
                        "writing: restoring it would reopen and empty the file. Open it after "
                        "the block.")
            else:
                state[name] = value
        mutated, gone = self.mutated_inputs(set(state))
        outside, outside_gone = self.changed_outside({*state, *mutated, *gone})
        state = {**state, **mutated, **outside}
        from ._unrestorable import refusals

        refused = refusals(self.before)
        if refused:
            from .entry.pickling import Refused

            state[NOT_RESTORABLE] = Refused(refused)
        return state, {"unbound": unbound + gone + outside_gone}

    def changed_outside(self, skip: set[str]) -> tuple[dict[str, Any], list[str]]:
        """What the code changed besides its names and inputs (``_watched``): attributes of
        the user's modules its helpers set, data they changed in place; a class changed in
        place as a ``ClassState``."""
        watched, self.watched = self.watched, None
        if watched is None:
            return {}, []
        from ._objectstate import ClassState

        state, gone, in_place = watched.changes(skip)
        for label in in_place:
            value = state[label]
            if isinstance(value, type):
                state[label] = ClassState.of(value, watched.class_before(value))
        return state, gone

    def with_kept(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` and, last (so that it pickles as references), the record of the objects
        the code kept from before it ran, when there is any beyond the mutated inputs."""
        before, self.before = self.before, None
        if before is None:
            return state
        from ._identity import kept

        record = kept(state, before, self.implied_roots(state))
        return state if record is None else {**state, KEPT: record}

    def implied_roots(self, state: dict[str, Any]) -> dict[str, str]:
        """State label -> the input label whose object it is, for the inputs mutated in place
        (a hit finds them by name, without a record)."""
        assigned = set(self.reads.assigned)
        return {k: self.input_label(k) for k in state if k not in assigned and "." not in k and k != RETURN}

    def input_label(self, label: str) -> str:
        return label

    def mutated_inputs(self, bound: set[str]) -> tuple[dict[str, Any], list[str]]:
        """Inputs whose fingerprint changed while the code ran (attributes of the user's modules
        included: ``helpers.TABLE[k] = v``); and such attributes the code deleted."""
        from ._watched import changed_since
        from .key.values import Fingerprinter

        fp = Fingerprinter(ignore=self.ignore)
        state: dict[str, Any] = {}
        gone: list[str] = []
        for label, before in self.fingerprints.items():
            if label in bound:
                continue
            if label in self.chains:
                value = resolve(self.lookup, label)
                if value is MISSING:
                    if self.values[label] is not MISSING:
                        gone.append(label)  # del helpers.X
                    continue
            elif not self.restorable(label):  # sys.argv, os.environ[...], imports: not names
                continue
            else:
                value = self.values[label]
            if changed_since(fp, value, label, before):
                state.update(self._changed_input(label, value))
        return state, gone

    def _changed_input(self, label: str, value: Any) -> dict[str, Any]:
        """What to save of an input whose fingerprint changed: a class or function that is
        still the one read (pickled by reference) as its state, applied in place on a hit (a
        function only when its own state changed, not the globals it reads: ``_watched``
        watches those); any other value as it is (one rebound is bound again)."""
        import types

        from ._objectstate import ClassState, FunctionState

        if value is not self.values[label] or not isinstance(value, (type, types.FunctionType)):
            return {label: value}
        watched = self.watched
        if isinstance(value, type):
            return {label: ClassState.of(value, watched.class_before(value) if watched is not None else None)}
        changed, recoded = watched.function_changed(label, value) if watched is not None else (True, True)
        return {label: FunctionState(value, recoded)} if changed else {}

    def restorable(self, label: str) -> bool:
        """Whether an input label names something this binder can put back."""
        return label.isidentifier()

    # -- restore --

    def restore(self, state: dict[str, Any], unbound: list[str]) -> None:
        """Put a hit's state back: the objects the computing run kept get the saved content in
        place (other names for them see it, see ``_identity``), module attributes are set, and
        the names the code binds are bound. A fill that fails leaves its object as it was and
        binds the saved copy instead (said in a warning), never an object half filled."""
        state = dict(state)
        record = state.pop(KEPT, None)
        objectstate = sys.modules.get(f"{__package__}._objectstate")  # loaded by the state's records
        if objectstate is not None:
            for label in [k for k, v in state.items() if isinstance(v, objectstate.ObjectState)]:
                target = self.current_input(label)
                try:
                    state.pop(label).apply(target)
                except Exception as exc:  # put back as it was (``ObjectState.apply``)
                    self._not_filled(target, exc, "it keeps what it had before the block")
        roots = self.implied_roots(state)
        if record is not None or roots:  # most hits bind new objects only: no _identity import
            from ._identity import Rewire

            rewire = Rewire(record, self.input_now)
            live = {k: self.current_input(k) for k in roots}
            in_place = {k for k in roots if rewire.pair(state[k], live[k])}
            rewire.run()
            state = {k: rewire.sub(v) for k, v in state.items() if k not in in_place or rewire.sub(v) is not live[k]}
            for target, why in rewire.failed:
                self._not_filled(target, why, "the names the block binds hold a restored copy; other names "
                                 "for that object keep what it had before the block")
        self._restore_attributes(state, unbound)
        self.bind(state, [n for n in unbound if "." not in n])

    def _not_filled(self, target: Any, exc: BaseException, outcome: str) -> None:
        warn(f"statecache: '{self.name}' could not put the saved state into the {type(target).__name__} "
             f"object the script holds ({type(exc).__name__}: {exc}); {outcome}. Recompute with "
             f"STATECACHE_REFRESH={self.name} if that object matters.")

    def input_now(self, label: str) -> Any:
        """The current value of the input ``label`` (where a kept object's path starts)."""
        return resolve(self.lookup, label)

    def current_input(self, label: str) -> Any:
        return resolve(self.lookup, label)

    def _restore_attributes(self, state: dict[str, Any], unbound: list[str]) -> None:
        """Attributes of the user's modules that the code set, replaced or deleted (dotted
        labels; the module itself is restored by reference, so only its attribute can carry
        the change; one the code mutated in place was filled by the rewiring)."""
        for label in [k for k in (*state, *unbound) if "." in k and not k.startswith(_ARGUMENT)]:
            prefix, _, attr = label.rpartition(".")
            owner = resolve(self.lookup, prefix)
            if owner is MISSING:
                state.pop(label, None)
                continue
            if label in state:
                value = state.pop(label)
                if getattr(owner, attr, MISSING) is not value:
                    setattr(owner, attr, value)
            elif hasattr(owner, attr):
                delattr(owner, attr)


class FrameBinder(Binder):
    """The frame holding a ``with checkpoint`` block: module globals, or a function's locals
    (names local to the function are read and written there, the others in its globals)."""

    def __init__(self, frame: FrameType, reads: Reads, name: str, ignore: Iterable[str], context: str):
        super().__init__(reads, name, ignore, context, str(frame.f_globals.get("__package__") or ""))
        self.frame = frame
        self.as_value: tuple[str, Any] | None = None  # ``with ... as cp``: bound on a restore
        self._locals = frame.f_locals
        self._local_names = _local_names(frame)

    def own_globals(self) -> dict[str, Any]:
        return self.frame.f_globals

    def refresh(self) -> None:
        """Read the frame's locals again (a function frame's ``f_locals`` is a snapshot)."""
        self._locals = self.frame.f_locals

    def lookup(self, name: str) -> Any:
        if name in self._locals:
            return self._locals[name]
        return self.frame.f_globals.get(name, MISSING)

    def assigned_value(self, name: str) -> Any:
        local = self._local_names is None or name in self._local_names
        return (self._locals if local else self.frame.f_globals).get(name, MISSING)

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.refresh()
        return super().state()

    def restore(self, state: dict[str, Any], unbound: list[str]) -> None:
        self.refresh()
        super().restore(state, unbound)
        if self.as_value is not None:  # the live checkpoint object, never merged into another
            self.bind(dict([self.as_value]), [])

    def bind(self, values: dict[str, Any], unbound: list[str]) -> None:
        local_names = self._local_names
        if local_names is None:
            write_names(self.frame, values, unbound)
            return
        write_names(
            self.frame,
            {k: v for k, v in values.items() if k in local_names},
            [n for n in unbound if n in local_names],
        )
        for k, v in values.items():
            if k not in local_names:
                self.frame.f_globals[k] = v
        for n in unbound:
            if n not in local_names:
                self.frame.f_globals.pop(n, None)


class NamespaceBinder(Binder):
    """An IPython user namespace (``%%checkpoint`` cells)."""

    def __init__(self, namespace: dict[str, Any], reads: Reads, name: str, ignore: Iterable[str], context: str):
        super().__init__(reads, name, ignore, context, str(namespace.get("__package__") or ""))
        self.namespace = namespace

    def lookup(self, name: str) -> Any:
        return self.namespace.get(name, MISSING)

    def own_globals(self) -> dict[str, Any]:
        return self.namespace

    def bind(self, values: dict[str, Any], unbound: list[str]) -> None:
        self.namespace.update(values)
        for name in unbound:
            if name not in values:
                self.namespace.pop(name, None)


class GlobalsBinder(Binder):
    """A ``cached_setup`` function: its inputs are its arguments, the globals and closure
    variables its code reads, and the implicit inputs of its body; its state is the return
    value, the globals it assigns (``global x``), and the arguments, globals and module
    attributes it mutated in place."""

    def __init__(
        self,
        fn: Callable[..., Any],
        reads: Reads | None,
        stored_globals: Iterable[str],
        name: str,
        ignore: Iterable[str],
        context: str,
    ):
        self.fn = fn
        self.globals: dict[str, Any] = fn.__globals__
        self.stored = tuple(stored_globals)
        # every global name the code (nested code too) may load; a name the function only
        # assigns (``global x; x = ...``) is its output, not its input
        read_first = set(reads.inputs) if reads is not None else set(self.stored)
        self.global_reads: tuple[str, ...] = tuple(
            n for n in sorted(names_used(fn.__code__))
            if n in self.globals and (n not in self.stored or n in read_first)
        )
        reads = (reads or EMPTY_READS)._replace(assigned=self.stored, inputs=())
        super().__init__(reads, name, ignore, context, str(self.globals.get("__package__") or ""))
        self.arguments: dict[str, Any] = {}
        self.result: Any = None

    def lookup(self, name: str) -> Any:
        return self.globals.get(name, MISSING)

    def own_globals(self) -> dict[str, Any]:
        return self.globals

    def reserved(self) -> set[str]:
        return set(self.arguments)  # input_now finds these among the arguments

    def bind_arguments(self, arguments: dict[str, Any]) -> None:
        self.arguments = {k: v for k, v in arguments.items() if k not in self.ignore}

    def inputs(self) -> dict[str, str]:
        self.chains = set()
        ignored = set(self.ignore)
        read = {
            n: self.globals[n] for n in self.global_reads
            if n in self.globals and n not in self.arguments and n not in ignored
        }
        read.update(_closure_values(self.fn, ignored))
        named = {**self.arguments, **read}
        implicit = implicit_values(self.reads, named, self.lookup, ignored, self.package, self.chains)
        if getattr(self.fn, "__dict__", None) and "attributes of the function" not in ignored:
            implicit["attributes of the function"] = dict(self.fn.__dict__)
        self.values = {**named, **implicit}
        self.fingerprints = fingerprint_values(self.values, self.ignore, self.label, self.context)
        return self.fingerprints

    def restorable(self, label: str) -> bool:
        return label in self.arguments or label in self.global_reads

    def mutated_inputs(self, bound: set[str]) -> tuple[dict[str, Any], list[str]]:
        state, gone = super().mutated_inputs(bound)
        return {(_ARGUMENT + k if k in self.arguments else k): v for k, v in state.items()}, gone

    def collect(self, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        state, extra = self.collected()
        return self.with_kept({RETURN: result, **state}), extra

    def input_now(self, label: str) -> Any:
        if label in self.arguments:
            return self.arguments[label]
        return super().input_now(label)

    def input_label(self, label: str) -> str:
        return label[len(_ARGUMENT):] if label.startswith(_ARGUMENT) else label

    def current_input(self, label: str) -> Any:
        if label.startswith(_ARGUMENT):
            return self.arguments.get(label[len(_ARGUMENT):], MISSING)
        return super().current_input(label)

    def restore(self, state: dict[str, Any], unbound: list[str]) -> None:
        self.result = None
        super().restore(state, unbound)

    def bind(self, values: dict[str, Any], unbound: list[str]) -> None:
        values = {k: v for k, v in values.items() if not k.startswith(_ARGUMENT)}
        self.result = values.pop(RETURN, None)
        self.globals.update(values)
        for name in unbound:
            if name not in values:
                self.globals.pop(name, None)


def _closure_values(fn: Any, ignored: set[str]) -> dict[str, Any]:
    """The variables a nested function closes over, by current value (empty cells left out)."""
    values: dict[str, Any] = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
        if name in ignored:
            continue
        try:
            values[name] = cell.cell_contents
        except ValueError:  # not assigned yet
            continue
    return values


def names_used(code: CodeType) -> set[str]:
    """Every global or attribute name a function's code (nested code included) mentions."""
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, CodeType))
    return names


def _local_names(frame: FrameType) -> set[str] | None:
    """The names local to a function frame (None for module and class frames)."""
    if not is_function_frame(frame):
        return None
    code = frame.f_code
    return set(code.co_varnames) | set(code.co_cellvars) | set(code.co_freevars)
