"""Find the ``with checkpoint(...)`` block that a frame is entering, and read off its code:
the statements of its body, the names it binds and reads (``names.analyse_names``), the
imports, attribute chains and environment variables it reads, and the file's checkpoint names.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from types import CodeType, FrameType

from .._errors import SourceNotFoundError, StateCacheError
from . import maintext
from .code import running_lines
from .names import analyse_names
from .parsing import current_lines, held_linecache, parse_lines

__all__ = [
    "Block",
    "analyse_names",  # kept here too: callers have always imported it from this module
    "checkpoint_names_in",
    "find_with_block",
    "implicit_reads",
    "imports_in",
    "parse_lines",
    "source_lines",
]


class Block:
    """One ``with`` statement of a source file, as the checkpoint needs it. (A plain class: a
    NamedTuple of eleven fields costs the first checkpoint of a process 1 M instructions, a
    dataclass imports inspect.)"""

    __slots__ = ("as_name", "assigned", "attribute_reads", "body", "body_lines", "environ_keys",
                 "filename", "imports", "inputs", "name_lines", "with_line")

    def __init__(
        self,
        filename: str,
        with_line: int,
        body: list[ast.stmt],
        body_lines: tuple[int, int],
        assigned: tuple[str, ...],
        inputs: tuple[str, ...],
        name_lines: dict[str, list[int]],
        attribute_reads: tuple[tuple[str, ...], ...],
        environ_keys: tuple[str, ...],
        imports: tuple[tuple[str, int, tuple[str, ...]], ...],
        as_name: str | None,
    ):
        self.filename = filename
        self.with_line = with_line
        self.body = body
        self.body_lines = body_lines
        self.assigned = assigned  # names the body binds in the frame's scope, in source order
        self.inputs = inputs  # names read that the body did not bind first
        self.name_lines = name_lines  # literal checkpoint names of the file
        self.attribute_reads = attribute_reads  # every ``name.attr[.attr...]`` chain (prefixes too)
        self.environ_keys = environ_keys  # constant keys of os.environ[...], .get(...), os.getenv(...)
        self.imports = imports  # (module, level, names) of every import
        self.as_name = as_name  # ``with ... as NAME`` of this item: a skip happens before Python binds it

    @property
    def empty(self) -> bool:
        """True for a body of only ``pass``, constants or docstrings: it compiles to nothing a
        skip could interrupt inside the block, and running it does nothing anyway."""
        return all(
            isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in self.body
        )


_blocks: dict[tuple[str, int, int], Block] = {}

maintext.keep()  # at the first checkpoint, if ``import statecache`` did not do it already


def source_lines(frame: FrameType) -> list[str]:
    """The current source of the frame's file (also IPython cells, which linecache holds, and
    the program of ``python -c``); empty when it cannot be known for sure."""
    filename = frame.f_code.co_filename
    lines = current_lines(filename, frame.f_globals)
    if filename == "<string>":
        # python -c and exec() of a string share this name: use a text only if it compiles to
        # the very code that is running, so that an exec'd string never borrows -c's source.
        lines = lines or _dash_c_source()
        try:
            compiled = compile("".join(lines), filename, "exec") if lines else None
        except (SyntaxError, ValueError):
            compiled = None
        if compiled is None or not _contains_code(compiled, frame.f_code):
            return []
    return lines


def _dash_c_source() -> list[str]:
    """The program text of ``python -c PROGRAM`` (Linux: from /proc/self/cmdline)."""
    if not sys.argv or sys.argv[0] != "-c":
        return []
    try:
        with open("/proc/self/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return []
    for i, arg in enumerate(args[1:], start=1):
        if arg == b"-c" and i + 1 < len(args):
            return args[i + 1].decode("utf-8", "surrogateescape").splitlines(keepends=True)
    return []


def _contains_code(code: CodeType, target: CodeType) -> bool:
    if (code.co_code, code.co_name, code.co_firstlineno) == (target.co_code, target.co_name, target.co_firstlineno):
        return True
    return any(isinstance(c, CodeType) and _contains_code(c, target) for c in code.co_consts)


def find_with_block(frame: FrameType, what: str = "checkpoint") -> Block:
    """The innermost ``with`` statement whose header holds the frame's current line.

    Raises ``SourceNotFoundError`` when the source is not available (``python -c``, ``exec``
    of a string) and ``StateCacheError`` when the body shares the header's line.
    """
    filename = frame.f_code.co_filename
    lineno = frame.f_lineno
    lines = source_lines(frame)
    where = f"{filename}:{lineno}"
    if lines and _read_from_disk(filename):
        ran = running_lines(frame)  # the file may have been saved since it was loaded
        if ran is not None:
            lines, lineno = ran
    if not lines:
        raise SourceNotFoundError(
            f"{what} at {where}: the source of this block cannot be read (code run with "
            "'python -c', exec() of a string or an interactive prompt). Put the code in a "
            "file and run that file."
        )
    try:
        tree = parse_lines(filename, lines)
    except SyntaxError as exc:
        raise SourceNotFoundError(
            f"{what} at {where}: the source file on disk no longer parses ({exc.msg}, line "
            f"{exc.lineno}); was it edited while running?"
        ) from None
    cache_key = (filename, id(tree), lineno)
    block = _blocks.get(cache_key)
    if block is not None:
        return block
    node = _innermost_with(tree, lineno)
    if node is None:
        raise SourceNotFoundError(
            f"{what} at {where}: no 'with' statement found at this line of the source; "
            f"use it as 'with statecache.{what}(...):' in a file whose source matches what runs."
        )
    first = min(getattr(n, "lineno", node.body[0].lineno) for n in ast.walk(node.body[0]))
    last = max(getattr(n, "end_lineno", None) or first for n in node.body)
    header_end = max(item.context_expr.end_lineno or node.lineno for item in node.items)
    if first <= header_end:
        raise StateCacheError(
            f"{what} at {where}: put the body of the 'with' block on its own lines "
            "(it cannot be skipped when it shares the line of the 'with')"
        )
    escape = _escape(node.body)
    if escape:
        raise StateCacheError(
            f"{what} at {where}: the body contains '{escape}', which a cache hit cannot replay "
            "(the body is skipped); move it after the block"
        )
    assigned, inputs = analyse_names(node.body)
    attribute_reads, environ_keys = implicit_reads(node.body)
    block = Block(
        filename, node.lineno, node.body, (first, last), tuple(assigned), tuple(inputs),
        checkpoint_names_in(tree), attribute_reads, environ_keys, imports_in(node.body),
        _as_name(node, what, where),
    )
    _blocks[cache_key] = block
    return block


def _read_from_disk(filename: str) -> bool:
    """A file's text as read from disk, which an editor may have saved since Python loaded it
    (not an IPython cell or the text live mode runs, which linecache holds without a stamp)."""
    if filename.startswith("<"):
        return False
    linecache = held_linecache()
    entry = linecache.cache.get(filename) if linecache is not None else None
    return entry is None or len(entry) < 2 or entry[1] is not None


def _innermost_with(tree: ast.Module, lineno: int) -> ast.With | ast.AsyncWith | None:
    best: ast.With | ast.AsyncWith | None = None
    for node in _statements(tree.body, lineno):
        if isinstance(node, (ast.With, ast.AsyncWith)) and node.body:
            header_end = node.body[0].lineno - 1
            header_end = max(header_end, node.lineno)
            if node.lineno <= lineno <= header_end and (best is None or node.lineno >= best.lineno):
                best = node
    return best


def _as_name(node: ast.With | ast.AsyncWith, what: str, where: str) -> str | None:
    """The plain name after ``as`` in this item of the ``with``, if any. The skip raises before
    Python stores the ``as`` target, so the context manager binds it itself."""
    items = node.items
    if len(items) > 1:
        mine = [i for i in items if isinstance(i.context_expr, ast.Call) and _callee_name(i.context_expr.func) == what]
        items = mine[:1] or items[:0]
    if not items or items[0].optional_vars is None:
        return None
    target = items[0].optional_vars
    if not isinstance(target, ast.Name):
        raise StateCacheError(f"{what} at {where}: use a plain name after 'as' (for example 'as run')")
    return target.id


def implicit_reads(body: list[ast.stmt]) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """Reads that a name's value does not show: ``module.attribute`` chains (``sys.argv``
    belongs to a module that counts by version only; ``helpers.SCALE`` may have been set at run
    time; ``pkg.sub.f`` reaches a submodule) and environment variables read with a constant key
    (``key.process.scan``)."""
    from .process import scan

    attributes: dict[tuple[str, ...], None] = {}
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Attribute):
                chain = attribute_chain(node)
                if chain is not None:
                    attributes.setdefault(chain, None)
    return tuple(attributes), scan(body)[0]


def attribute_chain(node: ast.Attribute) -> tuple[str, ...] | None:
    """``a.b.c`` -> ("a", "b", "c"); None when the chain does not start at a plain name."""
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name):
        return None
    parts.append(value.id)
    return tuple(reversed(parts))


def bare_names(body: list[ast.stmt]) -> tuple[str, ...]:
    """Names the body reads other than as the root of an attribute chain: ``g(helpers)`` and
    ``getattr(helpers, name)`` read ``helpers`` itself, ``helpers.f()`` reads only its ``f``.
    A user module read only through chains can count by those attributes (and its top level,
    ``imports.top_level_digest``) instead of its whole file."""
    roots: set[int] = set()
    found: dict[str, None] = {}
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                roots.add(id(node.value))
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in roots:
                found.setdefault(node.id, None)
    return tuple(found)


def imports_in(body: list[ast.stmt]) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    """(module, level, imported names) of every import statement of the body, nested code
    included: a module imported there is bound by the body, so it is no input, and if it was
    imported before the block, running the body opens none of its files either."""
    found: dict[tuple[str, int, tuple[str, ...]], None] = {}
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault((alias.name, 0, ()), None)
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names if alias.name != "*")
                found.setdefault((node.module or "", node.level, names), None)
    return tuple(found)


def _escape(body: list[ast.stmt]) -> str | None:
    """The first return/yield/break/continue that would leave the body early (None if none)."""

    def visit(node: ast.AST, in_loop: bool) -> str | None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return None
        if isinstance(node, ast.Return):
            return "return"
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return "yield"
        if isinstance(node, (ast.Break, ast.Continue)) and not in_loop:
            return "break" if isinstance(node, ast.Break) else "continue"
        loop = isinstance(node, (ast.For, ast.AsyncFor, ast.While))
        for field_name, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    # a loop's else: clause is outside the loop for break/continue
                    found = visit(child, in_loop or (loop and field_name == "body"))
                    if found:
                        return found
        return None

    for stmt in body:
        found = visit(stmt, False)
        if found:
            return found
    return None


def checkpoint_names_in(tree: ast.Module) -> dict[str, list[int]]:
    """Literal names of ``checkpoint("name")`` calls in a file, with the lines they appear on
    (in line order); computed once per parsed text."""
    kept = _NAMES.get(id(tree))
    if kept is not None and kept[0] is tree:
        return kept[1]
    found: dict[str, list[int]] = {}
    for node in _statements(tree.body):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and _callee_name(call.func) == "checkpoint"
                    and call.args
                    and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)
                ):
                    found.setdefault(call.args[0].value, []).append(node.lineno)
    for lines in found.values():
        lines.sort()
    _NAMES[id(tree)] = (tree, found)
    return found


_NAMES: dict[int, tuple[ast.Module, dict[str, list[int]]]] = {}
#: The fields of a statement that hold statements (a handler's or a case's ``body`` too).
_STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: list[ast.stmt], line: int | None = None) -> Iterator[ast.stmt]:
    """Every statement in ``body``, nested ones included; with ``line``, only those whose
    lines hold it. A ``with`` is a statement, never part of an expression, so this finds every
    one while visiting a tenth of the nodes ``ast.walk`` would (a 2000-line file: 30k)."""
    stack = list(reversed(body))
    while stack:
        stmt = stack.pop()
        if line is not None and not stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            continue
        yield stmt
        children: list[ast.stmt] = []
        for field in _STATEMENT_FIELDS:
            for child in getattr(stmt, field, None) or ():
                # except handlers and match cases are no statements: their bodies are
                children.extend([child] if isinstance(child, ast.stmt) else getattr(child, "body", ()))
        stack.extend(reversed(children))


def _callee_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None
