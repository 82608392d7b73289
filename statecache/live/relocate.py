"""Code as live mode runs it: one top-level statement at a time, under the script's own file
name and line numbers, against the very source that runs.

What ``python script.py`` gives its code, this gives each statement: the same ``co_filename``
(the script's absolute path), the same line numbers, the same ``__future__`` flags, and
``linecache`` holding the text being run, so that tracebacks, ``inspect``, pdb and the
checkpoint's own source lookup see the code that runs, never a newer save on disk. When
unchanged statements moved (lines added above them), the functions they defined are moved too.
"""

from __future__ import annotations

import ast
import linecache
import types
from typing import Any


def compile_statement(stmt: ast.stmt, path: str, flags: int, first: bool) -> types.CodeType:
    """The code of one top-level statement, as the whole file would compile it.

    Alone in its module, a bare string would be compiled as the module's docstring and set
    ``__doc__``; only the file's ``first`` statement may (the string is dropped otherwise, as
    the whole file's compilation drops it)."""
    module = ast.Module(body=[stmt], type_ignores=[])
    optimize = -1 if first or not _is_string(stmt) else 2
    return compile(module, path, "exec", flags=flags, dont_inherit=True, optimize=optimize)


def _is_string(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def hold_source(path: str, source: str) -> None:
    """Make ``linecache`` answer with ``source`` for ``path`` until the next call.

    An entry without an mtime is never re-checked against the disk: a save during a run must
    not make the checkpoint key (or a traceback show) text that is not the code running."""
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[path] = (len(source), None, lines, path)


def _span(stmt: ast.stmt) -> tuple[int, int]:
    decorators = getattr(stmt, "decorator_list", [])
    first = min([stmt.lineno, *(d.lineno for d in decorators)])
    return first, stmt.end_lineno or stmt.lineno


def _shift_code(code: types.CodeType, delta: int) -> types.CodeType:
    consts = tuple(
        _shift_code(c, delta) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_firstlineno=code.co_firstlineno + delta, co_consts=consts)


class _Mover:
    """Shifts the code of functions and classes defined in the moved line ranges."""

    def __init__(self, path: str, moves: list[tuple[int, int, int]]):
        self.path = path
        self.moves = moves
        self.seen: set[int] = set()

    def delta_for(self, line: int) -> int:
        for first, last, delta in self.moves:
            if first <= line <= last:
                return delta
        return 0

    def visit(self, obj: Any, depth: int = 0) -> None:
        if obj is None or id(obj) in self.seen or depth > 4:
            return
        self.seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            if code.co_filename == self.path:
                delta = self.delta_for(code.co_firstlineno)
                if delta:
                    obj.__code__ = _shift_code(code, delta)
            self.visit(getattr(obj, "__wrapped__", None), depth + 1)
        elif isinstance(obj, type):
            self.visit_class(obj, depth)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.visit(obj.__func__, depth + 1)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                self.visit(f, depth + 1)
        elif callable(obj) and hasattr(obj, "__wrapped__"):
            self.visit(obj.__wrapped__, depth + 1)

    def visit_class(self, cls: type, depth: int) -> None:
        if getattr(cls, "__module__", None) != "__main__":
            return
        first = getattr(cls, "__firstlineno__", None)  # 3.13: inspect.getsource(cls)
        if isinstance(first, int) and self.delta_for(first):
            try:
                cls.__firstlineno__ = first + self.delta_for(first)  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
        for value in list(vars(cls).values()):
            self.visit(value, depth + 1)


def fix_lines(
    namespace: dict[str, Any], path: str, old: list[ast.stmt], new: list[ast.stmt]
) -> None:
    """Shift the code of functions (and methods) defined by ``old`` statements to the lines
    of the same statements in ``new``: for tracebacks, and for checkpoints inside them, which
    find their source by line."""
    moves = []
    for o, n in zip(old, new, strict=True):
        (o_first, o_last), (n_first, _) = _span(o), _span(n)
        if o_first != n_first:
            moves.append((o_first, o_last, n_first - o_first))
    if not moves:
        return
    mover = _Mover(path, moves)
    for value in list(namespace.values()):
        mover.visit(value)
