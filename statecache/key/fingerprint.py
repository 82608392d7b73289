"""Cache keys: deterministic xxh3-128 fingerprints of code, values and files.

A key must change whenever anything that could change a checkpoint's result
changes (a wrong hit is the worst bug statecache can have: when in doubt, miss),
and must be identical across runs and processes (PYTHONHASHSEED randomised), or
every run misses. Everything here therefore avoids ``hash()``, ``id()``-dependent
orders and set iteration orders; identities only ever matter *within* one value
(aliasing and cycles), where they are resolved in a deterministic traversal order.
A value restored from a cache entry must also fingerprint like the computed one,
so that the run after a hit keys downstream checkpoints the same way.

Code (functions, classes, modules) forms a graph: each node gets a local digest
whose references to other code are numbered edges, and a node's fingerprint is a
canonical depth-first walk of that graph from it, so recursion terminates and the
result does not depend on what was fingerprinted before.

Values that are not atoms, sets, arrays or code go through a protocol-5 pickle
whose ``persistent_id`` hook (not ``reducer_override``: the C pickler never calls
that for exact sets, dicts, lists and tuples) canonicalises what pickle gets wrong
for keys. numpy is never imported here: arrays are recognised via ``sys.modules``.
"""

from __future__ import annotations

import ast
import builtins
import dis
import functools
import importlib.util
import os
import pickle
import struct
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from .._errors import FingerprintError
from .astdigest import ast_digest
from .provenance import STDLIB_NAMES, is_user_file, is_user_module, is_user_module_name

__all__ = [
    "Fingerprinter",
    "ast_digest",
    "digest",
    "file_digest",
    "is_user_file",
    "package_version",
]

_U64 = struct.Struct("<Q").pack
_F64 = struct.Struct("<d").pack
_C128 = struct.Struct("<dd").pack


def _nbytes(part: Any) -> int:
    return len(part) if isinstance(part, bytes) else memoryview(part).nbytes


def digest(*parts: bytes) -> bytes:
    """xxh3-128 of ``parts``, each length-prefixed so that ``(b"ab", b"c") != (b"a", b"bc")``."""
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(_U64(_nbytes(part)))
        h.update(part)
    return h.digest()


def _s(text: str) -> bytes:
    """A length-prefixed UTF-8 string (lone surrogates kept), as used inside every digest."""
    data = text.encode("utf-8", "surrogatepass")
    return _U64(len(data)) + data


_Imports = tuple[tuple[str, int, tuple[str, ...]], ...]
_SOURCES: dict[str, tuple[tuple[int, ...], bytes, _Imports]] = {}


def _source_info(path: str) -> tuple[bytes, _Imports]:
    """ast_digest of a Python source file and its import statements (module, level, names).

    Cached per path while its stat is unchanged; the raw file digest if it does not parse.
    """
    try:
        st = os.stat(path)
    except OSError:
        return b"missing:" + _s(path), ()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    hit = _SOURCES.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    imports: list[tuple[str, int, tuple[str, ...]]] = []
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
        result = b"ast" + ast_digest(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.extend((alias.name, 0, ()) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names if alias.name != "*")
                imports.append((node.module or "", node.level, names))
    except (OSError, SyntaxError, ValueError):
        try:
            result = b"raw" + bytes.fromhex(file_digest(path))
        except OSError:
            result = b"unreadable:" + _s(path)
    _SOURCES[path] = (stamp, result, tuple(imports))
    return result, tuple(imports)


def _source_digest(path: str) -> bytes:
    return _source_info(path)[0]


def _module_file(name: str) -> str | None:
    """The file a module name would be imported from, found without importing anything.

    The top-level package through the import system's finders; submodules of the user's
    packages by looking into the package directories (finding them through the import system
    would execute the package's ``__init__``).
    """
    top, *rest = name.split(".")
    if not top:
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None:
        return None
    path = spec.origin if spec.origin not in (None, "built-in", "frozen", "namespace") else None
    locations = list(spec.submodule_search_locations or [])
    for part in rest:
        found = None
        for loc in locations:
            for candidate in (
                os.path.join(loc, part, "__init__.py"),
                os.path.join(loc, part + ".py"),
            ):
                if os.path.isfile(candidate):
                    found = candidate
                    break
            if found is None and os.path.isdir(os.path.join(loc, part)):
                found = ""  # a namespace package
            if found is not None:
                break
        if found is None:
            return None  # an attribute, not a module
        path = found or None
        locations = (
            [os.path.dirname(found)]
            if found.endswith("__init__.py")
            else ([os.path.join(loc, part) for loc in locations] if found == "" else [])
        )
    return path


def _resolve_import(module: str, level: int, importer: str, is_package: bool) -> str | None:
    if not level:
        return module
    package = importer if is_package else importer.rpartition(".")[0]
    try:
        return importlib.util.resolve_name("." * level + module, package)
    except (ImportError, ValueError):
        return None


@functools.cache
def _distributions() -> dict[str, list[str]]:
    import importlib.metadata  # heavy (email, zipfile): only when a version is looked up

    try:
        return dict(importlib.metadata.packages_distributions())
    except Exception:  # broken metadata of some installed package: no mapping
        return {}


_LOADED_VERSIONS: dict[str, str] = {}


def package_version(module_name: str) -> str:
    """Version of the top-level package of ``module_name`` (``__version__``, else installed
    metadata); ``""`` for stdlib, builtins and anything without one (the user's modules).

    Cached per package once it is imported. For a package not imported (yet), the metadata
    alone: callers that may meet a package both imported and not (an import inside a
    function that a hit skips) use ``_dist_version`` so their key cannot depend on it.
    """
    top = module_name.partition(".")[0]
    if not top or top in STDLIB_NAMES or top == "__main__":
        return ""
    module = sys.modules.get(top)
    if module is None:
        return _dist_version(top)
    hit = _LOADED_VERSIONS.get(top)
    if hit is None:
        version = getattr(module, "__version__", None)
        hit = version if isinstance(version, str) and version else _dist_version(top)
        _LOADED_VERSIONS[top] = hit
    return hit


@functools.cache
def _dist_version(top: str) -> str:
    """Installed metadata version of an import name ("" if none); cached."""
    if not top or top in STDLIB_NAMES:
        return ""
    import importlib.metadata  # heavy (email, zipfile): only when a version is looked up

    try:
        return importlib.metadata.version(top)
    except Exception:  # PackageNotFoundError, or a broken METADATA file
        pass
    for dist in _distributions().get(top, []):  # import name != distribution name
        try:
            return importlib.metadata.version(dist)
        except Exception:
            continue
    return ""


def is_plain_data(value: Any, depth: int = 0) -> bool:
    """True for values made only of str, bytes, numbers, None and containers of them (a module's
    ``argv`` or flags); file objects, loggers and the like are not data of this kind."""
    if value is None or isinstance(value, (str, bytes, int, float, complex)):
        return True
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        return len(value) <= 10_000 and all(is_plain_data(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return len(value) <= 10_000 and all(
            is_plain_data(k, depth + 1) and is_plain_data(v, depth + 1) for k, v in value.items()
        )
    return False


def file_digest(path: str) -> str:
    """xxh3-128 hex digest of a file's content, read into one reused 256 KiB buffer.

    A buffer that stays in the CPU cache gives ~7 GB/s from the page cache here (1-16 MiB
    chunks: ~6). mmap is faster still, but a file truncated while mapped kills the process
    with SIGBUS, and these are data files that other programs may be rewriting.
    """
    h = xxhash.xxh3_128()
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


# ------------------------------------------------------------------ fingerprints


class _Refused(FingerprintError):
    """Internal: a value that cannot be fingerprinted, with where it was met (built outward)."""

    def __init__(self, culprit: type, reason: str):
        super().__init__(reason)
        self.culprit = culprit
        self.reason = reason
        self.where: list[str] = []
        self.suggest: str | None = None


_TOP, _LOCAL, _SORT = 0, 1, 2


class _Ctx:
    """State of one traversal.

    mode _TOP: code objects are fed as their full transitive fingerprint.
    mode _LOCAL: computing one code node's own digest; other code nodes become numbered edges.
    mode _SORT: sort keys of set elements; code nodes become a shallow identity.
    memo: id -> visit index of mutable containers and pickled objects (cycles, aliasing);
    keep: holds those objects alive so their ids cannot be reused mid-traversal.
    outer: memos of enclosing traversals (a sort key may point back to an ancestor).
    """

    __slots__ = ("edge_index", "edges", "keep", "memo", "mode", "outer", "saw_code")

    def __init__(self, mode: int, outer: tuple[dict[int, int], ...] = ()):
        self.mode = mode
        self.edges: list[object] = []
        self.edge_index: dict[int, int] = {}
        self.memo: dict[int, int] = {}
        self.keep: list[object] = []
        self.outer = outer
        self.saw_code = False


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

    def __init__(self, file: _Writer, fp: Fingerprinter, ctx: _Ctx, side: Any, root: object):
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self._fp = fp
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
        self._side.update(b"b" + _U64(raw.nbytes))
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
            return obj.encode("utf-8", "surrogatepass")
        return self._fp._pid(obj, t, self)


class Fingerprinter:
    """One key computation. Memoises code fingerprints (functions, classes, modules) within it.

    Use a new one per key: the values a function reads are memoised with its fingerprint.
    ``ignore`` names globals (read by the user's functions) left out of every fingerprint,
    so that the ``ignore=`` a FingerprintError suggests for such a global can be honoured.
    """

    def __init__(self, ignore: Iterable[str] = ()) -> None:
        self._ignore = frozenset(ignore)
        self._locals: dict[int, tuple[bytes, list[object]]] = {}
        self._fulls: dict[int, bytes] = {}
        self._leaves: dict[int, bytes] = {}
        self._shallows: dict[int, bytes] = {}
        self._codes: dict[int, bytes] = {}
        self._code_refs: dict[int, tuple[tuple[tuple[str, ...], ...], tuple[Any, ...]]] = {}
        self._user_types: dict[type, bool] = {}
        self._pid_kinds: dict[type, int] = {}
        self._import_digests: dict[tuple[str, ...], bytes] = {}
        self._keep: list[object] = []  # every object whose id is a memo key stays alive
        self._dispatch: dict[type, Callable[[Any, Any, _Ctx], None]] = {
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

    # ---------------------------------------------------------------- public

    def value(self, obj: object, label: str) -> bytes:
        """16-byte fingerprint of ``obj`` (an input named ``label`` in error messages).

        Raises FingerprintError naming ``label`` and the type, with the ``ignore=`` fix.
        """
        h = xxhash.xxh3_128()
        try:
            self._feed(h, obj, _Ctx(_TOP))
        except _Refused as e:
            raise FingerprintError(_message(label, obj, e)) from None
        except RecursionError:
            raise FingerprintError(
                f"cannot fingerprint input {label!r} ({_typename(type(obj))}): it is nested "
                f"too deeply. If it does not affect the result, leave it out of the key with "
                f"ignore=[{label!r}]."
            ) from None
        except Exception as e:  # an object whose attributes or buffers misbehave
            raise FingerprintError(
                f"cannot fingerprint input {label!r} ({_typename(type(obj))}): "
                f"{type(e).__name__}: {e}. If it does not affect the result, leave it out of "
                f"the key with ignore=[{label!r}]."
            ) from e
        return h.digest()

    # ----------------------------------------------------------- value walker

    def _feed(self, h: Any, obj: Any, ctx: _Ctx) -> None:
        t = type(obj)
        atom = _ATOMS.get(t)
        if atom is not None:
            atom(h.update, obj)
            return
        handler = self._dispatch.get(t)
        if handler is not None:
            handler(h, obj, ctx)
            return
        module = t.__module__
        if module == "numpy" or module.startswith("numpy."):
            np = sys.modules.get("numpy")
            if np is not None:
                if t is np.ndarray or t is np.memmap:
                    self._feed_array(h, obj, ctx)
                    return
                if isinstance(obj, np.generic):
                    h.update(b"n" + _s(_dtype_descr(obj.dtype)) + obj.tobytes())
                    return
        if isinstance(obj, type):  # metaclass instances: classes
            self._feed_code_node(h, obj, ctx)
        elif isinstance(obj, (set, frozenset)):
            self._feed_set(h, obj, ctx)
        elif isinstance(obj, functools.partial):
            self._feed_partial(h, obj, ctx)
        else:
            self._feed_pickled(h, obj, ctx)

    def _sub(self, obj: Any, ctx: _Ctx) -> bytes:
        h = xxhash.xxh3_128()
        self._feed(h, obj, ctx)
        return h.digest()

    def _memo(self, h: Any, obj: Any, ctx: _Ctx) -> bool:
        """True (and a back-reference fed) if ``obj`` was already visited in this traversal."""
        key = id(obj)
        for level, outer in enumerate(ctx.outer):
            i = outer.get(key)
            if i is not None:
                h.update(b"^" + _U64(level) + _U64(i))
                return True
        i = ctx.memo.get(key)
        if i is not None:
            h.update(b"@" + _U64(i))
            return True
        ctx.memo[key] = len(ctx.memo)
        ctx.keep.append(obj)
        return False

    def _feed_mappingproxy(self, h: Any, obj: types.MappingProxyType, ctx: _Ctx) -> None:
        h.update(b"M" + _U64(len(obj)))
        for k, v in obj.items():
            self._feed(h, k, ctx)
            self._feed(h, v, ctx)

    def _feed_set(self, h: Any, obj: set | frozenset, ctx: _Ctx) -> None:
        """Elements in the order of their own fingerprints, so PYTHONHASHSEED cannot matter.

        Each sort key is computed in a fresh traversal (so it does not depend on which
        element came first). Inside a code node's digest, if code was met, the elements are
        then fed again, in sorted order, in the real traversal.
        """
        if isinstance(obj, set) and self._memo(h, obj, ctx):
            return
        t = type(obj)
        h.update((b"S" if isinstance(obj, set) else b"Z") + _U64(len(obj)))
        if t is not set and t is not frozenset:
            self._feed(h, t, ctx)
            self._feed(h, getattr(obj, "__dict__", None), ctx)
        outer = (*ctx.outer, ctx.memo)
        keys: list[bytes] = []
        saw_code = False
        # At top level the sort keys are complete fingerprints; inside a code node's own
        # digest they hold only a shallow identity of code (see _ref), hence the re-feed.
        sub_mode = _TOP if ctx.mode == _TOP else _SORT
        for item in obj:
            t = type(item)
            if t is str:  # the commonest element: one call, no traversal state
                keys.append(_xxh3_128_digest(b"s" + item.encode("utf-8", "surrogatepass")))
                continue
            atom = _ATOMS.get(t)
            if atom is not None:
                parts: list[bytes] = []
                atom(parts.append, item)
                keys.append(_xxh3_128_digest(b"".join(parts)))
                continue
            sub = _Ctx(sub_mode, outer)
            keys.append(self._sub(item, sub))
            saw_code = saw_code or sub.saw_code
        if saw_code and ctx.mode != _SORT:
            items = list(obj)  # same iteration order as above: the set was not modified
            for i in sorted(range(len(keys)), key=keys.__getitem__):
                self._feed(h, items[i], ctx)
        else:
            ctx.saw_code = ctx.saw_code or saw_code
            keys.sort()
            h.update(b"".join(keys))

    def _feed_array(self, h: Any, a: Any, ctx: _Ctx) -> None:
        """dtype, shape, strides and the raw bytes, hashed in place when contiguous."""
        np = sys.modules["numpy"]
        dt = a.dtype
        head = b"A" + _s(_dtype_descr(dt)) + _U64(a.ndim)
        head += b"".join(_U64(n) for n in a.shape)
        # A stride along an axis of length 0 or 1 is never used (numpy leaves arbitrary values
        # there, e.g. x[:, None], and unpickling canonicalises them): it counts as 0.
        head += b"".join(
            struct.pack("<q", s if n > 1 else 0) for n, s in zip(a.shape, a.strides, strict=True)
        )
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

    def _feed_pickled(self, h: Any, obj: Any, ctx: _Ctx) -> None:
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
        except _Refused:
            raise
        except RecursionError:
            raise
        except Exception as e:  # TypeError, PicklingError, whatever a __reduce__ raises
            raise _Refused(type(obj), f"pickle refuses it ({type(e).__name__}: {e})") from None
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
            or _is_numpy_array_type(t)
        ):
            return _PID_WALK
        return _PID_USER_INSTANCE if self._is_user_class(t) else _PID_PLAIN

    # ------------------------------------------------------- callables, nodes

    def _feed_method(self, h: Any, obj: types.MethodType, ctx: _Ctx) -> None:
        h.update(b"m")
        self._feed(h, obj.__func__, ctx)
        self._feed(h, obj.__self__, ctx)

    def _feed_builtin(self, h: Any, obj: Any, ctx: _Ctx) -> None:
        h.update(b"B" + self._leaf(obj))
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            # A builtin method bound to an object (``mylist.append``, ``d.get``): the object counts.
            self._feed(h, owner, ctx)

    def _feed_partial(self, h: Any, obj: functools.partial, ctx: _Ctx) -> None:
        h.update(b"p")
        if type(obj) is not functools.partial:
            self._feed(h, type(obj), ctx)
        self._feed(h, obj.func, ctx)
        self._feed(h, obj.args, ctx)
        self._feed(h, obj.keywords, ctx)
        self._feed(h, getattr(obj, "__dict__", None) or None, ctx)

    def _feed_lru(self, h: Any, obj: Any, ctx: _Ctx) -> None:
        # functools.lru_cache/cache wrapper: the wrapped function's code (its cache holds
        # results of that code and does not change what a call returns).
        h.update(b"lru" + _s(getattr(obj, "__qualname__", "")))
        self._feed(h, obj.__wrapped__, ctx)

    def _feed_descriptor(self, h: Any, obj: Any, ctx: _Ctx) -> None:
        t = type(obj)
        h.update(b"d" + _s(t.__qualname__))
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

    def _feed_codeobj(self, h: Any, obj: types.CodeType, ctx: _Ctx) -> None:
        h.update(b"co" + self._code_digest(obj))

    def _feed_code_node(self, h: Any, obj: Any, ctx: _Ctx) -> None:
        h.update(self._ref(obj, ctx))

    def _is_node(self, obj: Any) -> bool:
        """Code followed transitively: every function (a library wrapper's closure may hold a
        user function), the user's classes and modules. Others are leaves (name + version)."""
        if isinstance(obj, types.FunctionType):
            return True
        if isinstance(obj, type):
            return self._is_user_class(obj)
        return is_user_module(obj)

    def _ref(self, obj: Any, ctx: _Ctx) -> bytes:
        """How a function/class/module appears inside a digest, depending on the traversal."""
        if not self._is_node(obj):
            return b"X" + self._leaf(obj)
        if ctx.mode == _TOP:
            return b"F" + self._full(obj)
        if ctx.mode == _LOCAL:
            i = ctx.edge_index.get(id(obj))
            if i is None:
                i = ctx.edge_index[id(obj)] = len(ctx.edges)
                ctx.edges.append(obj)
            return b"E" + _U64(i)
        ctx.saw_code = True
        return b"K" + self._shallow(obj)

    def _leaf(self, obj: Any) -> bytes:
        """Library/builtin code: module, qualified name and the package's version."""
        hit = self._leaves.get(id(obj))
        if hit is None:
            module: str
            if isinstance(obj, types.ModuleType):
                module, name = obj.__name__, ""
            else:
                module = str(getattr(obj, "__module__", None) or "")
                name = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", ""))
            version = package_version(module) if module else ""
            extra = b""
            mod_file = getattr(sys.modules.get(module), "__file__", None) if module else None
            if not version and mod_file and module.partition(".")[0] not in STDLIB_NAMES:
                # Unversioned non-stdlib code (e.g. a user's compiled extension): its file's stat.
                try:
                    st = os.stat(mod_file)
                    extra = _U64(st.st_size) + _U64(st.st_mtime_ns)
                except OSError:
                    pass
            hit = digest(module.encode(), name.encode(), version.encode(), extra)
            self._leaves[id(obj)] = hit
            self._keep.append(obj)
        return hit

    def _shallow(self, obj: Any) -> bytes:
        """Name-level identity of a code node (sort keys only): no transitive content."""
        hit = self._shallows.get(id(obj))
        if hit is None:
            if isinstance(obj, types.ModuleType):
                hit = digest(b"M", obj.__name__.encode())
            else:
                code = getattr(obj, "__code__", None)
                hit = digest(
                    b"f" if code is not None else b"c",
                    str(getattr(obj, "__module__", "")).encode(),
                    str(getattr(obj, "__qualname__", "")).encode(),
                    self._code_digest(code) if isinstance(code, types.CodeType) else b"",
                )
            self._shallows[id(obj)] = hit
            self._keep.append(obj)
        return hit

    def _full(self, root: Any) -> bytes:
        """Transitive fingerprint of a code node: a canonical depth-first walk of the code graph.

        Every node is fed as its own (local) digest the first time it is reached and as its
        discovery index afterwards, so recursion and mutual recursion terminate, and the
        result depends only on the graph seen from ``root`` (not on what was computed before).
        """
        hit = self._fulls.get(id(root))
        if hit is not None:
            return hit
        h = xxhash.xxh3_128()
        index = {id(root): 0}
        local, edges = self._local(root)
        h.update(b"N" + local + _U64(len(edges)))
        stack = [iter(edges)]
        while stack:
            node = next(stack[-1], _END)
            if node is _END:
                stack.pop()
                continue
            i = index.get(id(node))
            if i is not None:
                h.update(b"R" + _U64(i))
                continue
            index[id(node)] = len(index)
            local, edges = self._local(node)
            h.update(b"N" + local + _U64(len(edges)))
            stack.append(iter(edges))
        hit = self._fulls[id(root)] = h.digest()
        self._keep.append(root)
        return hit

    def _local(self, node: Any) -> tuple[bytes, list[object]]:
        hit = self._locals.get(id(node))
        if hit is None:
            ctx = _Ctx(_LOCAL)
            h = xxhash.xxh3_128()
            if isinstance(node, types.FunctionType):
                self._local_function(h, node, ctx)
            elif isinstance(node, type):
                self._local_class(h, node, ctx)
            else:
                self._local_module(h, node, ctx)
            hit = self._locals[id(node)] = (h.digest(), ctx.edges)
            self._keep.append(node)
        return hit

    def _feed_or_fallback(self, h: Any, obj: Any, ctx: _Ctx) -> None:
        """Feed ``obj``; if it cannot be fingerprinted, feed its type's qualified name instead.

        Used only where refusing would block the user for something that almost never
        decides a result (a lock in a library closure, a slot descriptor in a class dict).
        """
        try:
            d = self._sub(obj, ctx)
        except _Refused:
            t = type(obj)
            d = b"?" + _s(f"{t.__module__}.{t.__qualname__}")
        h.update(d)

    def _local_function(self, h: Any, fn: types.FunctionType, ctx: _Ctx) -> None:
        user = self._is_user_function(fn)
        h.update(b"fn" + _s(str(fn.__module__)) + _s(fn.__qualname__))
        if not user:
            # Library code counts by name and version; what it closes over counts by value
            # (a decorator's wrapper holds the user's function, a factory's closure its args).
            h.update(b"lib" + _s(package_version(str(fn.__module__ or ""))))
            # Item by item, so that one unpicklable cell (a weak dict of a dispatch cache)
            # does not hide the others (the registry of a singledispatch function).
            parts: list[Any] = [
                *(fn.__defaults__ or ()),
                *(fn.__kwdefaults__ or {}).items(),
                *(_cells(fn) or ()),
                *(fn.__dict__ or {}).items(),
            ]
            h.update(_U64(len(parts)))
            for part in parts:
                self._feed_or_fallback(h, part, ctx)
            return
        h.update(b"user" + self._code_digest(fn.__code__))
        self._feed(h, fn.__defaults__, ctx)
        self._feed(h, fn.__kwdefaults__, ctx)
        try:
            self._feed(h, _cells(fn), ctx)
        except _Refused as e:
            e.where.append(f"a variable closed over by {fn.__qualname__}()")
            raise
        glb = fn.__globals__
        bltins = glb.get("__builtins__", builtins.__dict__)
        if isinstance(bltins, types.ModuleType):
            bltins = vars(bltins)
        chains, imports = self._code_refs_of(fn.__code__)
        for chain in chains:
            name = chain[0]
            h.update(b"g" + _s(name))
            if name in self._ignore:
                h.update(b"ignored")
                continue
            if name in glb:
                val = glb[name]
            elif name in bltins:
                val = bltins[name]
            else:
                h.update(b"unbound")
                continue
            try:
                self._feed(h, val, ctx)
                # ``helpers.SCALE``: attributes read from the user's modules count by value;
                # through installed modules (which count by version) plain data does too:
                # ``sys.argv``, ``torch.backends.cudnn.benchmark``.
                for attr in chain[1:]:
                    if not isinstance(val, types.ModuleType):
                        break
                    user = is_user_module(val)
                    val = getattr(val, attr, _END)
                    if user:
                        h.update(b"." + _s(attr))
                        if val is _END:
                            h.update(b"unbound")
                            break
                        self._feed(h, val, ctx)
                    elif val is not _END and is_plain_data(val):
                        h.update(b"." + _s(attr))
                        self._feed(h, val, ctx)
                        break
            except _Refused as e:
                e.where.append(f"global {name!r} read by {fn.__qualname__}()")
                if e.suggest is None:
                    e.suggest = name
                raise
        for modname, level, fromlist in imports:
            self._feed_import(h, fn, modname, level, fromlist, ctx)
        if fn.__dict__:
            h.update(b"attrs")
            for k, v in fn.__dict__.items():
                self._feed(h, k, ctx)
                self._feed_or_fallback(h, v, ctx)

    def _feed_import(
        self, h: Any, fn: Any, modname: str, level: int, fromlist: Any, ctx: _Ctx
    ) -> None:
        """An import inside a function body (``import helpers`` in ``def load():``).

        The user's modules it brings in count by their source, with the sources of the
        user's modules those import, transitively; installed ones by version. Found from
        files, never by importing, and the same whether or not the module is already
        imported: a run whose checkpoint hit (and so never ran the import) keys the same.
        """
        package = str(fn.__globals__.get("__package__") or "")
        name = _resolve_import(modname, level, package, True)
        if name is None:
            h.update(b"imp?" + _s(modname))
            return
        roots = [name]
        if isinstance(fromlist, tuple):
            roots += [f"{name}.{sub}" if name else sub for sub in fromlist if isinstance(sub, str)]
        h.update(b"imp" + self._imports_digest(tuple(roots)))

    def import_digest(self, modname: str, level: int, fromlist: tuple[str, ...], package: str) -> bytes:
        """An import statement of a checkpoint body (``import helpers``, ``from .x import f``)
        run in a module whose package is ``package``: the user's modules it brings in by their
        sources (transitively), installed ones by version; found from files, never imported."""
        name = _resolve_import(modname, level, package, True)
        if name is None:
            return b"imp?" + _s(modname)
        roots = [name] + [f"{name}.{sub}" if name else sub for sub in fromlist]
        return b"imp" + self._imports_digest(tuple(roots))

    def _imports_digest(self, roots: tuple[str, ...]) -> bytes:
        hit = self._import_digests.get(roots)
        if hit is not None:
            return hit
        records: dict[str, bytes] = {}
        queue = list(roots)
        while queue:
            name = queue.pop()
            if not name or name in records:
                continue
            top = name.partition(".")[0]
            if top in STDLIB_NAMES:
                records[name] = b"std"
                continue
            path = _module_file(name)
            if path is None or not is_user_file(path):
                records[name] = b"ext" + _s(_dist_version(top) if path else "")
                continue
            source, imports = _source_info(path)
            records[name] = b"src" + source
            is_package = os.path.basename(path) == "__init__.py"
            for module, lvl, names in imports:
                target = _resolve_import(module, lvl, name, is_package)
                if target is None:
                    continue
                queue.append(target)
                queue.extend(f"{target}.{sub}" for sub in names)
        # Candidates that are attributes rather than modules ("pkg.func") resolve to no
        # file and are dropped unless they were asked for, so the set is the same each run.
        hx = xxhash.xxh3_128()
        for name in sorted(records):
            if records[name] == b"ext" + _s("") and name not in roots and "." in name:
                continue
            hx.update(_s(name) + _s(records[name].hex()))
        hit = self._import_digests[roots] = hx.digest()
        return hit

    def _local_class(self, h: Any, cls: type, ctx: _Ctx) -> None:
        h.update(b"cls" + _s(str(cls.__module__)) + _s(cls.__qualname__))
        if type(cls) is not type:
            self._feed(h, type(cls), ctx)  # the metaclass
        self._feed(h, cls.__bases__, ctx)
        for key, val in vars(cls).items():
            if key in _CLASS_SKIP:
                continue
            h.update(b"a" + _s(key))
            # An attribute that cannot be fingerprinted (slot descriptors, locks, ...) counts
            # by its type's qualified name: refusing the class would block every input that
            # is an instance of it, for state that is not the class's code.
            self._feed_or_fallback(h, val, ctx)

    def _local_module(self, h: Any, mod: types.ModuleType, ctx: _Ctx) -> None:
        h.update(b"mod" + _s(mod.__name__))
        path = getattr(mod, "__file__", None)
        if path and path.endswith(".py"):
            h.update(_source_digest(path))
        elif path:
            try:
                h.update(b"file" + bytes.fromhex(file_digest(path)))
            except OSError:
                h.update(b"unreadable")
        for key, val in list(vars(mod).items()):
            if (
                isinstance(val, (types.FunctionType, type))
                and getattr(val, "__module__", None) == mod.__name__
            ):
                h.update(b"a" + _s(key))
                self._feed(h, val, ctx)
            elif not key.startswith("__") and is_plain_data(val):
                # Module-level data by its current value, not the source's: ``config.lr =
                # args.lr`` at run time, read by code that reaches the module through a local
                # import or a closure rather than as a global (those count the attribute too).
                h.update(b"v" + _s(key))
                self._feed(h, val, ctx)

    def _code_digest(self, co: types.CodeType) -> bytes:
        """Normalised code object: bytecode, constants (nested code recursively), names and
        counts. Not the file name, first line or line table: comments and blank lines don't count."""
        hit = self._codes.get(id(co))
        if hit is not None:
            return hit
        h = xxhash.xxh3_128()
        h.update(b"code" + _s(co.co_name))
        for count in (
            co.co_argcount,
            co.co_posonlyargcount,
            co.co_kwonlyargcount,
            co.co_nlocals,
            co.co_flags,
        ):
            h.update(_U64(count))
        h.update(_U64(len(co.co_code)) + co.co_code)
        table = getattr(co, "co_exceptiontable", b"")  # 3.11+: try/except ranges are meaning
        h.update(_U64(len(table)) + table)
        for names in (co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars):
            h.update(_U64(len(names)))
            for ident in names:
                h.update(_s(ident))
        h.update(_U64(len(co.co_consts)))
        ctx = _Ctx(_LOCAL)
        for const in co.co_consts:
            if isinstance(const, types.CodeType):
                h.update(b"c" + self._code_digest(const))
            else:
                self._feed(h, const, ctx)
        hit = self._codes[id(co)] = h.digest()
        self._keep.append(co)
        return hit

    def _code_refs_of(
        self, co: types.CodeType
    ) -> tuple[tuple[tuple[str, ...], ...], tuple[Any, ...]]:
        """Global names the code (and its nested code) loads, each with the attribute chain that
        follows it (``helpers.SCALE`` -> ("helpers", "SCALE")), and its imports, in code order."""
        hit = self._code_refs.get(id(co))
        if hit is None:
            chains: dict[tuple[str, ...], None] = {}
            imports: dict[tuple[Any, ...], None] = {}
            _scan_code(co, chains, imports)
            hit = self._code_refs[id(co)] = (tuple(chains), tuple(imports))
            self._keep.append(co)
        return hit

    # ------------------------------------------------------------ user code

    def _is_user_function(self, fn: types.FunctionType) -> bool:
        filename = fn.__code__.co_filename
        if is_user_file(filename):
            return True
        if filename.startswith("<") and not filename.startswith("<frozen"):
            # exec'd / generated code (<string>, <stdin>, dataclass methods): there is no
            # package version to stand in for it, so it counts by content unless it belongs
            # to a library module.
            return is_user_module_name(str(fn.__module__))
        return False

    def _is_user_class(self, cls: type) -> bool:
        hit = self._user_types.get(cls)
        if hit is None:
            hit = is_user_module_name(str(getattr(cls, "__module__", "")))
            if not hit:
                try:
                    members = list(vars(cls).values())
                except TypeError:
                    members = []
                hit = any(
                    isinstance(m, types.FunctionType) and is_user_file(m.__code__.co_filename)
                    for m in members
                )
            self._user_types[cls] = hit
        return hit


# ----------------------------------------------------------------- helpers

_END = object()
_xxh3_128_digest = xxhash.xxh3_128_digest

# Class dict entries that are bookkeeping, not code: instance-dict/weakref slots, the pickle
# cache copyreg adds on first pickling (would change the key after a save), the ABC registry
# cache (changes with isinstance calls).
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__slotnames__", "__module__", "_abc_impl"})


def _typename(t: type) -> str:
    module = getattr(t, "__module__", "")
    return t.__qualname__ if module in ("builtins", None) else f"{module}.{t.__qualname__}"


def _message(label: str, obj: object, e: _Refused) -> str:
    where = "".join(f", in {w}" for w in e.where)
    inner = "" if e.culprit is type(obj) and not e.where else f": a {_typename(e.culprit)}{where}"
    suggest = e.suggest or label
    return (
        f"cannot fingerprint input {label!r} ({_typename(type(obj))}){inner}; {e.reason}. "
        f"statecache needs the content of every input to know whether a cached result is "
        f"still valid. If it does not affect the result, leave it out of the key with "
        f"ignore=[{suggest!r}]."
    )


def _dtype_descr(dt: Any) -> str:
    # dtype.str loses field names of structured dtypes ("|V16"): use the full description.
    return dt.str if dt.fields is None else repr(dt.descr)


def _is_numpy_array_type(t: type) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and (t is np.ndarray or t is np.memmap)


_PID_PLAIN, _PID_USER_INSTANCE, _PID_WALK, _PID_CODE = 0, 1, 2, 3


def _cells(fn: types.FunctionType) -> tuple[Any, ...] | None:
    if not fn.__closure__:
        return None
    out = []
    for cell in fn.__closure__:
        try:
            out.append(cell.cell_contents)
        except ValueError:  # an empty cell (a variable not assigned yet)
            out.append(_EMPTY_CELL)
    return tuple(out)


class _EmptyCell:
    """Stands for a closure cell with no value yet (an atom of its own in digests)."""


_EMPTY_CELL = _EmptyCell()

_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_SKIP_OPS = frozenset({"EXTENDED_ARG", "CACHE"})


def _scan_code(co: types.CodeType, chains: dict, imports: dict) -> None:
    chain: list[str] | None = None
    consts: list[Any] = [None, None]
    for ins in dis.get_instructions(co):
        op = ins.opname
        if op in _SKIP_OPS:
            continue
        if op in _ATTR_OPS and chain is not None and isinstance(ins.argval, str):
            chain.append(ins.argval)
            continue
        if chain is not None:
            chains[tuple(chain)] = None
            chain = None
        if op in _GLOBAL_OPS and isinstance(ins.argval, str):
            chain = [ins.argval]
        elif op == "IMPORT_NAME":
            level = consts[0] if isinstance(consts[0], int) else 0
            imports[
                (str(ins.argval), level, consts[1] if isinstance(consts[1], tuple) else None)
            ] = None
        if op == "LOAD_CONST":
            consts = [consts[1], ins.argval]
    if chain is not None:
        chains[tuple(chain)] = None
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            _scan_code(const, chains, imports)




def _feed_int(upd: Callable[[bytes], object], v: int) -> None:
    data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    upd(b"i" + _U64(len(data)) + data)


def _feed_str(upd: Callable[[bytes], object], v: str) -> None:
    upd(b"s" + _s(v))


def _feed_bytes(upd: Callable[[bytes], object], v: bytes) -> None:
    upd(b"b" + _U64(len(v)))
    upd(v)


def _feed_bytearray(upd: Callable[[Any], object], v: bytearray) -> None:
    upd(b"y" + _U64(len(v)))
    upd(v)


# Exact types only: subclasses (IntEnum, bool-like, str subclasses, numpy scalars that
# subclass float) go through the general path, which includes their class.
_ATOMS: dict[type, Callable[[Callable[[Any], object], Any], object]] = {
    type(None): lambda upd, v: upd(b"0"),
    bool: lambda upd, v: upd(b"t" if v else b"f"),
    int: _feed_int,
    # Bit patterns: -0.0 and 0.0 differ, a NaN keeps its payload; both deterministic.
    float: lambda upd, v: upd(b"d" + _F64(v)),
    complex: lambda upd, v: upd(b"j" + _C128(v.real, v.imag)),
    str: _feed_str,
    bytes: _feed_bytes,
    bytearray: _feed_bytearray,
    type(Ellipsis): lambda upd, v: upd(b"..."),
    type(NotImplemented): lambda upd, v: upd(b"NotImplemented"),
    _EmptyCell: lambda upd, v: upd(b"<empty cell>"),
}
