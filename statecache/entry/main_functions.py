"""Functions of ``__main__`` that a block defines, pickled by value and rebuilt, on load, over
the globals of the live ``__main__`` module.

cloudpickle rebuilds such a function over a private copy of the globals it used: after a hit,
``FACTOR = 5`` in the script was not seen by the restored ``scale()``, and ``counter[0] += 1``
in a restored function changed a copy. A function defined by the block in a run that computes
reads and writes the module's globals; a restored one must do the same. This module is
imported by the Unpickler only for an entry that holds such functions.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def live_globals(func: Any) -> dict[str, Any] | None:
    """The namespace of the module ``func`` belongs to, when ``func`` runs in it (so that it
    can be rebuilt there on load); None otherwise (exec'd with other globals)."""
    module = sys.modules.get(getattr(func, "__module__", None) or "")
    namespace = getattr(module, "__dict__", None)
    return namespace if namespace is not None and func.__globals__ is namespace else None


def reduce_main_function(func: types.FunctionType) -> tuple[Any, ...]:
    """The reduce tuple of a function whose globals are those of its live module: rebuilt by
    ``main_function`` over that module's namespace; its closure, defaults and attributes are
    its state, set after it exists (so a function in its own closure pickles as a reference)."""
    cells = func.__closure__ or ()
    state = {
        "closure": [_cell_content(cell) for cell in cells],  # () for an empty cell
        "defaults": func.__defaults__,
        "kwdefaults": func.__kwdefaults__,
        "attributes": dict(func.__dict__),
        "qualname": func.__qualname__,
        "doc": func.__doc__,
        "annotations": func.__annotations__,
        "submodules": _imported_submodules(func, cells),
        "type_params": getattr(func, "__type_params__", ()),  # def f[T](...), 3.12+
    }
    args = (func.__module__, func.__code__, func.__name__, len(cells))
    return (main_function, args, state, None, None, set_main_function_state)


def main_function(module: str, code: types.CodeType, name: str, n_cells: int) -> Any:
    """A function of ``code`` over the live namespace of ``module`` (a fresh one if there is no
    such module in this process), with ``n_cells`` empty closure cells."""
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    if namespace is None:
        import builtins

        namespace = {"__name__": module, "__builtins__": builtins}
    closure = tuple(types.CellType() for _ in range(n_cells)) if n_cells else None
    func = types.FunctionType(code, namespace, name, None, closure)
    func.__module__ = module
    return func


def set_main_function_state(func: Any, state: dict[str, Any]) -> Any:
    """Fill a function from ``main_function`` with its saved closure, defaults and attributes."""
    for cell, content in zip(func.__closure__ or (), state["closure"], strict=True):
        if content:
            cell.cell_contents = content[0]
    func.__defaults__ = state["defaults"]
    func.__kwdefaults__ = state["kwdefaults"]
    func.__dict__.update(state["attributes"])
    func.__qualname__ = state["qualname"]
    func.__doc__ = state["doc"]
    func.__annotations__ = state["annotations"]
    if state.get("type_params"):
        func.__type_params__ = state["type_params"]
    return func


def _cell_content(cell: Any) -> tuple[Any, ...]:
    """(value,) of a closure cell, or () for a variable of the enclosing scope not assigned yet."""
    try:
        return (cell.cell_contents,)
    except ValueError:
        return ()


def _imported_submodules(func: types.FunctionType, cells: tuple[Any, ...]) -> list[Any]:
    """Submodules the code reaches as attributes of a module it names (``xml.dom.minidom``
    through ``xml``): pickled by reference in the state, so that loading imports them, as
    cloudpickle does for the functions it pickles by value."""
    names: set[str] = set()
    stack = [func.__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    values = [func.__globals__[n] for n in names if n in func.__globals__]
    values += [c[0] for c in map(_cell_content, cells) if c]
    # from each module, down the loaded submodules whose every part is a name of the code (a
    # few lookups per name, not a scan of sys.modules per module: 1.9 ms a function with
    # numpy and pandas loaded)
    todo = [v.__name__ for v in values if isinstance(v, types.ModuleType)]
    found: dict[str, Any] = {}
    while todo:
        parent = todo.pop()
        for name in names:
            child = f"{parent}.{name}"
            if child not in found and child in sys.modules:
                found[child] = sys.modules[child]
                todo.append(child)
    return list(found.values())
