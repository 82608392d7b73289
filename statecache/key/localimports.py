"""Imports inside a function, and how the function uses the names they bind: ``def run():
import helpers; return helpers.f(3)`` reads ``helpers.f`` and nothing else of ``helpers``.

Read from the ``def``'s source (the code that runs; see ``code.source_node``), so that the
code graph can count such a module as it counts a module imported at the top (its top level,
then the attribute chains the code reads, by value), instead of its whole file and every
literal whose loaded value differs from the text (a timing dict another function fills).
"""

from __future__ import annotations

import ast

from .source import attribute_chain

#: an import as the bytecode gives it: (module, level, fromlist or None)
ImportKey = tuple[str, int, "tuple[str, ...] | None"]


class Binding:
    """One local name an import binds: ``local`` holds ``module`` (``import a.b as c``,
    ``import helpers``; ``import a.b`` binds its top package ``a``), or the attribute ``attr``
    of ``module`` (``from . import x``). ``chains`` are the attribute chains the code reads
    after the name (``()`` when it reads the name itself: ``use(helpers)``). (A plain class: a
    NamedTuple class costs the first hit of a process about 1 M instructions to build.)"""

    __slots__ = ("attr", "chains", "loads", "local", "module")

    def __init__(
        self, local: str, module: str, attr: str | None, loads: tuple[str, ...],
        chains: tuple[tuple[str, ...], ...],
    ):
        self.local = local
        self.module = module
        self.attr = attr
        self.loads = loads  # every module the statement imports, which must all be loaded
        self.chains = chains

    def with_chains(self, chains: tuple[tuple[str, ...], ...]) -> Binding:
        return Binding(self.local, self.module, self.attr, self.loads, chains)


def local_imports(node: ast.AST) -> dict[ImportKey, tuple[Binding, ...]]:
    """The imports inside ``node`` (a ``def`` or ``lambda``) whose names are bound by nothing
    else there and read only (never assigned, deleted or declared ``global``/``nonlocal``),
    each with what it binds and how it is read. An import missing from the result counts by
    its modules' files, as before."""
    found: dict[ImportKey, list[Binding]] = {}
    bound_by: dict[str, list[ImportKey]] = {}
    for imp in ast.walk(node):
        if isinstance(imp, ast.Import):
            for alias in imp.names:
                key: ImportKey = (alias.name, 0, None)
                parts = alias.name.split(".")
                loads = tuple(".".join(parts[: i + 1]) for i in range(len(parts)))
                if alias.asname:
                    binding = Binding(alias.asname, alias.name, None, loads, ())
                else:
                    binding = Binding(parts[0], parts[0], None, loads, ())
                found.setdefault(key, []).append(binding)
                bound_by.setdefault(binding.local, []).append(key)
        elif isinstance(imp, ast.ImportFrom):
            names = tuple(a.name for a in imp.names)
            key = (imp.module or "", imp.level, names)
            for alias in imp.names:
                if alias.name == "*":
                    found[key] = []  # binds names no one can list: counted by files
                    continue
                binding = Binding(alias.asname or alias.name, imp.module or "", alias.name, (), ())
                found.setdefault(key, []).append(binding)
                bound_by.setdefault(binding.local, []).append(key)
    if not found:
        return {}
    uses, unsafe = _uses(node, set(bound_by))
    unsafe.update(name for name, keys in bound_by.items() if len(keys) > 1)
    result: dict[ImportKey, tuple[Binding, ...]] = {}
    for key, bindings in found.items():
        if bindings and not any(b.local in unsafe for b in bindings):
            result[key] = tuple(b.with_chains(tuple(uses.get(b.local, ()))) for b in bindings)
    return result


def _uses(node: ast.AST, names: set[str]) -> tuple[dict[str, dict[tuple[str, ...], None]], set[str]]:
    """For each of ``names``: the attribute chains read after it (``()`` for the name read on
    its own); and the names bound or declared some other way (unsafe to count by chains)."""
    uses: dict[str, dict[tuple[str, ...], None]] = {}
    unsafe: set[str] = set()
    inner: set[int] = set()  # Name nodes already counted as the root of a chain
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and id(sub) not in inner:
            chain = attribute_chain(sub)
            if chain is None or chain[0] not in names:
                continue
            _mark_inner(sub, inner)
            if not isinstance(sub.ctx, ast.Load):
                unsafe.add(chain[0])  # ``helpers.X = 1``: the module changes; count it whole
            uses.setdefault(chain[0], {})[chain[1:]] = None
        elif isinstance(sub, ast.Name) and sub.id in names and id(sub) not in inner:
            if isinstance(sub.ctx, ast.Load):
                uses.setdefault(sub.id, {})[()] = None
            else:
                unsafe.add(sub.id)
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            unsafe.update(n for n in sub.names if n in names)
        elif isinstance(sub, ast.arg) and sub.arg in names:
            unsafe.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub.name in names:
            unsafe.add(sub.name)
        elif isinstance(sub, ast.ExceptHandler) and sub.name in names:
            unsafe.add(sub.name)
        elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name in names:
            unsafe.add(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest in names:
            unsafe.add(str(sub.rest))
    return uses, unsafe


def _mark_inner(node: ast.Attribute, inner: set[int]) -> None:
    """Mark the attributes and the name inside the longest chain ``node`` heads."""
    value: ast.expr = node.value
    while isinstance(value, ast.Attribute):
        inner.add(id(value))
        value = value.value
    inner.add(id(value))


def used_names(base: str, bindings: tuple[Binding, ...]) -> dict[str, frozenset[str] | None]:
    """Module name -> the names of it the code reads through these bindings (None: the module
    itself is read, so all of it counts), for every module the import statement runs; ``base``
    is the statement's resolved module (``from base import x``). A chain through a submodule
    (``pkg.helpers.f``) reads ``helpers`` of ``pkg`` and ``f`` of ``pkg.helpers``. Decided
    from files (``imports.module_file``), so the same whether or not a module is loaded."""
    from .imports import module_file

    used: dict[str, set[str] | None] = {}

    def read(module: str, name: str | None) -> None:
        names = used.setdefault(module, set())
        if names is not None and name is not None:
            names.add(name)

    def follow(module: str, chains: tuple[tuple[str, ...], ...]) -> None:
        for chain in chains:
            if not chain:
                used[module] = None
                continue
            read(module, chain[0])
            sub = f"{module}.{chain[0]}"
            if module_file(sub) is not None:
                follow(sub, (chain[1:],))

    for b in bindings:
        if b.attr is None:
            for name in b.loads:  # ``import a.b.c`` runs a, a.b and a.b.c
                read(name, None)
            follow(b.module, b.chains)
        else:
            read(base, b.attr)
            target = f"{base}.{b.attr}" if base else b.attr
            if module_file(target) is not None:
                follow(target, b.chains)
    return {k: None if v is None else frozenset(v) for k, v in used.items()}
