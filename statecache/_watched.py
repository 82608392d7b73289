"""What a block can change besides the names it binds, noted before it runs and compared after
it: state a hit must put back, so that the process is as the computing run left it.

- Attributes of the user's modules (``key.provenance.is_user_module`` decides which are the
  user's), of every such module loaded from a file when the block starts: a helper's
  ``helpers.SCALE = 7``, ``setattr(config, k, v)``, an attribute added or deleted, found by
  identity; plain data (a list, dict or set of numbers and strings, an object whose
  attributes are such data) by content too (``plain_content``), so that ``h.TABLE[k] = v``
  through a local import is seen. This is read from the modules, not from the code that
  changes them: no scan of the source finds ``setattr`` with computed names.
- The data and classes the block's helpers read (``key.helpercode.data_read_by_helpers``):
  ``REG.append(x)`` or ``Model.default = 5`` in ``def setup()``, ``m.ARR += 1`` after an
  ``import h2 as m`` inside one, by content, by the rule the block's own inputs are checked
  with (``changed_since``). The methods of the instances the inputs hold are such helpers
  (``instance_classes``), and the data of those classes is compared by content too
  (``data_content``: ``self.arr[0] += 1`` in ``m.add()``).

  Cost: only what the code can reach this way is hashed (twice: before and after); every
  other attribute of the user's modules is compared by identity, plus plain data (small) by
  content, so a module holding a 100 MB array the block's code does not reach costs nothing.
- The dict of each class among those and among the block's inputs (``class_before``), so that
  what the block patches onto a class (a method, a property) is known and can be set back;
  and the own state of each function among the inputs (``function_changed``): a function
  whose fingerprint changed only because a global it reads did is not itself changed.

Only a computing run pays for this (``Binder.remember_inputs``). The code's own namespace is
the binder's (the names it binds, the ``global`` names of its helpers: ``key.inputs``), and
only what the helpers read of it is watched here.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import xxhash

from ._errors import FingerprintError
from ._objectstate import CODE, is_dunder
from .key.inputs import MISSING, Lookup, global_label, module_label, resolve

if TYPE_CHECKING:
    from .key.helpercode import Slot

_MUTABLE_DATA = (list, dict, set, bytearray)


def changed_since(fp: Any, value: Any, label: str, before: str | None) -> bool:
    """Whether ``value`` no longer has the fingerprint ``before`` (hex; None when it had none):
    the one rule by which a run's objects count as changed in place. One that cannot be
    fingerprinted now counts as changed (saving it is never wrong)."""
    if before is None:
        return True
    try:
        return bool(fp.value(value, label).hex() != before)
    except FingerprintError:
        return True


def _fingerprint(fp: Any, value: Any, label: str) -> str | None:
    try:
        return str(fp.value(value, label).hex())
    except FingerprintError:
        return None


def plain_content(value: Any) -> bytes | None:
    """A digest of the content of a list, dict, set or bytearray of plain data (numbers,
    strings, containers of them: ``key.walk.is_plain_data``), or of an object of a Python class
    whose attributes are such data (a config object); None for anything else (watched by
    identity only). For a comparison within one run, so the pickle of the value serves: far
    cheaper than a key's fingerprint for the many small values of the user's modules."""
    import pickle

    from ._fill import plain_instance
    from .key.walk import is_plain_data

    if isinstance(value, _MUTABLE_DATA):
        data = value
    elif isinstance(value, type) or not plain_instance(value):
        return None
    else:
        data = vars(value)
    if not is_plain_data(data):
        return None
    try:
        return bytes(xxhash.xxh3_128_digest(pickle.dumps(data, 5)))
    except Exception:  # a value that changes while it is pickled: watched by identity
        return None


def data_content(fp: Any, value: Any, label: str) -> bytes | None:
    """``plain_content`` of plain data, else the key fingerprint of data that is not code (an
    array, a DataFrame, a set of arrays): for the data of the classes the code reaches, whose
    in-place change (``self.arr[0] += 1`` in a method) no identity shows."""
    plain = plain_content(value)
    if plain is not None or isinstance(value, CODE):
        return plain
    try:
        return b"fp" + fp.value(value, label)
    except FingerprintError:
        return None


#: objects the walk for the classes of the inputs' instances visits at most
_INSTANCE_BUDGET = 10_000


def instance_classes(values: Iterable[Any]) -> list[type]:
    """The classes of the user's modules of the instances ``values`` hold (through containers,
    instances and functions' defaults, ``_identity.children``), their bases of the user's
    too: their methods are code the block runs (``m.add()``) and their data what it changes."""
    from ._fill import plain_instance
    from ._identity import children

    found: dict[int, type] = {}
    kinds: set[type] = set()  # the types met (each looked at once)
    seen: set[int] = set()
    stack = list(values)
    while stack and len(seen) < _INSTANCE_BUDGET:
        value = stack.pop()
        if id(value) in seen or isinstance(value, (type, types.ModuleType)):
            continue
        seen.add(id(value))
        kind = type(value)
        if kind not in kinds:
            kinds.add(kind)
            if plain_instance(value):
                for base in user_classes(kind):
                    found.setdefault(id(base), base)
        stack.extend(item for _step, item in children(value))
    return list(found.values())


def user_classes(kind: type) -> list[type]:
    """The classes of the user's modules in ``kind.__mro__`` (``kind`` first when it is one):
    the data ``kind`` and its instances read and change through inheritance."""
    from .key.provenance import is_user_module_name

    return [b for b in kind.__mro__ if b is not object and is_user_module_name(b.__module__)]


class Watched:
    """The state noted before a block runs (see the module docstring)."""

    def __init__(self, lookup: Lookup, own: dict[str, Any], ignore: Iterable[str], reserved: Iterable[str]):
        from .key.values import Fingerprinter

        self.lookup = lookup
        self.own = own  # the code's own namespace: the binder's
        self.ignore = frozenset(ignore)
        self.reserved = frozenset(reserved)  # labels the binder gives another meaning
        self.fp = Fingerprinter(ignore=tuple(self.ignore))
        self.modules: dict[int, str] = {}  # id of a module's globals -> the name the code holds it by
        self.covered: dict[int, set[str]] = {}  # id of a globals dict -> its names watched elsewhere
        #: label -> (slot, the value before, its fingerprint) of what the helpers read
        self.reads: dict[str, tuple[Slot, Any, str | None]] = {}
        #: (a user module's globals, name -> (the value before, its ``plain_content`` or None))
        self.attributes: list[tuple[dict[str, Any], dict[str, tuple[Any, bytes | None]]]] = []
        self.classes: dict[int, tuple[type, dict[str, Any]]] = {}
        #: label -> (a function among the inputs, its code, the fingerprint of its own state)
        self.functions: dict[str, tuple[types.FunctionType, types.CodeType, str | None]] = {}
        #: label -> a class of the user's modules no input or helper read stands for, with the
        #: digests of its data: of its plain mutable data, or (``data_content``) of all its
        #: data for a class the code reaches
        self.class_data: dict[str, tuple[type, dict[str, bytes | None]]] = {}

    @classmethod
    def before(
        cls, lookup: Lookup, values: dict[str, Any], own: dict[str, Any], ignore: Iterable[str],
        reserved: Iterable[str] = (),
    ) -> Watched:
        """Note the state outside ``own`` a block whose inputs are ``values`` (label -> value,
        the binder's) can change."""
        watched = cls(lookup, own, ignore, reserved)
        watched._note_inputs(values)
        watched._note_helper_reads(values)
        watched._note_modules()
        return watched

    def _note_inputs(self, values: dict[str, Any]) -> None:
        """Which slots the binder's inputs already stand for, and the modules the code names."""
        for label, value in values.items():
            if label.isidentifier():
                now = self.lookup(label)
                if isinstance(now, types.ModuleType):
                    self.modules.setdefault(id(vars(now)), label)
                if now is self.own.get(label, MISSING):
                    self._cover(self.own, label)
            elif "." in label:
                prefix, _, attr = label.rpartition(".")
                owner = resolve(self.lookup, prefix)
                if isinstance(owner, types.ModuleType):
                    self._cover(vars(owner), attr)
            if isinstance(value, type):
                self._note_class(value)
                self._note_bases(value)
            elif isinstance(value, types.FunctionType):
                from ._objectstate import function_parts

                self.functions[label] = (value, value.__code__, _fingerprint(self.fp, function_parts(value), label))

    def function_changed(self, label: str, fn: types.FunctionType) -> tuple[bool, bool]:
        """(whether the code changed the function input ``label`` itself: its defaults,
        attributes or closure cells, ``_objectstate.function_parts``; whether it replaced the
        function's code)."""
        from ._objectstate import function_parts
        from .key.values import Fingerprinter

        noted = self.functions.get(label)
        if noted is None or noted[0] is not fn:
            return True, True
        recoded = fn.__code__ is not noted[1]
        parts = changed_since(Fingerprinter(ignore=tuple(self.ignore)), function_parts(fn), label, noted[2])
        return parts or recoded, recoded

    def _cover(self, glb: dict[str, Any], name: str) -> None:
        self.covered.setdefault(id(glb), set()).add(name)

    def _note_class(self, kind: type) -> None:
        if id(kind) not in self.classes:
            self.classes[id(kind)] = (kind, dict(vars(kind)))

    def _label(self, glb: dict[str, Any], name: str) -> str:
        label = global_label(glb, name, self.lookup, self.modules)
        if label in self.reserved:
            label = f"{module_label(str(glb.get('__name__')))}.{name}"
        return label

    def _skipped(self, glb: dict[str, Any], name: str, label: str) -> bool:
        return name in self.covered.get(id(glb), ()) or label in self.ignore or name in self.ignore

    def _note_helper_reads(self, values: dict[str, Any]) -> None:
        """What the code can reach besides its inputs: the data its helpers read (the methods
        of the inputs' instances among them), by fingerprint, and the classes of those
        instances and those the helpers read, with the content of their data."""
        reached = instance_classes(values.values())
        roots = [v for v in values.values() if callable(v) or isinstance(v, type)] + reached
        if not roots:
            return
        from .key.helpercode import data_read_by_helpers

        for (glb, name), value in data_read_by_helpers(roots):
            label = self._label(glb, name)
            if self._skipped(glb, name, label):
                continue
            self._cover(glb, name)
            self.reads[label] = ((glb, name), value, _fingerprint(self.fp, value, label))
            if isinstance(value, type):
                self._note_class(value)
                self._note_bases(value)
        for kind in reached:
            self._note_class_content(kind)

    def _note_bases(self, kind: type) -> None:
        """Note the user's classes ``kind`` inherits from by the content of their data: what
        ``Linear.registry[k] = v`` changes lives on the base ``Model``, not in ``vars(Linear)``
        (``kind`` itself, noted already, is skipped by ``_note_class_content``)."""
        for base in user_classes(kind):
            self._note_class_content(base)

    def _note_class_content(self, kind: type) -> None:
        """Note a class the code reaches by the content of all its data (``data_content``),
        where a global of its module names it (so that a hit can put it back)."""
        module = sys.modules.get(kind.__module__)
        glb = vars(module) if module is not None else None
        name = kind.__qualname__
        if glb is None or glb.get(name) is not kind or id(kind) in self.classes:
            return  # a nested or local class; or one already noted (an input, a helper read)
        label = self._label(glb, name)
        if self._skipped(glb, name, label):
            return
        self._note_class(kind)
        data = {k: data_content(self.fp, v, f"{label}.{k}") for k, v in vars(kind).items() if not is_dunder(k)}
        self.class_data[label] = (kind, data)

    def _note_modules(self) -> None:
        """Every attribute of every user module loaded now (the code's own namespace aside):
        by identity, and plain mutable data by content."""
        from .key.provenance import is_user_module, is_user_module_name

        seen = {id(self.own)}
        for module in list(sys.modules.values()):
            if not is_user_module(module) or not isinstance(getattr(module, "__file__", None), str):
                continue  # not the user's, or made at run time (a library's alias module)
            glb = vars(module)
            if id(glb) in seen:
                continue
            seen.add(id(glb))
            covered = self.covered.get(id(glb), set())
            noted: dict[str, tuple[Any, bytes | None]] = {}
            for name, value in list(glb.items()):
                if is_dunder(name) or name in covered:
                    continue
                noted[name] = (value, plain_content(value))
                if isinstance(value, type) and id(value) not in self.classes and is_user_module_name(value.__module__):
                    self._note_class(value)
                    data = {k: plain_content(v) for k, v in vars(value).items() if not is_dunder(k)}
                    self.class_data[self._label(glb, name)] = (value, data)
            self.attributes.append((glb, noted))

    def roots(self) -> dict[str, Any]:
        """label -> value of what this watches in place (where ``_identity.Before`` starts)."""
        roots = {label: value for label, (_slot, value, _fp) in self.reads.items()}
        for glb, noted in self.attributes:
            for name, (value, content) in noted.items():
                if content is not None:
                    roots.setdefault(self._label(glb, name), value)
        return roots

    def class_before(self, kind: type) -> dict[str, Any] | None:
        """The dict a class had before the block ran (None when it was not noted)."""
        noted = self.classes.get(id(kind))
        return noted[1] if noted is not None and noted[0] is kind else None

    def changes(self, skip: set[str]) -> tuple[dict[str, Any], list[str], set[str]]:
        """(label -> value now of what changed, the labels of what was deleted, the labels
        whose object is the one it was, changed in place); labels in ``skip`` left out."""
        from .key.values import Fingerprinter

        fp = Fingerprinter(ignore=tuple(self.ignore))
        state: dict[str, Any] = {}
        gone: list[str] = []
        in_place: set[str] = set()
        for label, ((glb, name), value, fingerprint) in self.reads.items():
            now = glb.get(name, MISSING)
            if label in skip:
                continue
            if now is MISSING:
                gone.append(label)
            elif now is not value:
                state[label] = now
            elif changed_since(fp, now, label, fingerprint):
                state[label] = now
                in_place.add(label)
        for glb, noted in self.attributes:
            for name in [*noted, *(n for n in list(glb) if n not in noted)]:
                value, content = noted.get(name, (MISSING, None))
                now = glb.get(name, MISSING)
                if now is value and (content is None or plain_content(now) == content):
                    continue
                label = self._label(glb, name)
                if label in skip or self._skipped(glb, name, label) or is_dunder(name):
                    continue
                if now is MISSING:
                    gone.append(label)
                else:
                    state[label] = now
                    if now is value:
                        in_place.add(label)
        for label, (kind, data) in self.class_data.items():
            if label not in skip and label not in state and self._class_changed(fp, kind, data):
                state[label] = kind
                in_place.add(label)
        return state, gone, in_place

    def _class_changed(self, fp: Any, kind: type, data: dict[str, bytes | None]) -> bool:
        """Whether the code bound, added or deleted an attribute of ``kind`` or changed in
        place the data noted in ``data`` (``data_content``)."""
        from .key.codegraph import CLASS_SKIP

        before = self.classes[id(kind)][1]
        now = vars(kind)
        if {k for k in now if k not in CLASS_SKIP} != {k for k in before if k not in CLASS_SKIP}:
            return True
        return any(
            before[k] is not v or (data.get(k) is not None and data_content(fp, v, k) != data[k])
            for k, v in now.items() if k not in CLASS_SKIP
        )
