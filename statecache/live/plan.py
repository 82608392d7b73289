"""A version of the script as live mode sees it: its top-level statements, a digest of every
prefix of them, where snapshots are taken, and the first statement two versions differ in.

"Did this code change" is decided by ``key.astdigest.ast_digest``, the normalised-AST digest
that checkpoint keys use: comments and formatting never count, any change in meaning does.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cached_property

from ..key.code import future_flags  # loaded once by the first worker, not in each run

START = "the start"
IMPORTS = "the imports"


@dataclass
class Plan:
    """A parsed version of the script. Snapshot point ``i`` is the state before statement
    ``i``; ``prefix[i]`` digests statements ``[0, i)``, so two versions agree up to point ``i``
    exactly when their ``prefix[i]`` are equal."""

    source: str
    tree: ast.Module
    prefix: list[str]
    points: dict[int, str]  # snapshot point -> label
    lines: dict[int, int] = field(default_factory=dict)  # point -> first line after it

    @property
    def stmts(self) -> list[ast.stmt]:
        return self.tree.body

    @cached_property
    def flags(self) -> int:
        """Compiler flags of the script's ``from __future__`` imports, for compiling its
        statements one at a time as the whole file would be (and as the keys compile them)."""
        return future_flags(self.tree)

    @property
    def imports_point(self) -> int:
        """The point after the leading imports; -1 when there is none."""
        return next((p for p, label in self.points.items() if label == IMPORTS), -1)

    def first_change(self, other: Plan) -> int | None:
        """Index of the first statement that differs from ``other`` (None: same code)."""
        n = min(len(self.prefix), len(other.prefix))
        for i in range(n):
            if self.prefix[i] != other.prefix[i]:
                return i - 1
        if len(self.prefix) == len(other.prefix):
            return None
        return n - 1

    def agrees_up_to(self, point: int, prefix: str) -> bool:
        """Whether a state built from a version with ``prefix`` at ``point`` is this version's
        state at ``point`` (the start always is)."""
        return point == 0 or (point < len(self.prefix) and self.prefix[point] == prefix)


def make_plan(source: str, path: str) -> Plan:
    """Parse ``source`` (raises SyntaxError) and find its snapshot points."""
    tree = ast.parse(source, path)
    points = _snapshot_points(tree.body)
    lines = {0: 1}
    for p in points:
        if p:
            prev = tree.body[p - 1]
            lines[p] = (prev.end_lineno or prev.lineno) + 1
    return Plan(source, tree, prefix_digests(tree.body), points, lines)


def prefix_digests(stmts: list[ast.stmt]) -> list[str]:
    """``out[i]``: a digest of ``stmts[:i]``, chained from the statements' own digests (so each
    statement is digested once)."""
    import xxhash

    from ..key.astdigest import ast_digest

    out = [""]
    h = xxhash.xxh3_128()
    for stmt in stmts:
        h.update(ast_digest(stmt))
        out.append(h.hexdigest())
    return out


def _snapshot_points(stmts: list[ast.stmt]) -> dict[int, str]:
    """The start, the end of the leading imports (and docstring), the end of every top-level
    ``with checkpoint(...)``."""
    points = {0: START}
    n_imports = 0
    for i, stmt in enumerate(stmts):
        is_doc = i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        if not (isinstance(stmt, (ast.Import, ast.ImportFrom)) or is_doc):
            break
        n_imports = i + 1
    if any(isinstance(s, (ast.Import, ast.ImportFrom)) for s in stmts[:n_imports]):
        points[n_imports] = IMPORTS
    for i, stmt in enumerate(stmts):
        name = _checkpoint_name(stmt)
        if name is not None:
            points[i + 1] = f"checkpoint {name!r}"
    return points


def _checkpoint_name(stmt: ast.stmt) -> str | None:
    """The name of a ``with checkpoint("name"):`` statement ("?" when not a literal); None
    for any other statement."""
    if not isinstance(stmt, (ast.With, ast.AsyncWith)):
        return None
    for item in stmt.items:
        call = item.context_expr
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name == "checkpoint":
            arg = call.args[0] if call.args else None
            return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "?"
    return None


def read_text(path: str) -> str | None:
    """The file's text; None when it cannot be read (an editor between delete and rename)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except OSError:
        return None


def module_digest(path: str, text: str | None = None) -> str | None:
    """Normalised-AST digest of a module's source; None when it does not parse."""
    from ..key.astdigest import ast_digest

    source = read_text(path) if text is None else text
    if source is None:
        return None
    try:
        tree = ast.parse(source, path)
    except (SyntaxError, ValueError):
        return None
    return ast_digest(tree).hex()
