"""The user's functions a block reaches through code, and the module state they can change:
the globals they assign with ``global`` (outputs of whatever calls them) and the globals they
read (data they may change in place: ``REG.append(x)``, ``h2.TABLE[k] = v``, ``Model.n = 5``).

Reached as the code graph reaches code (the globals a function reads, along attribute chains
through the user's modules; its closure; a class's members; bound methods), but only through
code, so no data is walked.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any

from .code import stored_globals
from .codegraph import CodeGraph
from .provenance import is_user_module
from .walk import cells

#: (the globals dict holding a name, the name)
Slot = tuple[dict[str, Any], str]

_END = object()


def reached_functions(roots: Iterable[Any], graph: CodeGraph | None = None) -> list[types.FunctionType]:
    """The user's functions reachable from ``roots`` (functions, classes, bound methods)."""
    graph = graph or CodeGraph()
    found: list[types.FunctionType] = []
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        obj = getattr(obj, "__func__", obj)  # a bound method: its function
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, type) and graph.is_user_class(obj):
            stack.extend(getattr(v, "__func__", v) for v in vars(obj).values())
        elif isinstance(obj, types.FunctionType) and graph.is_user_function(obj):
            found.append(obj)
            stack.extend(c for c in cells(obj) or () if isinstance(c, (types.FunctionType, type)))
            for _slot, value in _chain_values(obj, graph):
                if isinstance(value, (types.FunctionType, type, types.MethodType)):
                    stack.append(value)
    return found


def _chain_values(fn: types.FunctionType, graph: CodeGraph) -> Iterable[tuple[Slot, Any]]:
    """Each global ``fn`` reads and each attribute of the user's modules along the chains that
    follow it (``helpers.TABLE``), also those that follow a name an import inside ``fn``
    binds (``import h2 as m; m.ARR += 1``), with where it lives and its current value."""
    glb = fn.__globals__
    reads, imports, stored_into = graph.code_refs_of(fn.__code__)
    for chain in (*reads, *stored_into):  # a global stored into by item is changed in place
        holder, name = glb, chain[0]
        value = holder.get(name, _END)
        if value is _END:
            continue  # a builtin, or unbound
        yield (holder, name), value
        yield from _along(value, chain[1:])
    if imports:
        yield from _local_import_values(fn)


def _along(value: Any, attrs: tuple[str, ...]) -> Iterable[tuple[Slot, Any]]:
    """Each attribute of ``attrs`` after ``value``, as long as the holder is a user module."""
    for attr in attrs:
        if not (isinstance(value, types.ModuleType) and is_user_module(value)):
            break
        holder = vars(value)
        value = holder.get(attr, _END)
        if value is _END:
            break
        yield (holder, attr), value


def _local_import_values(fn: types.FunctionType) -> Iterable[tuple[Slot, Any]]:
    """The attributes of the user's modules that ``fn`` reaches through the names its own
    imports bind, read or written (``m.ARR += 1`` changes ``h2.ARR`` in place), from the
    ``def``'s source (the code that runs; none when it is not at hand)."""
    import ast

    from .code import source_node
    from .source import attribute_chain

    node = source_node(fn.__code__)
    if node is None:
        return
    bound = _import_bindings(node, fn.__globals__.get("__package__"))
    if not bound:
        return
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            chain = attribute_chain(sub)
            if chain is not None and chain[0] in bound:
                yield from _bound_values(bound[chain[0]], chain[1:])
        elif isinstance(sub, ast.Name) and sub.id in bound:
            yield from _bound_values(bound[sub.id], ())


def _bound_values(binding: tuple[str, str | None], attrs: tuple[str, ...]) -> Iterable[tuple[Slot, Any]]:
    """What a local import binding (module name, the attribute imported from it or None)
    reaches along ``attrs``."""
    import sys

    module, attr = binding
    value = sys.modules.get(module, _END)
    if value is _END:
        return
    yield from _along(value, (attr, *attrs) if attr is not None else attrs)


def _import_bindings(node: Any, package: Any) -> dict[str, tuple[str, str | None]]:
    """local name -> (module name, attribute or None) for each import inside ``node``."""
    import ast
    import importlib.util

    bound: dict[str, tuple[str, str | None]] = {}
    for imp in ast.walk(node):
        if isinstance(imp, ast.Import):
            for alias in imp.names:
                top = alias.name.partition(".")[0]
                bound[alias.asname or top] = (alias.name if alias.asname else top, None)
        elif isinstance(imp, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * imp.level + (imp.module or ""), package or None)
            except (ImportError, ValueError):
                continue
            for alias in imp.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = (base, alias.name)
    return bound


def globals_stored_by_helpers(roots: Iterable[Any]) -> list[Slot]:
    """Every global that a user function reachable from ``roots`` assigns with ``global``:
    ``build()`` setting ``VOCAB``, ``helpers.init()`` setting ``helpers.STATE``. The code counts
    these nowhere else: they are outputs of whatever calls the function."""
    found: dict[tuple[int, str], Slot] = {}
    for fn in reached_functions(roots):
        glb = fn.__globals__
        for name in stored_globals(fn.__code__):
            found.setdefault((id(glb), name), (glb, name))
    return list(found.values())


def data_read_by_helpers(roots: Iterable[Any]) -> list[tuple[Slot, Any]]:
    """Every global, and attribute of the user's modules, that a user function reachable from
    ``roots`` reads and that is data or a class (not a module, a function or a method): what a
    helper can change in place (``REG.append(x)`` in ``def setup()``, ``h2.TABLE[k] = v``,
    ``Model.default = 5``), with its current value."""
    graph = CodeGraph()
    found: dict[tuple[int, str], tuple[Slot, Any]] = {}
    code = (types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)
    for fn in reached_functions(roots, graph):
        for slot, value in _chain_values(fn, graph):
            if not isinstance(value, code):
                found.setdefault((id(slot[0]), slot[1]), (slot, value))
    return list(found.values())
