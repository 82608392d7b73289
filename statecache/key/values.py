"""Fingerprints of values: the ``Fingerprinter`` and its key pickler.

A key must change whenever anything that could change a checkpoint's result
changes (a wrong hit is the worst bug statecache can have: when in doubt, miss),
and must be identical across runs and processes (PYTHONHASHSEED randomised), or
every run misses. Everything here therefore avoids ``hash()``, ``id()``-dependent
orders and set iteration orders; identities only ever matter *within* one value
(aliasing and cycles), where they are resolved in a deterministic traversal order.
A value restored from a cache entry must also fingerprint like the computed one,
so that the run after a hit keys downstream checkpoints the same way.

Code met inside a value (functions, classes, modules) is handed to the code graph
(``codegraph.CodeGraph``, which ``Fingerprinter`` extends).

Values that are not atoms, sets, arrays or code go through a protocol-5 pickle
whose ``persistent_id`` hook (not ``reducer_override``: the C pickler never calls
that for exact sets, dicts, lists and tuples) canonicalises what pickle gets wrong
for keys. numpy is never imported here: arrays are recognised via ``sys.modules``.
"""

from __future__ import annotations

import functools
import pickle
import struct
import sys
import types
from collections.abc import Callable, Iterable

import xxhash

from .._errors import FingerprintError
from . import dataframes
from .code import code_digest
from .codegraph import CodeGraph
from .hashing import U64, encode_str
from .project import forms, project_root, root_suffix
from .registry import registered_for
from .tensorprint import tensor_bytes, tensor_grad, tensor_head
from .valuetypes import dtype_descr, is_numpy_array_type, is_path_type, is_tensor_type
from .walk import ATOMS, SORT, TOP, Ctx, Refused, typename

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_xxh3_128_digest = xxhash.xxh3_128_digest
_PID_PLAIN, _PID_USER_INSTANCE, _PID_WALK, _PID_CODE = 0, 1, 2, 3


class _Writer:
    __slots__ = ("write",)

    def __init__(self, write: Callable[[bytes], object]):
        self.write = write


# Types that the pickler handles natively and deterministically: no persistent_id work.
# ``str`` is not among them: see _KeyPickler.persistent_id.
_PICKLE_NATIVE = frozenset(
    {int, float, bytes, bool, type(None), list, tuple, dict, complex, bytearray}
)


class _KeyPickler(pickle.Pickler):
    """Protocol-5 pickler whose output only feeds a digest, never gets unpickled.

    ``persistent_id`` (called for every object, unlike ``reducer_override``, which the C
    pickler skips for exact sets, dicts, lists and tuples) replaces what plain pickle gets
    wrong for keys: sets/frozensets (hash order) by a sorted fingerprint; functions, classes,
    modules by their code fingerprint; numpy arrays by dtype/shape/strides/bytes. For
    instances of user classes the class fingerprint is mixed in even when a custom
    ``__reduce__`` leaves the class out. Out-of-band buffers are hashed raw, uncopied.
    """

    def __init__(self, file: _Writer, fp: Fingerprinter, ctx: Ctx, side: Any, root: object):
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self._fp = fp
        self._root_forms = fp.root_forms
        self._ctx = ctx
        self._side = side
        self._root = root
        self._class_refs: dict[type, bytes] = {}
        self._code_pids: dict[int, tuple[object, tuple[str, bytes]]] = {}  # holds obj alive

    def _buffer(self, buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # non-contiguous: logical-order copy
            raw = memoryview(memoryview(buf).tobytes())
        self._side.update(b"b" + U64(raw.nbytes))
        self._side.update(raw)
        return False

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t in _PICKLE_NATIVE:
            return None
        if t is str:
            # By content, never by identity: pickle memoises strings by id, and unpickling
            # interns attribute names, so a restored object would share strings that the
            # computed one did not (a spurious miss on the run after a restore). A fresh
            # bytes object per occurrence makes the stream independent of string identity.
            if obj.startswith(self._root_forms):
                suffix = root_suffix(obj, self._fp.root)
                if suffix is not None:  # 0xFF starts no UTF-8 text: never the bytes of a string
                    return b"\xff~rel" + suffix.encode("utf-8", "surrogatepass")
            return obj.encode("utf-8", "surrogatepass")
        return self._fp._pid(obj, t, self)


class Fingerprinter(CodeGraph):
    """One key computation. Memoises code fingerprints (functions, classes, modules) within it.

    Use a new one per key: the values a function reads are memoised with its fingerprint.
    ``ignore`` names globals (read by the user's functions) left out of every fingerprint,
    so that the ``ignore=`` a FingerprintError suggests for such a global can be honoured.
    """

    def __init__(self, ignore: Iterable[str] = ()) -> None:
        super().__init__(ignore)
        # absolute paths inside the project root count relative to it (see project_text)
        self.root = project_root()
        self.root_forms = forms(self.root)  # what every such path starts with (a quick test)
        self._pid_kinds: dict[type, int] = {}
        self._dispatch: dict[type, Callable[[Any, Any, Ctx], None]] = {
            set: self._feed_set,
            frozenset: self._feed_set,
            types.MappingProxyType: self._feed_mappingproxy,
            types.FunctionType: self._feed_code_node,
            types.ModuleType: self._feed_code_node,
            type: self._feed_code_node,
            types.MethodType: self._feed_method,
            types.BuiltinFunctionType: self._feed_builtin,
            types.CodeType: self._feed_codeobj,
            functools.partial: self._feed_partial,
            staticmethod: self._feed_descriptor,
            classmethod: self._feed_descriptor,
            property: self._feed_descriptor,
            functools.cached_property: self._feed_descriptor,
            functools.partialmethod: self._feed_descriptor,
        }
        lru = getattr(functools, "_lru_cache_wrapper", None)
        if isinstance(lru, type):
            self._dispatch[lru] = self._feed_lru

    def value(self, obj: object, label: str) -> bytes:
        """16-byte fingerprint of ``obj`` (an input named ``label`` in error messages).

        Raises FingerprintError naming ``label`` and the type, with the ``ignore=`` fix.
        """
        h = xxhash.xxh3_128()
        try:
            self._feed(h, obj, Ctx(TOP))
        except Refused as e:
            raise FingerprintError(_message(label, obj, e)) from None
        except RecursionError:
            raise FingerprintError(
                f"cannot fingerprint input {label!r} ({typename(type(obj))}): it is nested "
                f"too deeply. If it does not affect the result, leave it out of the key with "
                f"ignore=[{label!r}]."
            ) from None
        except Exception as e:  # an object whose attributes or buffers misbehave
            raise FingerprintError(
                f"cannot fingerprint input {label!r} ({typename(type(obj))}): "
                f"{type(e).__name__}: {e}. If it does not affect the result, leave it out of "
                f"the key with ignore=[{label!r}]."
            ) from e
        return h.digest()

    def modules_met(self) -> set[str]:
        """The modules of the types met inside the values this walk pickled (a dict of frames)
        and of the library code it met (``pd`` read by a helper of a helper), each once:
        ``key.libsettings`` counts the settings of their libraries."""
        return {str(t.__module__) for t in self._pid_kinds} | self.library_modules

    def _feed(self, h: Any, obj: Any, ctx: Ctx) -> None:
        t = type(obj)
        if t is str and obj.startswith(self.root_forms):
            relative = self.project_text(obj)
            if relative is not None:
                h.update(relative)
                return
        atom = ATOMS.get(t)
        if atom is not None:
            atom(h.update, obj)
            return
        handler = self._dispatch.get(t)
        if handler is not None:
            handler(h, obj, ctx)
            return
        registered = registered_for(t)
        if registered is not None:
            self._feed_registered(h, obj, registered, ctx)
            return
        module = t.__module__
        if module.startswith("torch") and is_tensor_type(t):
            self._feed_tensor(h, obj, ctx)
            return
        if module == "numpy" or module.startswith("numpy."):
            np = sys.modules.get("numpy")
            if np is not None:
                if t is np.ndarray or t is np.memmap:
                    self._feed_array(h, obj, ctx)
                    return
                if isinstance(obj, np.generic):
                    h.update(b"n" + encode_str(dtype_descr(obj.dtype)) + obj.tobytes())
                    return
        if is_path_type(t):
            self._feed_path(h, obj)
        elif isinstance(obj, type):  # metaclass instances: classes
            self._feed_code_node(h, obj, ctx)
        elif isinstance(obj, (set, frozenset)):
            self._feed_set(h, obj, ctx)
        elif isinstance(obj, functools.partial):
            self._feed_partial(h, obj, ctx)
        elif dataframes.kind(t) is not None:
            self._feed_pandas(h, obj, ctx)
        else:
            self._feed_pickled(h, obj, ctx)

    def project_text(self, text: str) -> bytes | None:
        """The digest bytes of an absolute path inside the project root, relative to it: a
        path built from ``__file__`` keys alike in two clones of the project. None for any
        other text. Tagged apart from every plain string, so that no path outside the root
        (nor a relative path, which depends on the working directory) can equal one inside."""
        suffix = root_suffix(text, self.root)
        return None if suffix is None else b"~rel" + encode_str(suffix)

    def _feed_path(self, h: Any, path: Any) -> None:
        """A pathlib path by its class and text (an absolute one inside the project relative
        to the root); its pickle holds its parts, where the root could not be found."""
        text = str(path)
        h.update(b"~path" + encode_str(typename(type(path))))
        relative = self.project_text(text) if text.startswith(self.root_forms) else None
        h.update(relative if relative is not None else b"s" + encode_str(text))

    def _feed_pandas(self, h: Any, obj: Any, ctx: Ctx) -> None:
        """A DataFrame, Series, Index or extension array by what defines its value (see
        ``dataframes``): reading it, which fills its caches, does not change its fingerprint."""
        if self._memo(h, obj, ctx):
            return
        h.update(b"pd")
        self._feed_parts(h, dataframes.parts(obj), ctx)

    def _feed_parts(self, h: Any, parts: Any, ctx: Ctx) -> None:
        """Canonical parts: tuples and lists walked here, every other part in a traversal of
        its own, so that which parts happen to be one object (a dtype that pandas shares
        between columns, or not) cannot count."""
        if type(parts) is tuple or type(parts) is list:
            h.update(b"(" + U64(len(parts)))
            for part in parts:
                self._feed_parts(h, part, ctx)
            h.update(b")")
        else:
            sub = Ctx(ctx.mode)
            h.update(self._sub(parts, sub))
            ctx.saw_code = ctx.saw_code or sub.saw_code

    def _sub(self, obj: Any, ctx: Ctx) -> bytes:
        h = xxhash.xxh3_128()
        self._feed(h, obj, ctx)
        return h.digest()

    def _memo(self, h: Any, obj: Any, ctx: Ctx) -> bool:
        """True (and a back-reference fed) if ``obj`` was already visited in this traversal."""
        key = id(obj)
        for level, outer in enumerate(ctx.outer):
            i = outer.get(key)
            if i is not None:
                h.update(b"^" + U64(level) + U64(i))
                return True
        i = ctx.memo.get(key)
        if i is not None:
            h.update(b"@" + U64(i))
            return True
        ctx.memo[key] = len(ctx.memo)
        ctx.keep.append(obj)
        return False

    def _feed_mappingproxy(self, h: Any, obj: types.MappingProxyType, ctx: Ctx) -> None:
        h.update(b"M" + U64(len(obj)))
        for k, v in obj.items():
            self._feed(h, k, ctx)
            self._feed(h, v, ctx)

    def _feed_set(self, h: Any, obj: set | frozenset, ctx: Ctx) -> None:
        """Elements in the order of their own fingerprints, so PYTHONHASHSEED cannot matter.

        Each sort key is computed in a fresh traversal (so it does not depend on which
        element came first). Inside a code node's digest, if code was met, the elements are
        then fed again, in sorted order, in the real traversal.
        """
        if isinstance(obj, set) and self._memo(h, obj, ctx):
            return
        t = type(obj)
        h.update((b"S" if isinstance(obj, set) else b"Z") + U64(len(obj)))
        if t is not set and t is not frozenset:
            self._feed(h, t, ctx)
            self._feed(h, getattr(obj, "__dict__", None), ctx)
        outer = (*ctx.outer, ctx.memo)
        keys: list[bytes] = []
        saw_code = False
        # At top level the sort keys are complete fingerprints; inside a code node's own
        # digest they hold only a shallow identity of code (see _ref), hence the re-feed.
        sub_mode = TOP if ctx.mode == TOP else SORT
        for item in obj:
            t = type(item)
            if t is str:  # the commonest element: one call, no traversal state
                relative = self.project_text(item) if item.startswith(self.root_forms) else None
                keys.append(_xxh3_128_digest(relative or b"s" + item.encode("utf-8", "surrogatepass")))
                continue
            atom = ATOMS.get(t)
            if atom is not None:
                parts: list[bytes] = []
                atom(parts.append, item)
                keys.append(_xxh3_128_digest(b"".join(parts)))
                continue
            sub = Ctx(sub_mode, outer)
            keys.append(self._sub(item, sub))
            saw_code = saw_code or sub.saw_code
        if saw_code and ctx.mode != SORT:
            items = list(obj)  # same iteration order as above: the set was not modified
            for i in sorted(range(len(keys)), key=keys.__getitem__):
                self._feed(h, items[i], ctx)
        else:
            ctx.saw_code = ctx.saw_code or saw_code
            keys.sort()
            h.update(b"".join(keys))

    def _feed_array(self, h: Any, a: Any, ctx: Ctx) -> None:
        """dtype, shape, strides, whether it is read-only, and the raw bytes, hashed in place
        when contiguous."""
        np = sys.modules["numpy"]
        dt = a.dtype
        head = b"A" + encode_str(dtype_descr(dt)) + U64(a.ndim)
        head += b"".join(U64(n) for n in a.shape)
        # A stride along an axis of length 0 or 1 is never used (numpy leaves arbitrary values
        # there, e.g. x[:, None], and unpickling canonicalises them): it counts as 0.
        head += b"".join(
            struct.pack("<q", s if n > 1 else 0) for n, s in zip(a.shape, a.strides, strict=True)
        )
        if not a.flags.writeable:
            head += b"R"  # a block writing to it raises (np.load(mmap_mode='r')); writeable adds nothing
        if dt.hasobject:
            if self._memo(h, a, ctx):
                return
            h.update(head + b"O")
            # Object arrays (and structured ones holding objects): element by element.
            self._feed(h, a.tolist() if dt.fields is not None else list(a.flat), ctx)
            return
        h.update(head)
        if a.nbytes == 0:
            return
        if a.flags.c_contiguous or a.flags.f_contiguous:
            h.update(a.ravel(order="K").view(np.uint8))
            return
        # Non-contiguous view: copy a bounded slab of leading-axis rows at a time.
        row = max(1, a.nbytes // max(1, a.shape[0]))
        step = max(1, (64 << 20) // row)
        for start in range(0, a.shape[0], step):
            chunk = np.ascontiguousarray(a[start : start + step])
            h.update(chunk.reshape(-1).view(np.uint8))

    def _feed_tensor(self, h: Any, t: Any, ctx: Ctx) -> None:
        """A torch tensor like a numpy array (``tensorprint``: its pickle holds storage
        addresses, so it never hits), and its gradient (``backward()`` fills it in place; a
        block may read it)."""
        if self._memo(h, t, ctx):
            return
        torch = sys.modules["torch"]
        h.update(tensor_head(t))
        if t.layout != torch.strided or t.is_quantized:
            self._feed_pickled(h, t.detach().cpu(), ctx)  # sparse, quantized: by their parts
        elif t.device.type != "meta" and t.numel() != 0:
            h.update(tensor_bytes(t))
        grad = tensor_grad(t)
        if grad is not None:
            h.update(b"grad")
            self._feed(h, grad, ctx)

    def _feed_pickled(self, h: Any, obj: Any, ctx: Ctx) -> None:
        """Lists, tuples, dicts and every other object: through _KeyPickler (C speed).

        Containers keep their type and order. Dicts count in insertion order, not sorted:
        iteration order is observable in Python, so the same items in another order are
        another input; that can only cause a miss, never a stale hit, and it keeps
        unsortable keys cheap and deterministic. Aliasing (the same list twice) and cycles
        are encoded by pickle's memo, in traversal order, so they are deterministic too.
        """
        if self._memo(h, obj, ctx):
            return
        stream = xxhash.xxh3_128()
        side = xxhash.xxh3_128()
        pickler = _KeyPickler(_Writer(stream.update), self, ctx, side, obj)
        try:
            pickler.dump(obj)
        except Refused:
            raise
        except RecursionError:
            raise
        except Exception as e:  # TypeError, PicklingError, whatever a __reduce__ raises
            raise Refused(type(obj), f"pickle refuses it ({type(e).__name__}: {e})") from None
        h.update(b"P" + stream.digest() + side.digest())

    def _pid(self, obj: Any, t: type, pickler: _KeyPickler) -> Any:
        kind = self._pid_kinds.get(t)
        if kind is None:
            kind = self._pid_kinds[t] = self._pid_kind(t)
        if kind == _PID_PLAIN:
            return None
        if kind == _PID_USER_INSTANCE:
            ref = pickler._class_refs.get(t)
            if ref is None:
                ref = pickler._class_refs[t] = b"C" + self._ref(t, pickler._ctx)
                self._keep.append(t)
            pickler._side.update(ref)
            return None
        if obj is pickler._root:  # never happens: the walker feeds these types itself
            return None
        if kind == _PID_CODE:  # copyreg.__newobj__, classes: met once per object pickled
            hit = pickler._code_pids.get(id(obj))
            if hit is None:
                hit = pickler._code_pids[id(obj)] = (
                    obj,
                    ("statecache", self._sub(obj, pickler._ctx)),
                )
            return hit[1]
        return ("statecache", self._sub(obj, pickler._ctx))

    def _pid_kind(self, t: type) -> int:
        if t is types.FunctionType or t is types.ModuleType or issubclass(t, type):
            return _PID_CODE
        if (
            t in self._dispatch
            or issubclass(t, (type, set, frozenset, functools.partial))
            or is_numpy_array_type(t)
            or is_tensor_type(t)
            or is_path_type(t)
            or dataframes.kind(t) is not None
            or registered_for(t) is not None
        ):
            return _PID_WALK
        return _PID_USER_INSTANCE if self._is_user_class(t) else _PID_PLAIN

    def _feed_registered(self, h: Any, obj: Any, fingerprint: Callable[[Any], Any], ctx: Ctx) -> None:
        t = type(obj)
        try:
            value = fingerprint(obj)
        except Exception as exc:
            raise FingerprintError(
                f"the function registered with register_fingerprint for {t.__module__}."
                f"{t.__qualname__} raised {type(exc).__name__}: {exc}") from None
        h.update(b"R" + encode_str(f"{t.__module__}.{t.__qualname__}"))
        self._feed(h, value, ctx)

    def _feed_method(self, h: Any, obj: types.MethodType, ctx: Ctx) -> None:
        h.update(b"m")
        self._feed(h, obj.__func__, ctx)
        self._feed(h, obj.__self__, ctx)

    def _feed_builtin(self, h: Any, obj: Any, ctx: Ctx) -> None:
        h.update(b"B" + self._leaf(obj))
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            # A builtin method bound to an object (``mylist.append``, ``d.get``): the object counts.
            self._feed(h, owner, ctx)

    def _feed_partial(self, h: Any, obj: functools.partial, ctx: Ctx) -> None:
        h.update(b"p")
        if type(obj) is not functools.partial:
            self._feed(h, type(obj), ctx)
        self._feed(h, obj.func, ctx)
        self._feed(h, obj.args, ctx)
        self._feed(h, obj.keywords, ctx)
        self._feed(h, getattr(obj, "__dict__", None) or None, ctx)

    def _feed_lru(self, h: Any, obj: Any, ctx: Ctx) -> None:
        # functools.lru_cache/cache wrapper: the wrapped function's code (its cache holds
        # results of that code and does not change what a call returns).
        h.update(b"lru" + encode_str(getattr(obj, "__qualname__", "")))
        self._feed(h, obj.__wrapped__, ctx)
        code = getattr(obj.__wrapped__, "__code__", None)
        if isinstance(code, types.CodeType):  # what it read when filled outside the user's functions
            from .readlog import earlier_reads_digest

            h.update(earlier_reads_digest(code))

    def _feed_descriptor(self, h: Any, obj: Any, ctx: Ctx) -> None:
        t = type(obj)
        h.update(b"d" + encode_str(t.__qualname__))
        if isinstance(obj, (staticmethod, classmethod)):
            self._feed(h, obj.__func__, ctx)
        elif isinstance(obj, property):
            for part in (obj.fget, obj.fset, obj.fdel, obj.__doc__):
                self._feed(h, part, ctx)
        elif isinstance(obj, functools.cached_property):
            self._feed(h, obj.func, ctx)
            self._feed(h, obj.attrname, ctx)
        else:  # partialmethod
            self._feed(h, obj.func, ctx)
            self._feed(h, obj.args, ctx)
            self._feed(h, obj.keywords, ctx)

    def _feed_codeobj(self, h: Any, obj: types.CodeType, ctx: Ctx) -> None:
        h.update(b"co" + code_digest(obj))


def _message(label: str, obj: object, e: Refused) -> str:
    where = "".join(f", in {w}" for w in e.where)
    inner = "" if e.culprit is type(obj) and not e.where else f": a {typename(e.culprit)}{where}"
    suggest = e.suggest or label
    if hasattr(e.culprit, "__next__"):  # a generator, a csv.reader, an open file
        return (
            f"cannot fingerprint input {label!r} ({typename(type(obj))}){inner}; {e.reason}. "
            f"It is an iterator: what the block draws from it cannot be keyed, and a hit would "
            f"not advance it, so make it inside the block (or pass a list of its items). Only "
            f"if the block never draws from it, leave it out of the key with ignore=[{suggest!r}]."
        )
    return (
        f"cannot fingerprint input {label!r} ({typename(type(obj))}){inner}; {e.reason}. "
        f"statecache needs the content of every input to know whether a cached result is "
        f"still valid. If it does not affect the result, leave it out of the key with "
        f"ignore=[{suggest!r}]; if it does, say what counts with "
        f"statecache.register_fingerprint({typename(e.culprit).rpartition('.')[2]}, lambda value: ...)."
    )
