"""What a code object is, for keys: its normalised source when that source is what runs, else
its bytecode; and the global names and imports it reads.

Helper code counts by the normalised AST of its ``def`` (or ``lambda``), found through the
code object's file and first line, so that a key does not depend on how the code was
compiled: ``python script.py`` compiles the whole file, ``statecache live`` one statement at a
time, and on 3.11+ the two give different bytecode for the same text (a module imported in the
same compilation unit turns ``LOAD_METHOD`` into ``LOAD_GLOBAL NULL + LOAD_ATTR``).

The file may have been edited since Python loaded the code (the user keeps editing while the
script runs). The source is used only when compiling it, whole or statement by statement,
gives exactly the running code (bytecode, constants, names; not line numbers); otherwise the
running code's bytecode is the digest, which can never key a new text on old code.
"""

from __future__ import annotations
import __future__

import ast
import struct
import sys
import types
from collections.abc import Iterator

import xxhash

from .astdigest import ast_digest
from .hashing import U64, encode_str
from .parsing import current_lines, parse_lines
from .provenance import is_user_file

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path

if TYPE_CHECKING:
    import dis  # imported where bytecode is scanned: a small hit reads none
    from typing import Any

_FUTURE_MASK = 0
for _feature in __future__.all_feature_names:
    _FUTURE_MASK |= getattr(__future__, _feature).compiler_flag


class _Unit:
    """One source text of a file, parsed, with its statements compiled on demand the ways the
    running code may have been compiled."""

    __slots__ = ("compiled", "filename", "flags", "imports", "lines", "spans", "tree")

    def __init__(self, lines: list[str], filename: str):
        self.lines = lines  # identity: current_lines returns the same list while the text is the same
        self.filename = filename
        self.tree: ast.Module | None = None
        self.compiled: dict[tuple[str, int], types.CodeType | None] = {}
        try:
            self.tree = parse_lines(filename, lines)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.tree = None
            return
        self.flags = future_flags(self.tree)
        self.spans = [(_first_line(s), s.end_lineno or s.lineno) for s in self.tree.body]
        self.imports = [n for s in self.tree.body for n in _module_scope_imports(s)]

    def statement_at(self, line: int) -> int | None:
        """Index of the top-level statement whose lines (decorators included) hold ``line``."""
        low, high = 0, len(self.spans)  # the last statement starting at or before ``line``
        while low < high:
            middle = (low + high) // 2
            if self.spans[middle][0] <= line:
                low = middle + 1
            else:
                high = middle
        i = low - 1
        return i if i >= 0 and self.spans[i][0] <= line <= self.spans[i][1] else None

    def statements_on(self, line: int) -> list[int]:
        """Indexes of every top-level statement whose lines hold ``line`` (several when
        statements share a line through ``;``)."""
        return [i for i, (first, last) in enumerate(self.spans) if first <= line <= last]

    def compiled_as(self, how: str, index: int) -> types.CodeType | None:
        """Statement ``index`` compiled as ``python file.py`` compiles it (``"file"``: with the
        module's imports, which change the bytecode of calls on imported names), alone as live
        mode compiles it (``"alone"``), or the whole text (``"whole"``)."""
        key = (how, index if how != "whole" else -1)
        if key not in self.compiled:
            assert self.tree is not None
            if how == "whole":
                body = self.tree.body
            else:
                stmt = self.tree.body[index]
                body = [*self.imports, stmt] if how == "file" else [stmt]
            try:
                module = ast.Module(body=body, type_ignores=[])
                code = compile(module, self.filename, "exec", flags=self.flags, dont_inherit=True)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                code = None
            self.compiled[key] = code
        return self.compiled[key]


def _module_scope_imports(stmt: ast.stmt) -> list[ast.stmt]:
    """Import statements that bind names in the module's scope (inside if/try/with/loops too),
    not those inside functions or classes."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [stmt]
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    found: list[ast.stmt] = []
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(stmt, field, None) or ():
            # except handlers and match cases hold statements in their own body
            subs = [child] if isinstance(child, ast.stmt) else list(getattr(child, "body", ()))
            for sub in subs:
                found.extend(_module_scope_imports(sub))
    return found


def future_flags(tree: ast.Module) -> int:
    """The compiler flags of a module's leading ``from __future__`` imports."""
    flags = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            for alias in stmt.names:
                flags |= getattr(getattr(__future__, alias.name, None), "compiler_flag", 0)
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            break
    return flags


_UNITS: dict[str, _Unit] = {}
_DIGESTS: dict[int, tuple[types.CodeType, list[str] | None, bytes]] = {}


def code_digest(co: types.CodeType) -> bytes:
    """Digest of a function's (or lambda's) code: ``b"src"`` + the normalised AST of its
    definition when the current source compiles to exactly this code, else ``b"bc"`` + its
    bytecode digest (always for code that is not the user's: its key is its package version).
    Cached per code object while the source text is the same."""
    filename = co.co_filename
    if not is_user_file(filename):  # installed code is compiled whole, from its .pyc
        return b"bc" + bytecode_digest(co)
    lines = current_lines(filename)
    hit = _DIGESTS.get(id(co))
    if hit is not None and hit[0] is co and hit[1] is (lines or None):
        return hit[2]
    node = _source_node(co, filename, lines) if lines else None
    result = b"src" + ast_digest(node) if node is not None else b"bc" + bytecode_digest(co)
    _DIGESTS[id(co)] = (co, lines or None, result)
    return result


def source_node(co: types.CodeType) -> ast.AST | None:
    """The ``def`` or ``lambda`` node of a user function's code in its file's current text,
    when that text compiles to exactly this code; None otherwise (no source, edited since
    loading, or code that is not the user's)."""
    filename = co.co_filename
    if not is_user_file(filename):
        return None
    lines = current_lines(filename)
    return _source_node(co, filename, lines) if lines else None


def frame_edited_after_loading(frame: types.FrameType) -> bytes:
    """``b""`` when the code the frame runs is what its file's current text compiles to (the
    whole file, the one statement live mode compiled, or the function, lines without code
    aside: ``running_lines``); else ``b"ran"`` + the
    running code's bytecode digest. A checkpoint whose key is read from the text mixes this
    in, so that a file saved while the script ran never keys the old code's result: the run
    that loads the new text computes again."""
    co = frame.f_code
    filename = co.co_filename
    lines = current_lines(filename, frame.f_globals) if filename else []
    if lines and _runs_text(co, filename, lines, frame.f_lineno):
        return b""
    if lines and _moved_line(filename, lines, co, frame.f_lasti) is not None:
        return b""  # the same code, its lines moved by lines without code: the text keys it
    return b"ran" + bytecode_digest(co)


def running_lines(frame: types.FrameType) -> tuple[list[str], int] | None:
    """The text of a file the frame's code was compiled from, with the frame's line in it:
    the file now, when it compiles to exactly the running code (positions too); else the text
    it was loaded from (the import watch's for a module, ``maintext``'s for the script), when
    that does; else the file now when it differs only in lines without code (comments, blank
    lines added or removed), with the frame's line moved to match. None when the file was
    edited and what ran cannot be known: the file's text is not that code's."""
    co = frame.f_code
    filename = co.co_filename
    lines = current_lines(filename, frame.f_globals)
    if lines and _compiles_to(_unit(filename, lines), co):
        return lines, frame.f_lineno
    for text in _loaded_texts(frame):
        try:
            loaded = text.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            continue
        if _compiles_to(_Unit(loaded, filename), co):
            return loaded, frame.f_lineno
    return _moved_line(filename, lines, co, frame.f_lasti) if lines else None


def _loaded_texts(frame: types.FrameType) -> list[bytes]:
    from .importwatch import loaded_source
    from .maintext import kept

    module = sys.modules.get(str(frame.f_globals.get("__name__")))
    found = loaded_source(module) if module is not None else None
    texts = [found.text] if found is not None and found.text is not None else []
    script = kept(frame.f_code.co_filename)
    return [*texts, script] if script is not None else texts


def _compiles_to(unit: _Unit, co: types.CodeType) -> bool:
    """Whether compiling the text whole gives exactly ``co``, lines and columns included.

    A function's code depends on the file only through its own top-level statement, the
    module's imports and its future flags (``compiled_as("file")``), so only that statement is
    compiled: a whole 2000-line file costs 50 ms. The module's own code needs the whole text."""
    if unit.tree is None:
        return False
    if co.co_name == "<module>":
        whole = unit.compiled_as("whole", 0)
        return whole is not None and any(c == co for c in _codes(whole))
    for index in unit.statements_on(co.co_firstlineno):
        code = unit.compiled_as("file", index)
        if code is not None and any(c == co for c in _codes(code)):
            return True
    return False


def _moved_line(filename: str, lines: list[str], co: types.CodeType, lasti: int) -> tuple[list[str], int] | None:
    """The text now and the line of instruction ``lasti`` in it, when it compiles to ``co``
    but for positions (one code object of that name: no doubt which one runs)."""
    unit = _unit(filename, lines)
    whole = unit.compiled_as("whole", 0) if unit.tree is not None else None
    name = getattr(co, "co_qualname", co.co_name)
    same = [c for c in _codes(whole) if getattr(c, "co_qualname", c.co_name) == name and same_code(c, co)] if whole else []
    if len(same) != 1:
        return None
    for start, end, line in same[0].co_lines():
        if start <= lasti < end and line is not None:
            return lines, line
    return None


def _runs_text(co: types.CodeType, filename: str, lines: list[str], lineno: int) -> bool:
    if co.co_name != "<module>":
        return _source_node(co, filename, lines) is not None
    unit = _unit(filename, lines)
    if unit.tree is None:
        return False
    index = unit.statement_at(lineno)
    whole = unit.compiled_as("whole", 0)
    alone = unit.compiled_as("alone", index) if index is not None else None
    return any(code is not None and same_code(code, co) for code in (whole, alone))


def _unit(filename: str, lines: list[str]) -> _Unit:
    unit = _UNITS.get(filename)
    if unit is None or unit.lines is not lines:
        unit = _UNITS[filename] = _Unit(lines, filename)
    return unit


def _source_node(co: types.CodeType, filename: str, lines: list[str]) -> ast.AST | None:
    """The def or lambda node of ``co`` in ``lines``, if they compile to ``co`` exactly."""
    unit = _unit(filename, lines)
    index = unit.statement_at(co.co_firstlineno) if unit.tree is not None else None
    if index is None or unit.tree is None:
        return None
    # Every statement on that line: `f = lambda: 1; g = lambda: 2` puts two on one line, and a
    # candidate found in only one of them could be the other function's source.
    found = [
        (i, n)
        for i in unit.statements_on(co.co_firstlineno)
        for n in ast.walk(unit.tree.body[i])
        if _defines(n, co)
    ]
    if len(found) != 1:  # not found, or ambiguous (two lambdas on one line)
        return None
    index, node = found[0]
    for how in ("file", "alone", "whole"):
        code = unit.compiled_as(how, index)
        if code is not None and _found_in(code, co):
            return node
    return None


def _first_line(node: Any) -> int:
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])


def _defines(node: ast.AST, co: types.CodeType) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name == co.co_name and _first_line(node) == co.co_firstlineno
    if isinstance(node, ast.Lambda):
        return co.co_name == "<lambda>" and node.lineno == co.co_firstlineno
    return False


def _codes(co: types.CodeType) -> Iterator[types.CodeType]:
    yield co
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _found_in(unit: types.CodeType, co: types.CodeType) -> bool:
    return any(
        c.co_firstlineno == co.co_firstlineno and c.co_name == co.co_name and same_code(c, co)
        for c in _codes(unit)
    )


def _shape(co: types.CodeType) -> tuple[Any, ...]:
    return (
        co.co_code,
        co.co_names,
        co.co_varnames,
        co.co_freevars,
        co.co_cellvars,
        co.co_argcount,
        co.co_posonlyargcount,
        co.co_kwonlyargcount,
        co.co_nlocals,
        co.co_flags & ~_FUTURE_MASK,
        co.co_name,
        getattr(co, "co_qualname", None),
        getattr(co, "co_exceptiontable", None),
        len(co.co_consts),
    )


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """True when ``a`` and ``b`` are the same code but for positions (lines, columns)."""
    return _shape(a) == _shape(b) and all(map(_same_const, a.co_consts, b.co_consts))


def _same_const(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, types.CodeType) and isinstance(b, types.CodeType):
        return same_code(a, b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(map(_same_const, a, b))
    return _const_bytes(a) == _const_bytes(b)


# ------------------------------------------------------------------ bytecode, where no source


def bytecode_digest(co: types.CodeType) -> bytes:
    """Normalised code object: bytecode, constants (nested code recursively), names and
    counts; not the file name, first line or line table (blank lines don't count)."""
    h = xxhash.xxh3_128()
    h.update(b"code" + encode_str(co.co_name))
    for count in (co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount, co.co_nlocals, co.co_flags):
        h.update(U64(count))
    h.update(U64(len(co.co_code)) + co.co_code)
    table = getattr(co, "co_exceptiontable", b"")  # 3.11+: try/except ranges are meaning
    h.update(U64(len(table)) + table)
    for names in (co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars):
        h.update(U64(len(names)))
        for ident in names:
            h.update(encode_str(ident))
    h.update(U64(len(co.co_consts)))
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            h.update(b"c" + bytecode_digest(const))
        else:
            h.update(_const_bytes(const))
    return h.digest()


def _const_bytes(v: object) -> bytes:
    """A constant of compiled code (atoms, tuples and frozensets of them), type and value."""
    t = type(v)
    if isinstance(v, tuple):
        return b"(" + U64(len(v)) + b"".join(_const_bytes(x) for x in v)
    if isinstance(v, frozenset):
        return b"{" + U64(len(v)) + b"".join(sorted(_const_bytes(x) for x in v))
    if t is float:
        return b"d" + struct.pack("<d", v)
    if t is complex:
        return b"j" + struct.pack("<dd", v.real, v.imag)  # type: ignore[attr-defined]
    if isinstance(v, types.CodeType):
        return b"c" + bytecode_digest(v)
    return encode_str(t.__qualname__) + encode_str(repr(v))


# ------------------------------------------------------------------ what the code reads

_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_SKIP_OPS = frozenset({"EXTENDED_ARG", "CACHE"})


def scan_refs(
    co: types.CodeType,
    chains: dict[tuple[str, ...], None],
    imports: dict[tuple[Any, ...], None],
    stored_into: dict[tuple[str, ...], None] | None = None,
) -> None:
    """Add the global names ``co`` (and its nested code) loads, each with the attribute chain
    that follows it (``helpers.SCALE`` -> ("helpers", "SCALE")), and its imports (module,
    level, fromlist), in code order. With ``stored_into``, a load that is only the target of
    an item or attribute store (``TIMINGS[name] = t``, ``STATS.last = t``, ``del CACHE[k]``)
    goes there instead of ``chains``: it cannot change what the code computes."""
    import dis

    chain: list[str] | None = None
    consts: list[Any] = [None, None]
    instructions = [ins for ins in dis.get_instructions(co) if ins.opname not in _SKIP_OPS]
    for at, ins in enumerate(instructions):
        op = ins.opname
        if op in _ATTR_OPS and chain is not None and isinstance(ins.argval, str):
            chain.append(ins.argval)
            continue
        if chain is not None:
            chains[tuple(chain)] = None
            chain = None
        if op in _GLOBAL_OPS and isinstance(ins.argval, str):
            if stored_into is not None and store_target(instructions, at):
                stored_into[(ins.argval,)] = None
            else:
                chain = [ins.argval]
        elif op == "IMPORT_NAME":
            level = consts[0] if isinstance(consts[0], int) else 0
            imports[(str(ins.argval), level, consts[1] if isinstance(consts[1], tuple) else None)] = None
        if op == "LOAD_CONST":
            consts = [consts[1], ins.argval]
    if chain is not None:
        chains[tuple(chain)] = None
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            scan_refs(const, chains, imports, stored_into)


#: Instructions that push one value and pop nothing: what a store's key may be made of.
_PUSH_OPS = frozenset({"LOAD_CONST", "LOAD_SMALL_INT", "LOAD_FAST", "LOAD_FAST_BORROW", "LOAD_DEREF",
                       "LOAD_FAST_CHECK", "LOAD_CLOSURE"})


def store_target(instructions: list[dis.Instruction], at: int) -> bool:
    """Whether the global loaded at ``instructions[at]`` is used only as the object of an
    item or attribute store or delete. The key between the load and the store may be made of
    constants, locals and cells, attributes of them and operators on them; anything else (a
    call, a second use of the value: ``+=``, ``.get``, ``in``) is a read, and counts."""
    load = instructions[at]
    if sys.version_info >= (3, 11) and (load.arg or 0) & 1:
        return False  # pushes NULL too: the global is called
    above = 0  # values pushed on top of the global since it was loaded
    for ins in instructions[at + 1:]:
        op = ins.opname
        if op in ("STORE_ATTR", "DELETE_ATTR"):
            return above == 0
        if op in ("STORE_SUBSCR", "DELETE_SUBSCR"):
            return above == 1
        if op in _PUSH_OPS:
            above += 1
        elif op in ("LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"):
            above += 2
        elif op == "LOAD_ATTR" and above >= 1 and not (sys.version_info >= (3, 12) and (ins.arg or 0) & 1):
            continue  # an attribute of the key (not a method to call)
        elif op.startswith("BINARY_") and op != "BINARY_SLICE" and above >= 2:
            above -= 1
        elif op == "BUILD_TUPLE" and isinstance(ins.arg, int) and 1 <= ins.arg <= above:
            above -= ins.arg - 1
        else:
            return False
    return False


def stored_globals(co: types.CodeType) -> tuple[str, ...]:
    """Names the code (nested code included) assigns or deletes with ``global``
    (STORE_GLOBAL, DELETE_GLOBAL), in code order."""
    import dis

    names: dict[str, None] = {}
    stack = [co]
    while stack:
        c = stack.pop(0)
        for ins in dis.get_instructions(c):
            if ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL") and isinstance(ins.argval, str):
                names.setdefault(ins.argval, None)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return tuple(names)
