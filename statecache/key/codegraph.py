"""Code as a graph: functions, classes and modules are nodes, each with a local digest whose
references to other code are numbered edges; a node's fingerprint is a canonical depth-first
walk of the graph from it, so recursion terminates and the result does not depend on what was
fingerprinted before.

The user's functions count by their code (``code.code_digest``: the normalised source when
it is what runs), defaults, closure values, the globals they read and the process state
they read (``key.process``: environment variables, the working directory); library code counts by
name and package version; the user's classes by their dict; the user's modules by source and
current data attributes. ``CodeGraph`` holds this half of a ``Fingerprinter``; the value
walker (``values``) subclasses it and supplies ``_feed`` and ``_sub``.
"""

from __future__ import annotations

import builtins
import os
import sys
import types
from collections.abc import Iterable

import xxhash

from .code import code_digest, scan_refs, source_node
from .hashing import U64, digest, encode_str, file_digest
from .process import environ_label, process_value, scan, scan_names
from .provenance import STDLIB_NAMES, is_user_file, is_user_module, is_user_module_name
from .readlog import earlier_reads_digest
from .walk import LOCAL, TOP, Ctx, Refused, cells, is_plain_data, library_attribute

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path

if TYPE_CHECKING:
    from typing import Any

    from .localimports import Binding

# ``imports``, ``loaded`` and ``localimports`` (and through them ``versions``) load where a
# module, an import or a function's local imports are keyed: a block that reads none of them
# (a small hit) never loads them.

END = object()

# Class dict entries that are bookkeeping, not code: instance-dict/weakref slots, the pickle
# cache copyreg adds on first pickling (would change the key after a save), the ABC registry
# cache (changes with isinstance calls).
CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__slotnames__", "__module__", "_abc_impl"})

#: (the chains the code reads, its imports, the globals it only stores into: see ``code_refs_of``)
_Refs = tuple[tuple[tuple[str, ...], ...], tuple["Any", ...], tuple[tuple[str, ...], ...]]


_PROCESS: dict[int, tuple[types.CodeType, object, tuple[tuple[str, ...], tuple[str, ...]]]] = {}


def process_reads_of(co: types.CodeType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The process state a user function's code reads (``key.process.scan`` of its source: the
    same rule as a block's body); from its names when the source is not what runs, where any
    environment access reads the whole environment. Cached per code and source text."""
    node = source_node(co)
    hit = _PROCESS.get(id(co))
    if hit is not None and hit[0] is co and hit[1] is node:
        return hit[2]
    if node is not None:
        found = scan([node])
    else:
        names: set[str] = set()
        stack = [co]
        while stack:
            c = stack.pop()
            names.update(c.co_names)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        found = ((), scan_names(names))
    _PROCESS[id(co)] = (co, node, found)
    return found


def _is_reader_wrapper(function: types.FunctionType) -> bool:
    """Whether ``key.readers`` made this function; no such wrapper exists before that module
    loads, and a hit that records no file never loads it."""
    readers = sys.modules.get(f"{__package__}.readers")
    return readers is not None and bool(function.__dict__.get(readers.READER_WRAPPER))


class CodeGraph:
    """The code half of one key computation; memoises code fingerprints within it."""

    def __init__(self, ignore: Iterable[str] = ()) -> None:
        self._ignore = frozenset(ignore)
        self._locals: dict[int, tuple[bytes, list[object]]] = {}
        self._fulls: dict[int, bytes] = {}
        self._leaves: dict[int, bytes] = {}
        self._shallows: dict[int, bytes] = {}
        self._code_refs: dict[int, _Refs] = {}
        self._user_types: dict[type, bool] = {}
        self._import_digests: dict[Any, bytes] = {}
        self._local_import_plans: dict[int, dict[Any, tuple[Binding, ...]]] = {}
        self._keep: list[object] = []  # every object whose id is a memo key stays alive
        self.library_modules: set[str] = set()  # the modules of the library code met (_leaf)

    def _feed(self, h: Any, obj: Any, ctx: Ctx) -> None:
        raise NotImplementedError  # the value walker's

    def _sub(self, obj: Any, ctx: Ctx) -> bytes:
        raise NotImplementedError  # the value walker's

    def _feed_code_node(self, h: Any, obj: Any, ctx: Ctx) -> None:
        if type(obj) is types.FunctionType and "__wrapped__" in obj.__dict__ and _is_reader_wrapper(obj):
            # a library reader ``key.readers`` wrapped once something computed: the reader it
            # wraps, so that a key does not depend on whether an earlier block computed
            self._feed(h, obj.__dict__["__wrapped__"], ctx)
            return
        h.update(self._ref(obj, ctx))

    def _is_node(self, obj: Any) -> bool:
        """Code followed transitively: every function (a library wrapper's closure may hold a
        user function), the user's classes and modules. Others are leaves (name + version)."""
        if isinstance(obj, types.FunctionType):
            return True
        if isinstance(obj, type):
            return self.is_user_class(obj)
        return is_user_module(obj)

    def _ref(self, obj: Any, ctx: Ctx) -> bytes:
        """How a function/class/module appears inside a digest, depending on the traversal."""
        if not self._is_node(obj):
            return b"X" + self._leaf(obj)
        if ctx.mode == TOP:
            return b"F" + self._full(obj)
        if ctx.mode == LOCAL:
            i = ctx.edge_index.get(id(obj))
            if i is None:
                i = ctx.edge_index[id(obj)] = len(ctx.edges)
                ctx.edges.append(obj)
            return b"E" + U64(i)
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
            self.library_modules.add(module)
            version = _package_version(module) if module else ""
            extra = b""
            mod_file = getattr(sys.modules.get(module), "__file__", None) if module else None
            if not version and mod_file and module.partition(".")[0] not in STDLIB_NAMES:
                # Unversioned non-stdlib code (e.g. a user's compiled extension): its file's stat.
                try:
                    st = os.stat(mod_file)
                    extra = U64(st.st_size) + U64(st.st_mtime_ns)
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
                    code_digest(code) if isinstance(code, types.CodeType) else b"",
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
        h.update(b"N" + local + U64(len(edges)))
        stack = [iter(edges)]
        while stack:
            node = next(stack[-1], END)
            if node is END:
                stack.pop()
                continue
            i = index.get(id(node))
            if i is not None:
                h.update(b"R" + U64(i))
                continue
            index[id(node)] = len(index)
            local, edges = self._local(node)
            h.update(b"N" + local + U64(len(edges)))
            stack.append(iter(edges))
        hit = self._fulls[id(root)] = h.digest()
        self._keep.append(root)
        return hit

    def _local(self, node: Any) -> tuple[bytes, list[object]]:
        hit = self._locals.get(id(node))
        if hit is None:
            ctx = Ctx(LOCAL)
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

    def _feed_or_fallback(self, h: Any, obj: Any, ctx: Ctx) -> None:
        """Feed ``obj``; if it cannot be fingerprinted, feed its type's qualified name instead.

        Used only where refusing would block the user for something that almost never
        decides a result (a lock in a library closure, a slot descriptor in a class dict).
        """
        try:
            d = self._sub(obj, ctx)
        except Refused:
            t = type(obj)
            d = b"?" + encode_str(f"{t.__module__}.{t.__qualname__}")
        h.update(d)

    def _local_function(self, h: Any, fn: types.FunctionType, ctx: Ctx) -> None:
        user = self.is_user_function(fn)
        h.update(b"fn" + encode_str(str(fn.__module__)) + encode_str(fn.__qualname__))
        if not user:
            self._library_function(h, fn, ctx)
            return
        h.update(b"user" + code_digest(fn.__code__))
        self._feed(h, fn.__defaults__, ctx)
        self._feed(h, fn.__kwdefaults__, ctx)
        try:
            self._feed(h, cells(fn), ctx)
        except Refused as e:
            e.where.append(f"a variable closed over by {fn.__qualname__}()")
            raise
        self._function_globals(h, fn, ctx)
        self._process_state(h, fn.__code__, ctx)
        # a memo filled above the block returns what was read then (key/readlog.py)
        h.update(earlier_reads_digest(fn.__code__))
        imports = self.code_refs_of(fn.__code__)[1]
        local = self._local_imports_of(fn.__code__) if imports else {}
        for modname, level, fromlist in imports:
            self._feed_import(h, fn, modname, level, fromlist, local.get((modname, level, fromlist)))
        if fn.__dict__:
            h.update(b"attrs")
            for k, v in fn.__dict__.items():
                self._feed(h, k, ctx)
                self._feed_or_fallback(h, v, ctx)

    def _process_state(self, h: Any, co: types.CodeType, ctx: Ctx) -> None:
        """What a user function reads of the process (environment variables, the whole
        environment, the working directory), by current value, as the same reads in a block
        count: a helper reading ``os.environ["N"]`` keys on ``N``. Labels in ``ignore=`` are
        left out, as they are from a block's own inputs."""
        keys, kinds = process_reads_of(co)
        for key in keys:
            label = environ_label(key)
            if label not in self._ignore:
                h.update(b"env" + encode_str(label))
                self._feed(h, os.environ.get(key), ctx)
        for kind in kinds:
            label, value = process_value(kind)
            if label not in self._ignore:
                h.update(b"proc" + encode_str(label))
                self._feed(h, value, ctx)

    def _library_function(self, h: Any, fn: types.FunctionType, ctx: Ctx) -> None:
        """Library code counts by name and version; what it closes over counts by value
        (a decorator's wrapper holds the user's function, a factory's closure its args)."""
        h.update(b"lib" + encode_str(_package_version(str(fn.__module__ or ""))))
        # Item by item, so that one unpicklable cell (a weak dict of a dispatch cache)
        # does not hide the others (the registry of a singledispatch function).
        parts: list[Any] = [
            *(fn.__defaults__ or ()),
            *(fn.__kwdefaults__ or {}).items(),
            *(cells(fn) or ()),
            *(fn.__dict__ or {}).items(),
        ]
        h.update(U64(len(parts)))
        for part in parts:
            self._feed_or_fallback(h, part, ctx)

    def _function_globals(self, h: Any, fn: types.FunctionType, ctx: Ctx) -> None:
        """The globals a user function's code reads, by value, with the attribute chains that
        follow them through modules."""
        glb = fn.__globals__
        bltins = glb.get("__builtins__", builtins.__dict__)
        if isinstance(bltins, types.ModuleType):
            bltins = vars(bltins)
        for chain in self.code_refs_of(fn.__code__)[0]:
            name = chain[0]
            h.update(b"g" + encode_str(name))
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
                self._feed_chain_root(h, val, len(chain) > 1, ctx)
                # ``helpers.SCALE``: attributes read from the user's modules count by value;
                # through installed modules (which count by version) plain data does too:
                # ``sys.argv``, ``torch.backends.cudnn.benchmark``.
                for i, attr in enumerate(chain[1:], 2):
                    if not isinstance(val, types.ModuleType):
                        break
                    if not is_user_module(val):
                        # plain data by value, through a library's namespaces too; the user's
                        # code put into a library's namespace (``np.mean = fixes.mean``) by its
                        # code: neither is the version's
                        found = library_attribute(val, chain[i - 1:], self.is_counted_in_library)
                        if found is not None:
                            h.update(b"." + encode_str(".".join(chain[i - 1: i - 1 + found[0]])))
                            self._feed(h, found[1], ctx)
                        break
                    val = getattr(val, attr, END)
                    h.update(b"." + encode_str(attr))
                    if val is END:
                        h.update(b"unbound")
                        break
                    self._feed_chain_root(h, val, len(chain) > i, ctx)
            except Refused as e:
                e.where.append(f"global {name!r} read by {fn.__qualname__}()")
                if e.suggest is None:
                    e.suggest = name
                raise

    def _feed_chain_root(self, h: Any, val: Any, followed: bool, ctx: Ctx) -> None:
        """A value the code reads, or, for a user module whose attributes the code reads
        (``helpers.f``), only its top level: those attributes count by value after it, so an
        edit of another function or of the docstring, or data that only other functions use,
        does not count. A module used on its own (passed on, ``getattr`` with a computed name)
        is read by another chain of the same code, without attributes, and counts whole."""
        if followed and isinstance(val, types.ModuleType) and is_user_module(val):
            from .imports import module_top_digest

            top = module_top_digest(val)
            if top is not None:
                h.update(b"modtop" + encode_str(val.__name__) + top)
                return
        self._feed(h, val, ctx)

    def _feed_import(
        self, h: Any, fn: Any, modname: str, level: int, fromlist: Any, bindings: tuple[Binding, ...] | None
    ) -> None:
        """An import inside a function body (``import helpers`` in ``def load():``).

        The user's modules it brings in count by their source, with the sources of the
        user's modules those import, transitively; installed ones by version. Found from
        files, never by importing, and the same whether or not the module is already
        imported: a run whose checkpoint hit (and so never ran the import) keys the same.
        When the function only reads the names the import binds (``bindings``, from
        ``local_imports``), a module counts by the code of it those reads reach and the
        data they can read (``used_names``): not by a function they never call, nor by a
        timing dict another function of the module fills.
        """
        from .imports import imports_digest, resolve_import
        from .localimports import used_names

        package = str(fn.__globals__.get("__package__") or "")
        name = resolve_import(modname, level, package, True)
        if name is None:
            h.update(b"imp?" + encode_str(modname))
            return
        roots = [name]
        if isinstance(fromlist, tuple):
            roots += [f"{name}.{sub}" if name else sub for sub in fromlist if isinstance(sub, str)]
        used = used_names(name, bindings) if bindings else None
        if used:
            roots += [m for m in used if m not in roots]
        h.update(b"imp" + imports_digest(tuple(roots), self._import_digests, self._value_digest, used))

    def _local_imports_of(self, co: types.CodeType) -> dict[Any, tuple[Binding, ...]]:
        """``local_imports`` of a user function's source, when that source is what runs."""
        hit = self._local_import_plans.get(id(co))
        if hit is None:
            from .localimports import local_imports

            node = source_node(co)
            hit = self._local_import_plans[id(co)] = local_imports(node) if node is not None else {}
            self._keep.append(co)
        return hit

    def _value_digest(self, value: Any) -> bytes | None:
        """A value's digest by the value walker, None when it refuses the value."""
        try:
            return self._sub(value, Ctx(TOP))
        except Refused:
            return None

    def import_digest(self, modname: str, level: int, fromlist: tuple[str, ...], package: str) -> bytes:
        """An import statement of a checkpoint body (``import helpers``, ``from .x import f``)
        run in a module whose package is ``package``: the user's modules it brings in by their
        sources (transitively), installed ones by version; found from files, never imported."""
        from .imports import imports_digest, resolve_import

        name = resolve_import(modname, level, package, True)
        if name is None:
            return b"imp?" + encode_str(modname)
        roots = [name] + [f"{name}.{sub}" if name else sub for sub in fromlist]
        return b"imp" + imports_digest(tuple(roots), self._import_digests, self._value_digest)

    def _local_class(self, h: Any, cls: type, ctx: Ctx) -> None:
        h.update(b"cls" + encode_str(str(cls.__module__)) + encode_str(cls.__qualname__))
        if type(cls) is not type:
            self._feed(h, type(cls), ctx)  # the metaclass
        self._feed(h, cls.__bases__, ctx)
        for key, val in vars(cls).items():
            if key in CLASS_SKIP:
                continue
            h.update(b"a" + encode_str(key))
            # An attribute that cannot be fingerprinted (slot descriptors, locks, ...) counts
            # by its type's qualified name: refusing the class would block every input that
            # is an instance of it, for state that is not the class's code.
            self._feed_or_fallback(h, val, ctx)

    def _local_module(self, h: Any, mod: types.ModuleType, ctx: Ctx) -> None:
        h.update(b"mod" + encode_str(mod.__name__))
        path = getattr(mod, "__file__", None)
        if path and path.endswith(".py"):
            from .imports import source_digest
            from .loaded import loaded_other_text

            h.update(source_digest(path) + loaded_other_text(mod))
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
                h.update(b"a" + encode_str(key))
                self._feed(h, val, ctx)
            elif not key.startswith("__") and is_plain_data(val):
                # Module-level data by its current value, not the source's: ``config.lr =
                # args.lr`` at run time, read by code that reaches the module through a local
                # import or a closure rather than as a global (those count the attribute too).
                h.update(b"v" + encode_str(key))
                self._feed(h, val, ctx)

    def code_refs_of(self, co: types.CodeType) -> _Refs:
        """Global names the code (and its nested code) reads, each with the attribute chain that
        follows it (``helpers.SCALE`` -> ("helpers", "SCALE")), its imports, in code order, and
        the globals it only stores into by item or attribute (``TIMINGS[name] = t``), which
        cannot change what it computes: they are left out of its key, not of what it changes."""
        hit = self._code_refs.get(id(co))
        if hit is None:
            chains: dict[tuple[str, ...], None] = {}
            imports: dict[tuple[Any, ...], None] = {}
            stored_into: dict[tuple[str, ...], None] = {}
            scan_refs(co, chains, imports, stored_into)
            written = tuple(c for c in stored_into if c not in chains)
            hit = self._code_refs[id(co)] = (tuple(chains), tuple(imports), written)
            self._keep.append(co)
        return hit

    def registered_code(self, obj: Any, attr: str) -> Any:
        """The user's code that ``obj.attr`` stands for when a library's type holds it: a
        pandas accessor (``df.geo``: a descriptor of DataFrame holding the user's class), a
        polars namespace, the user's function set on a library class. Looked up on the type,
        without running a descriptor; None for anything else."""
        kind = type(obj)
        if self.is_user_class(kind):
            return None  # the user's own class counts with the value
        held: Any = END
        for klass in kind.__mro__:
            held = vars(klass).get(attr, END)
            if held is not END:
                break
        if held is END:
            return None
        if isinstance(held, (types.FunctionType, type)) and self._is_user_code(held):
            return held
        inner = getattr(held, "__dict__", None)
        for value in inner.values() if isinstance(inner, dict) else ():
            if isinstance(value, (types.FunctionType, type)) and self._is_user_code(value):
                return value
        return None

    def is_counted_in_library(self, obj: Any) -> bool:
        """What a read through an installed module counts by value: plain data, and the
        user's code put there (``np.mean = fixes.mean``)."""
        return is_plain_data(obj) or self._is_user_code(obj)

    def _is_user_code(self, obj: Any) -> bool:
        if isinstance(obj, types.FunctionType):
            return self.is_user_function(obj)
        return isinstance(obj, type) and self.is_user_class(obj)

    def is_user_function(self, fn: types.FunctionType) -> bool:
        filename = fn.__code__.co_filename
        if is_user_file(filename):
            return True
        if filename.startswith("<") and not filename.startswith("<frozen"):
            # exec'd / generated code (<string>, <stdin>, dataclass methods): there is no
            # package version to stand in for it, so it counts by content unless it belongs
            # to a library module.
            return is_user_module_name(str(fn.__module__))
        return False

    def is_user_class(self, cls: type) -> bool:
        """Whether a class is the user's code (defined in the user's modules, or holding a
        function from the user's files); memoised per graph."""
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

    _is_user_class = is_user_class  # the value walker's name for it (key/values.py)


def _package_version(module_name: str) -> str:
    """``versions.package_version``, imported on first use: a hit on code that reaches no
    installed package never reads a dist-info."""
    from .versions import package_version

    return package_version(module_name)
