"""The inputs of a block of code: the names it reads, and what it reads that no name shows.

``Reads`` is what the code's AST says it reads and binds; ``input_values`` turns it into the
values the key covers, given a way to look names up (a frame, a function's globals, an
IPython namespace). The implicit inputs are the same for every front end:

- attributes of the user's modules, by current value, along the whole chain while it stays
  in the user's modules (``helpers.SCALE`` may have been set at run time);
- plain data read through installed modules (``sys.argv``, ``np.pi``): the module itself counts
  by version only, so its data must count by value;
- environment variables read with a constant key (``os.environ["N"]``, ``os.getenv("N")``);
- the modules the code imports, by their source.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, NamedTuple


class _Missing:
    """Stands for a name or attribute that does not exist (yet)."""

    def __repr__(self) -> str:
        return "<missing>"


#: What a lookup returns for a name or attribute that is not bound.
MISSING: Any = _Missing()

Lookup = Callable[[str], Any]  # name -> its value, or MISSING


class Reads(NamedTuple):
    """What a body of code binds and reads, from its AST (see ``key.source``)."""

    assigned: tuple[str, ...]  # names it binds, in source order
    inputs: tuple[str, ...]  # names it reads before surely binding them
    attribute_reads: tuple[tuple[str, ...], ...]  # ``name.attr[.attr]`` chains, prefixes too
    environ_keys: tuple[str, ...]  # constant keys of os.environ[...] / getenv(...)
    imports: tuple[tuple[str, int, tuple[str, ...]], ...]  # (module, level, names)


def reads_of(body: list[ast.stmt]) -> Reads:
    """The reads of a list of statements (a cell, a function body)."""
    from .source import analyse_names, implicit_reads, imports_in

    assigned, inputs = analyse_names(body)
    chains, environ = implicit_reads(body)
    return Reads(tuple(assigned), tuple(inputs), chains, environ, imports_in(body))


def function_node(fn: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The ``def`` of a function, from its source (None when there is none)."""
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn.__name__:
            return node
    return None


def function_reads(fn: Any) -> Reads | None:
    """The reads of a function's own body, from its source (None when there is none)."""
    node = function_node(fn)
    return reads_of(node.body) if node is not None else None


def resolve(lookup: Lookup, label: str) -> Any:
    """The current value of ``name.attr.attr`` (``MISSING`` if any part of it is)."""
    name, *attrs = label.split(".")
    value = lookup(name)
    for attr in attrs:
        if value is MISSING:
            break
        value = getattr(value, attr, MISSING)
    return value


def input_values(
    reads: Reads, lookup: Lookup, ignore: Iterable[str], package: str = ""
) -> tuple[dict[str, Any], set[str]]:
    """(label -> value of every input the key covers, the labels that are attributes of the
    user's modules). Names read before the code binds them come first, by value (a name the
    lookup does not find is a builtin, fixed by the Python version in the key, or unbound
    before the code runs); then the implicit inputs."""
    ignored = set(ignore)
    values: dict[str, Any] = {}
    for name in reads.inputs:
        if name not in ignored:
            value = lookup(name)
            if value is not MISSING:
                values[name] = value
    chains: set[str] = set()
    values.update(implicit_values(reads, values, lookup, ignored, package, chains))
    return values, chains


def implicit_values(
    reads: Reads,
    values: dict[str, Any],
    lookup: Lookup,
    ignored: set[str],
    package: str,
    chains: set[str],
) -> dict[str, Any]:
    """What the code reads that no name's value shows (see the module docstring); adds the
    labels of user-module attributes to ``chains`` (they are restored when the code sets
    them)."""
    from .fingerprint import Fingerprinter, is_plain_data
    from .provenance import is_user_module

    extra: dict[str, Any] = {}
    for chain in reads.attribute_reads:
        name = chain[0]
        if name in ignored:
            continue
        module = values.get(name, MISSING)
        if module is MISSING and name in reads.assigned:
            # ``import helpers`` above the block and again in the body: the module the body
            # rebinds the name to is (nearly always) the one bound now.
            module = lookup(name)
        if not isinstance(module, ModuleType):
            continue
        if is_user_module(module):
            _user_module_chain(chain, module, ignored, extra, chains)
            continue
        label = f"{name}.{chain[1]}"
        if len(chain) != 2 or label in ignored or chain == ("os", "environ"):
            continue
        value = getattr(module, chain[1], None)
        if is_plain_data(value):
            extra[label] = value
    for key in reads.environ_keys:
        label = f"os.environ[{key!r}]"
        if label not in ignored:
            extra[label] = os.environ.get(key)
    if reads.imports:
        fp = Fingerprinter()
        for modname, level, names in reads.imports:
            label = f"import {'.' * level}{modname}" + (f" ({', '.join(names)})" if names else "")
            if label not in ignored:
                extra[label] = fp.import_digest(modname, level, names, package)
    return extra


def _user_module_chain(
    chain: tuple[str, ...], module: ModuleType, ignored: set[str], extra: dict[str, Any], chains: set[str]
) -> None:
    """``helpers.SCALE``, ``pkg.sub.f``: each attribute along the chain by its current value,
    as long as it is one of the user's modules (beyond that, the value covers the rest)."""
    from .provenance import is_user_module

    value: Any = module
    for i in range(1, len(chain)):
        label = ".".join(chain[: i + 1])
        if label in ignored:
            return
        value = getattr(value, chain[i], MISSING)
        extra[label] = value
        chains.add(label)
        if not (isinstance(value, ModuleType) and is_user_module(value)):
            return
