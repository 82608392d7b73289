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
    follow it (``helpers.TABLE``), with where it lives and its current value."""
    glb = fn.__globals__
    reads, _imports, stored_into = graph.code_refs_of(fn.__code__)
    for chain in (*reads, *stored_into):  # a global stored into by item is changed in place
        holder, name = glb, chain[0]
        value = holder.get(name, _END)
        if value is _END:
            continue  # a builtin, or unbound
        yield (holder, name), value
        for attr in chain[1:]:
            if not (isinstance(value, types.ModuleType) and is_user_module(value)):
                break
            holder, name = vars(value), attr
            value = holder.get(name, _END)
            if value is _END:
                break
            yield (holder, name), value


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
