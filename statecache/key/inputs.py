"""The inputs of a block of code: the names it reads, and what it reads that no name shows.

``Reads`` is what the code's AST says it reads and binds; ``input_values`` turns it into the
values the key covers, given a way to look names up (a frame, a function's globals, an
IPython namespace). The implicit inputs are the same for every front end:

- attributes of the user's modules, by current value, along the whole chain while it stays
  in the user's modules (``helpers.SCALE`` may have been set at run time);
- plain data read through installed modules (``sys.argv``, ``np.pi``, through their namespaces
  too: ``pd.options.mode.copy_on_write``, ``torch.backends.cudnn.benchmark``): the module itself
  counts by version only, so its data must count by value (``walk.library_attribute``);
- environment variables read with a constant key (``os.environ["N"]``, ``os.getenv("N")``,
  ``"N" in os.environ``, ``os.environ.setdefault("N", ...)``), and the whole environment (minus
  ``process.VOLATILE_ENVIRON``) when the code uses ``os.environ`` otherwise (``dict(os.environ)``,
  a loop); the user's helpers that the code calls count the same reads (``key.codegraph``);
- the command line arguments ``sys.argv[1:]``, always: argparse, click and the like read them
  inside installed code, where no scan of the body sees it, and a run with other arguments is
  another run (``ignore=["sys.argv[1:]"]`` leaves them out); under IPython only once ``%run
  script.py ARGS`` set them (a kernel's own launch line is new at every start);
- the working directory, when the code can make a result depend on it (``os.getcwd()``,
  ``Path.cwd()``, ``.resolve()``, ``.absolute()``, ``os.path.abspath``/``realpath``);
- the modules the code imports, by their source;
- the settings registry of a library the code uses (``pd.set_option``, ``np.set_printoptions``,
  ``np.seterr``, ``sklearn.set_config``, ``torch.set_default_dtype``: ``key.libsettings``).
"""

from __future__ import annotations

import ast
import os
import sys
import types
from collections.abc import Callable, Iterable
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


class _Missing:
    """Stands for a name or attribute that does not exist (yet)."""

    def __repr__(self) -> str:
        return "<missing>"


#: The libraries whose global settings registry counts for code that uses them; how each is
#: read is ``key.libsettings``'s (imported only once one of them is loaded).
SETTINGS_LIBRARIES = ("pandas", "numpy", "sklearn", "torch", "polars", "decimal")

#: What a lookup returns for a name or attribute that is not bound.
MISSING: Any = _Missing()

Lookup = Callable[[str], "Any"]  # name -> its value, or MISSING


class Reads:
    """What a body of code binds and reads, from its AST (see ``key.source``). A plain class
    with a NamedTuple's ``_replace``: building a NamedTuple class costs the first hit of a
    process about 1 M instructions."""

    __slots__ = ("assigned", "attribute_reads", "bare", "environ_keys", "imports", "inputs", "process", "seeded")

    def __init__(
        self,
        assigned: tuple[str, ...],  # names it binds, in source order
        inputs: tuple[str, ...],  # names it reads before surely binding them
        attribute_reads: tuple[tuple[str, ...], ...],  # ``name.attr[.attr]`` chains, prefixes too
        environ_keys: tuple[str, ...],  # constant keys of os.environ[...] / getenv(...)
        imports: tuple[tuple[str, int, tuple[str, ...]], ...],  # (module, level, names)
        process: tuple[str, ...] = (),  # process state read: "argv", "cwd", "environ" (see below)
        seeded: tuple[str, ...] = (),  # global generators the code seeds before any draw (see below)
        bare: tuple[str, ...] | None = None,  # names read other than as a chain's root (None: unknown)
    ) -> None:
        self.assigned, self.inputs, self.attribute_reads = assigned, inputs, attribute_reads
        self.environ_keys, self.imports, self.process, self.seeded, self.bare = environ_keys, imports, process, seeded, bare

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _READS_FIELDS}

    def _replace(self, **changes: Any) -> Reads:
        """A copy with some fields changed, as ``NamedTuple._replace``."""
        return Reads(**{**self._asdict(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reads) and self._asdict() == other._asdict()

    def __hash__(self) -> int:
        return hash(tuple(self._asdict().values()))

    def __repr__(self) -> str:
        return "Reads(" + ", ".join(f"{n}={v!r}" for n, v in self._asdict().items()) + ")"


_READS_FIELDS = ("assigned", "inputs", "attribute_reads", "environ_keys", "imports", "process", "seeded", "bare")


def reads_of(body: list[ast.stmt]) -> Reads:
    """The reads of a list of statements (a cell, a function body)."""
    from .source import analyse_names, implicit_reads, imports_in

    assigned, inputs = analyse_names(body)
    chains, environ = implicit_reads(body)
    return with_process_reads(Reads(tuple(assigned), tuple(inputs), chains, environ, imports_in(body)), body)


def with_process_reads(reads: Reads, body: list[ast.stmt]) -> Reads:
    """``reads`` with the process state the code reads (``key.process.scan``): environment
    variables read by ``in``, ``setdefault`` or ``pop``, the whole environment, the working
    directory, and always ``sys.argv[1:]`` (left out under IPython while it is the shell's own
    launch line: see ``implicit_values``)."""
    from .process import scan
    from .source import bare_names

    keys, kinds = scan(body)
    return reads._replace(
        environ_keys=tuple(dict.fromkeys((*reads.environ_keys, *keys))),
        process=tuple(sorted({"argv", *kinds})), seeded=seeded_first(body), bare=bare_names(body),
    )


# Seed calls of the global generators of ``key.rng``, as attribute chains.
_SEED_CALLS = {
    ("random", "seed"): "random",
    ("np", "random", "seed"): "numpy",
    ("numpy", "random", "seed"): "numpy",
    ("torch", "manual_seed"): "torch",
    ("torch", "random", "manual_seed"): "torch",
    ("pl", "set_random_seed"): "polars",
    ("polars", "set_random_seed"): "polars",
}


def seeded_first(body: list[ast.stmt]) -> tuple[str, ...]:
    """The global generators (``key.rng`` names) that the code surely seeds before anything
    can draw from them: seed calls with a fixed seed among the body's leading statements, which
    call nothing else (imports and call-free assignments may come between). The state such a
    generator had before the code does not matter, so it must not be checked on a hit (a block
    seeding its own generators would never hit)."""
    from .source import attribute_chain

    seeded: list[str] = []
    for stmt in body:
        call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
        if call is not None and isinstance(call.func, ast.Attribute):
            name = _SEED_CALLS.get(attribute_chain(call.func) or ())
            args = [*call.args, *(k.value for k in call.keywords)]
            fixed = len(args) == 1 and not (isinstance(args[0], ast.Constant) and args[0].value is None)
            if name is not None and fixed and not any(isinstance(n, ast.Call) for n in ast.walk(args[0])):
                if name not in seeded:
                    seeded.append(name)
                continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        if any(isinstance(node, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom)) for node in ast.walk(stmt)):
            break
    return tuple(seeded)


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


#: How a label names a module that no name of the namespace holds: ``sys.modules['pkg.m'].X``.
_MODULE_REF = "sys.modules["


def module_label(module_name: str) -> str:
    """The label of a module by its name in ``sys.modules`` (``resolve`` reads it back)."""
    return f"{_MODULE_REF}{module_name!r}]"


def resolve(lookup: Lookup, label: str) -> Any:
    """The current value of ``name.attr.attr`` (``MISSING`` if any part of it is); the label
    may start with a module named by ``module_label``."""
    import sys

    if label.startswith(_MODULE_REF) and "']" in label:
        head, _, rest = label.partition("']")
        value = sys.modules.get(head[len(_MODULE_REF) + 1:], MISSING)
        attrs = [a for a in rest.split(".") if a]
    else:
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
    _modules_read_through_chains(reads, values)
    return values, chains


def _modules_read_through_chains(reads: Reads, values: dict[str, Any]) -> None:
    """A user module the code reads only as ``helpers.f`` / ``helpers.SCALE`` counts by those
    attributes (implicit inputs, by value) and by its top level, not by its whole file: an edit
    of a function it never reaches keeps the hit. ``g(helpers)`` or ``getattr(helpers, n)``
    (a bare read) still counts the whole module. Its attributes count by their loaded values,
    so a module edited after loading is keyed by what ran where the code reads it."""
    if reads.bare is None:
        return
    for name in reads.inputs:
        module = values.get(name)
        if name in reads.bare or not isinstance(module, types.ModuleType):
            continue
        from .imports import module_top_digest  # only for a module read: not on a small hit
        from .provenance import is_user_module

        if not is_user_module(module):
            continue
        top = module_top_digest(module)
        if top is not None:
            values[name] = top.hex()


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
    from .codegraph import CodeGraph
    from .process import argv_is_launch_line, environ_label, in_ipython, process_value
    from .provenance import is_user_module
    from .values import Fingerprinter
    from .walk import library_attribute

    graph = CodeGraph()
    counted = graph.is_counted_in_library
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
            code = graph.registered_code(module, chain[1]) if module is not MISSING else None
            if code is not None and f"{name}.{chain[1]}" not in ignored:
                extra[f"{name}.{chain[1]}"] = code  # df.geo: the user's accessor class
            continue
        if is_user_module(module):
            _user_module_chain(chain, module, ignored, extra, chains)
            continue
        found = None if chain[:2] == ("os", "environ") else library_attribute(module, chain[1:], counted)
        if found is not None:
            label = ".".join(chain[: found[0] + 1])  # sys.argv, pd.options.mode.copy_on_write
            if label not in ignored:
                extra[label] = found[1]
    for key in reads.environ_keys:
        label = environ_label(key)
        if label not in ignored:
            extra[label] = os.environ.get(key)
    for what in reads.process:
        if what == "argv" and in_ipython() and argv_is_launch_line():
            continue  # a kernel's own launch line, new at every start
        label, value = process_value(what)
        if label not in ignored:
            extra[label] = value
    if any(name in sys.modules for name in SETTINGS_LIBRARIES):
        # settings a library keeps in one registry and reads inside itself (pd.set_option)
        from .libsettings import library_settings

        for label, settings in library_settings(values.values(), (m for m, _, _ in reads.imports)).items():
            if label not in ignored:
                extra[label] = settings
    helper_globals(reads, {**values, **extra}, lookup, ignored, extra, chains)
    if reads.imports:
        fp = Fingerprinter()
        for modname, level, names in reads.imports:
            label = f"import {'.' * level}{modname}" + (f" ({', '.join(names)})" if names else "")
            if label not in ignored:
                extra[label] = fp.import_digest(modname, level, names, package)
    return extra


def helper_globals(
    reads: Reads, values: dict[str, Any], lookup: Lookup, ignored: set[str], extra: dict[str, Any], chains: set[str]
) -> None:
    """Globals that the user's functions the code reaches assign with ``global`` (``build()``
    setting ``VOCAB``): they are state the code produces, so each counts as an attribute the
    code may set (in ``chains``: saved when the run changed it, set again on a hit), by its
    value before the code runs, labelled by ``global_label``."""
    roots = [v for v in values.values() if callable(v) or isinstance(v, type)]
    if not roots:
        return
    from .helpercode import globals_stored_by_helpers

    modules = namespace_modules(values)
    for glb, name in globals_stored_by_helpers(roots):
        if name in reads.assigned:
            continue
        value = glb.get(name, MISSING)
        label = global_label(glb, name, lookup, modules)
        if label not in ignored and name not in ignored:
            extra[label] = value
            chains.add(label)


def namespace_modules(values: dict[str, Any]) -> dict[int, str]:
    """id of a module's globals -> the name under which ``values`` holds the module."""
    return {id(vars(v)): k for k, v in values.items() if isinstance(v, ModuleType)}


def global_label(glb: dict[str, Any], name: str, lookup: Lookup, modules: dict[int, str]) -> str:
    """How the code's namespace names the global ``name`` of the module whose globals are
    ``glb``: the name itself in the code's own globals (when nothing local hides it),
    ``helpers.STATE`` through a module the namespace holds (``modules``, from
    ``namespace_modules``), else by the module's name (``module_label``). ``resolve`` reads
    each label back."""
    if glb.get("__name__") == lookup("__name__") and lookup(name) is glb.get(name, MISSING):
        return name
    if id(glb) in modules:
        return f"{modules[id(glb)]}.{name}"
    return f"{module_label(str(glb.get('__name__')))}.{name}"


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
