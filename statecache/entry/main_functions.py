"""Functions of ``__main__`` that a block defines, pickled by value and rebuilt, on load, over
the globals of the live ``__main__`` module, and over the live cells of the function frame
that holds the block.

cloudpickle rebuilds such a function over a private copy of the globals it used: after a hit,
``FACTOR = 5`` in the script was not seen by the restored ``scale()``, and ``counter[0] += 1``
in a restored function changed a copy. A function defined by the block in a run that computes
reads and writes the module's globals; a restored one must do the same. Likewise for a block
inside ``def main():``: a function it defines closes over ``main``'s variables (``k = 5``
later in ``main`` is seen by it, its ``nonlocal`` writes reach ``main``), so the save notes
which of its cells were those of the running frame (by identity, ``_frames.frame_cells``) and
the load closes it over the same variables of the frame running the block then. Their saved
contents are written into them only once the whole entry loaded (``settle``), so that a
damaged entry changes nothing. This module is imported by the Unpickler only for an entry
that holds such functions.
"""

from __future__ import annotations

import sys
import types
import weakref
from typing import Any

from .._frames import frame_cells
from .._warnings import warn

#: functions rebuilt over live cells -> the indices of those cells in their closure
_live: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()
#: (live cell, saved content) to write once the entry loaded whole
_deferred: list[tuple[Any, Any]] = []


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
    args: tuple[Any, ...] = (func.__module__, func.__code__, func.__name__, len(cells))
    shared = _frame_variables(func)
    if shared is not None:
        args += (shared,)
    return (main_function, args, state, None, None, set_main_function_state)


def main_function(
    module: str, code: types.CodeType, name: str, n_cells: int,
    shared: tuple[str, dict[int, str]] | None = None,
) -> Any:
    """A function of ``code`` over the live namespace of ``module`` (a fresh one if there is no
    such module in this process), with ``n_cells`` empty closure cells, except those that
    ``shared`` (the scope's name, closure index -> variable) says were the variables of the
    frame running the block: those are that frame's cells now."""
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    if namespace is None:
        import builtins

        namespace = {"__name__": module, "__builtins__": builtins}
    closure = [types.CellType() for _ in range(n_cells)]
    live = _running_cells(*shared) if shared else {}
    if shared and live is None:
        names = ", ".join(sorted(shared[1].values()))
        warn(
            f"statecache: the restored function {name}() closes over {names} of {shared[0]}(), "
            "but this Python's frames cannot be read: it holds copies, so a later change of "
            f"them in {shared[0]}() is not seen by it, nor its changes by {shared[0]}(). Define "
            f"{name}() after the block to share them.")
    for index, cell in (live or {}).items():
        closure[index] = cell
    func = types.FunctionType(code, namespace, name, None, tuple(closure) if n_cells else None)
    func.__module__ = module
    if live:
        _live[func] = frozenset(live)
    return func


def set_main_function_state(func: Any, state: dict[str, Any]) -> Any:
    """Fill a function from ``main_function`` with its saved closure, defaults and attributes
    (the saved contents of live cells wait for ``settle``)."""
    live = _live.pop(func, frozenset())
    for index, (cell, content) in enumerate(zip(func.__closure__ or (), state["closure"], strict=True)):
        if content and index in live:
            _deferred.append((cell, content[0]))
        elif content:
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


def settle(loaded: bool) -> None:
    """After a load: write the saved contents into the live cells the functions it rebuilt
    close over (``loaded``: the whole entry loaded), or drop them (it failed: the frame's
    variables stay as they are, for the run that computes).

    Only immutable contents are written (``count`` a ``nonlocal count += 1`` changed): a
    mutable object in a live cell is the frame's own, which the restore fills in place when
    the block changed it (``_identity``); a block that rebinds such a variable to a new
    object through ``nonlocal`` is not followed (README)."""
    from .._identity import immutable

    writes = list(_deferred)
    _deferred.clear()
    if loaded:
        for cell, content in writes:
            if immutable(content):
                cell.cell_contents = content


def _scope(code: types.CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)  # 3.10 has no co_qualname


def _frame_variables(func: types.FunctionType) -> tuple[str, dict[int, str]] | None:
    """(scope, closure index -> variable) for the cells of ``func`` that are variables of a
    running function frame (the one holding the block), by identity; None if none is.
    Where the frames cannot be read, the cells named like the variables of a frame the
    function's qualified name places it in are taken for them (the load then warns)."""
    free = func.__code__.co_freevars
    if not free:
        return None
    closure = func.__closure__ or ()
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        names = {*code.co_cellvars, *code.co_freevars}.intersection(free)
        if names:
            cells = frame_cells(frame)
            if cells is None and func.__qualname__.startswith(_scope(code) + ".<locals>."):
                return _scope(code), {i: n for i, n in enumerate(free) if n in names}
            found = {i: n for i, n in enumerate(free) if (cells or {}).get(n, None) is closure[i]}
            if found:
                return _scope(code), found
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _running_cells(scope: str, variables: dict[int, str]) -> dict[int, Any] | None:
    """closure index -> the cell of that variable in the innermost running frame of ``scope``
    (the one holding the block); {} when no frame runs it (a tool reading the entry), None
    when the frames cannot be read."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if _scope(code) == scope and set(variables.values()) <= {*code.co_cellvars, *code.co_freevars}:
            cells = frame_cells(frame)
            if cells is None or not set(variables.values()) <= set(cells):
                return None
            return {i: cells[n] for i, n in variables.items()}
        frame = frame.f_back  # type: ignore[assignment]
    return {}


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
