"""Which names a block of statements binds, and which it reads before surely binding them.

The analysis errs on the side of more inputs: a name counts as bound only after a simple
top-level statement of the body binds it unconditionally; anything read before that, or read
inside a branch, loop or nested function, is an input whose value goes into the key.
"""

from __future__ import annotations

import ast

from .._errors import StateCacheError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


def analyse_names(body: list[ast.stmt]) -> tuple[list[str], list[str]]:
    """(names the body binds, names it reads before surely binding them), both in source order."""
    assigned: dict[str, None] = {}
    for stmt in body:
        for name in _binds(stmt):
            assigned.setdefault(name, None)
    inputs: dict[str, None] = {}
    _scan(body, set(), inputs)
    return list(assigned), list(inputs)


def _scan(stmts: list[ast.stmt], bound: set[str], inputs: dict[str, None]) -> set[str]:
    """Walk statements in execution order, noting reads of names not surely bound yet; return
    the names surely bound once ``stmts`` complete. A branch or loop body binds nothing for
    the code after it (it may not run), but is itself scanned in order."""
    bound = set(bound)

    def read(node: ast.AST | None) -> None:
        if node is not None:
            for name in _loads(node):
                if name not in bound:
                    inputs.setdefault(name, None)

    for stmt in stmts:
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                read(item.context_expr)
                if item.optional_vars is not None:
                    read_targets = [n for n in ast.walk(item.optional_vars) if not isinstance(n, ast.Name)]
                    for sub in read_targets:
                        if isinstance(sub, (ast.Attribute, ast.Subscript)):
                            read(sub.value)
                    bound |= set(_binds(item.optional_vars))
            bound = _scan(stmt.body, bound, inputs)  # a with body always runs
        elif isinstance(stmt, ast.If):
            read(stmt.test)
            bound |= _scan(stmt.body, bound, inputs) & _scan(stmt.orelse, bound, inputs)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            read(stmt.iter)
            _scan(stmt.body, bound | set(_binds(stmt.target)), inputs)
            _scan(stmt.orelse, bound, inputs)
        elif isinstance(stmt, ast.While):
            read(stmt.test)
            _scan(stmt.body, bound, inputs)
            _scan(stmt.orelse, bound, inputs)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            tried: Any = stmt
            _scan(tried.body, bound, inputs)
            for handler in tried.handlers:
                read(handler.type)
                _scan(handler.body, bound | ({handler.name} if handler.name else set()), inputs)
            _scan(tried.orelse, bound, inputs)
            _scan(tried.finalbody, bound, inputs)
        else:
            read(stmt)
            bound |= _sure_binds(stmt)
    return bound


def _binds(node: ast.AST) -> list[str]:
    """Every name that ``node`` may bind in the enclosing scope (not inside nested scopes)."""
    out: list[str] = []

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.append(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(n.name)
            for d in n.decorator_list:
                visit(d)
            if not isinstance(n, ast.ClassDef):
                for d in n.args.defaults + [k for k in n.args.kw_defaults if k is not None]:
                    visit(d)
            return
        elif isinstance(n, ast.Lambda):
            return
        elif isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            for sub in ast.walk(n):  # a walrus inside a comprehension binds outside it
                if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                    out.append(sub.target.id)
            return
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name == "*":
                    raise StateCacheError(
                        "'from ... import *' inside a checkpoint body binds names that cannot be "
                        "known in advance: import the names explicitly"
                    )
                out.append(alias.asname or alias.name.split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.append(n.name)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            out.append(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            out.append(n.rest)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return out


def _sure_binds(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds whenever it completes normally."""
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
            return set()
        return {n for n in _binds(stmt) if n not in _deleted(stmt)}
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return set(_binds(stmt))
    return set()


def _deleted(stmt: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Del)}


def _loads(node: ast.AST) -> list[str]:
    """Names read by ``node`` from the enclosing scope, nested scopes' own locals excluded."""
    out: list[str] = []

    def visit(n: ast.AST, local: frozenset[str]) -> None:
        if isinstance(n, ast.Name):
            if isinstance(n.ctx, ast.Load) and n.id not in local:
                out.append(n.id)
            return
        if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name) and n.target.id not in local:
            out.append(n.target.id)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = n.args
            for d in args.defaults + [k for k in args.kw_defaults if k is not None]:
                visit(d, local)
            if not isinstance(n, ast.Lambda):
                for d in n.decorator_list:
                    visit(d, local)
                if n.returns is not None:
                    visit(n.returns, local)
            params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
            params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
            body: list[ast.AST] = list(n.body) if isinstance(n.body, list) else [n.body]
            inner = local | params | {b for stmt in body for b in _binds(stmt)}
            inner -= _declared_global(body)
            for stmt in body:
                visit(stmt, frozenset(inner))
            return
        if isinstance(n, ast.ClassDef):
            for d in n.decorator_list + n.bases + [k.value for k in n.keywords]:
                visit(d, local)
            class_local = local | {b for stmt in n.body for b in _binds(stmt)}
            for stmt in n.body:
                visit(stmt, frozenset(class_local))
                # Functions, lambdas and comprehensions in a class body do not see the class
                # scope: a name there that the class binds is still read from outside.
                for scope in _nested_scopes(stmt):
                    visit(scope, local)
            return
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            targets = {t.id for g in n.generators for t in ast.walk(g.target) if isinstance(t, ast.Name)}
            visit(n.generators[0].iter, local)
            inner_local = local | targets
            for g in n.generators:
                if g is not n.generators[0]:
                    visit(g.iter, inner_local)
                for cond in g.ifs:
                    visit(cond, inner_local)
            for part in ("elt", "key", "value"):
                sub = getattr(n, part, None)
                if sub is not None:
                    visit(sub, inner_local)
            return
        for child in ast.iter_child_nodes(n):
            visit(child, local)

    visit(node, frozenset())
    return out


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _nested_scopes(node: ast.AST) -> list[ast.AST]:
    """The outermost function, lambda and comprehension nodes in ``node`` (itself included),
    nested classes' bodies included (no class scope is visible to them)."""
    if isinstance(node, _SCOPES):
        return [node]
    return [s for child in ast.iter_child_nodes(node) for s in _nested_scopes(child)]


def _declared_global(body: list[ast.AST]) -> set[str]:
    names: set[str] = set()
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, (ast.Global, ast.Nonlocal)):
                names.update(n.names)
    return names
