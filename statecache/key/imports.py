"""Modules an import statement brings in, found from files without importing anything, and
the digest of what they are: the user's modules by their normalised source (with the modules
those import, transitively), installed ones by distribution version, the stdlib by name.

Used for imports inside functions and checkpoint bodies: a run whose checkpoint hit (and so
never ran the import) must key the same as the run that imported.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import types
from typing import Any

import xxhash

from .astdigest import ast_digest
from .hashing import encode_str, file_digest
from .loaded import ValueDigest, edited_after_loading, loaded_other_text
from .provenance import STDLIB_NAMES, is_user_file
from .stamps import stat_stamp
from .versions import installed_version, top_spec

_Imports = tuple[tuple[str, int, tuple[str, ...]], ...]
_SOURCES: dict[str, tuple[tuple[int, ...], bytes, _Imports]] = {}


def source_info(path: str) -> tuple[bytes, _Imports]:
    """ast_digest of a Python source file and its import statements (module, level, names).

    Cached per path while its stat is unchanged; the raw file digest if it does not parse.
    """
    try:
        st = os.stat(path)
    except OSError:
        return b"missing:" + encode_str(path), ()
    stamp = stat_stamp(st)
    hit = _SOURCES.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    imports: list[tuple[str, int, tuple[str, ...]]] = []
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
        result = b"ast" + ast_digest(tree)
        _CODE_READS[(path, None)] = (stamp, _reads_of(tree.body, None))  # one parse for both
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.extend((alias.name, 0, ()) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names if alias.name != "*")
                imports.append((node.module or "", node.level, names))
    except (OSError, SyntaxError, ValueError):
        try:
            result = b"raw" + bytes.fromhex(file_digest(path))
        except OSError:
            result = b"unreadable:" + encode_str(path)
    _SOURCES[path] = (stamp, result, tuple(imports))
    return result, tuple(imports)


def source_digest(path: str) -> bytes:
    return source_info(path)[0]


_TOPS: dict[str, tuple[tuple[int, ...], bytes]] = {}


def top_level_digest(path: str) -> bytes:
    """ast_digest of a module's top level without its docstring and its functions' bodies
    (signatures, decorators and class headers stay): what importing it does, for code that
    reads some of its attributes (``helpers.f``), which count by value on their own. Cached
    per path while its stat is unchanged; the whole source's digest if it does not parse."""
    try:
        st = os.stat(path)
    except OSError:
        return b"missing:" + encode_str(path)
    stamp = stat_stamp(st)
    hit = _TOPS.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return source_digest(path)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring: observable as ``__doc__`` only, which counts by value
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.body = [ast.Pass()]
    result = b"top" + ast_digest(body)
    _TOPS[path] = (stamp, result)
    return result


#: names whose use reads a module's globals by a computed name: all of its code counts
_DYNAMIC = frozenset({"globals", "vars", "locals", "eval", "exec"})
_USED: dict[tuple[str, frozenset[str]], tuple[tuple[int, ...], bytes, frozenset[str]]] = {}


def used_source_digest(path: str, names: frozenset[str]) -> tuple[bytes, frozenset[str] | None]:
    """ast_digest of what of a module's file can run for code that reads only ``names`` of
    it (``def run(): import helpers; return helpers.f()`` reads ``f``): every top-level
    statement but the docstring, with the bodies of the top-level functions that neither
    ``names`` nor that code reaches (by the names it loads, transitively) left out; with the
    names reached, whose loaded values count. Found from the file alone, so the same whether
    or not the module is loaded. The whole source (and None) when the reached code reads
    globals by a computed name (``globals()``), or the file does not parse."""
    try:
        st = os.stat(path)
    except OSError:
        return source_digest(path), None
    stamp = stat_stamp(st)
    hit = _USED.get((path, names))
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return source_digest(path), None
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring: observable as ``__doc__`` only
    functions = _functions(body)
    reached = set(names)
    for part in _import_time_parts(body, functions):
        reached.update(_loaded_names(part))
    done = _reach(functions, reached)
    if reached & _DYNAMIC:
        return source_digest(path), None
    kept = [
        _stub(s) if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and functions[s.name] is s
        and s.name not in done else s
        for s in body
    ]
    result, found = b"use" + ast_digest(kept), frozenset(reached)
    _USED[(path, names)] = (stamp, result, found)
    return result, found


def _functions(body: list[ast.stmt]) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module's top-level functions by name (the last ``def`` of a name wins, as it does
    when the module runs)."""
    return {s.name: s for s in body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _import_time_parts(body: list[ast.stmt], functions: dict[str, Any], methods: bool = True) -> list[ast.AST]:
    """What of a module's top level runs when it is imported: every statement, but of a
    top-level function only its decorators, signature and return annotation; with
    ``methods`` False, of a class's methods too (the class's own statements run)."""
    parts: list[ast.AST] = []
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                functions.get(stmt.name) is stmt or functions is _IN_CLASS):
            parts += [*stmt.decorator_list, stmt.args, *([stmt.returns] if stmt.returns else [])]
        elif isinstance(stmt, ast.ClassDef) and not methods:
            parts += [*stmt.decorator_list, *stmt.bases, *stmt.keywords]
            parts += _import_time_parts(stmt.body, _IN_CLASS, methods)
        else:
            parts.append(stmt)
    return parts


_IN_CLASS: dict[str, Any] = {}  # ``functions`` for a class body: each ``def`` there is a method


def _reach(functions: dict[str, Any], reached: set[str]) -> set[str]:
    """The top-level functions that code loading ``reached`` can run, transitively through
    the names their bodies load (added to ``reached``)."""
    queue = [n for n in reached if n in functions]
    done: set[str] = set()
    while queue:
        name = queue.pop()
        if name in done:
            continue
        done.add(name)
        for loaded in _loaded_names(functions[name]):
            reached.add(loaded)
            if loaded in functions and loaded not in done:
                queue.append(loaded)
    return done


#: what part of a module runs: None for its import, a set of its top-level functions, or
#: ``WHOLE`` for every function (the module is used as a namespace: ``config.get("S")``)
WHOLE = frozenset({"*"})
_Taken = tuple[tuple[str, int, "str | None"], ...]
_CodeReads = tuple[tuple[str, ...], tuple[str, ...], _Taken]
_CODE_READS: dict[tuple[str, frozenset[str] | None], tuple[tuple[int, ...], _CodeReads]] = {}


def code_reads(path: str, names: frozenset[str] | None = None) -> _CodeReads:
    """What running part of a user module's file reads of the process (``process.scan``:
    environment variables, the whole environment, the working directory), and the names of
    other modules that code uses, (module, level, name or None for the module itself), from
    the imports that bind them. The part: the import (``names`` None: the top level and the
    top-level functions it reaches by name, ``SCALE = _scale()``), or the top-level functions
    ``names`` and those they reach (``WHOLE``: all of them). Cached per path while its stat is
    unchanged; nothing when the file does not parse (it counts by its raw digest then)."""
    try:
        stamp = stat_stamp(os.stat(path))
    except OSError:
        return (), (), ()
    hit = _CODE_READS.get((path, names))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        with open(path, "rb") as f:
            body = ast.parse(f.read(), filename=path).body
    except (OSError, SyntaxError, ValueError):
        return (), (), ()
    found = _reads_of(body, names)
    _CODE_READS[(path, names)] = (stamp, found)
    return found


def _reads_of(body: list[ast.stmt], names: frozenset[str] | None) -> _CodeReads:
    """``code_reads`` of a parsed module."""
    from .process import scan

    functions = _functions(body)
    parts: list[ast.AST] = _import_time_parts(body, functions, methods=False) if names is None else []
    reached = set(functions) if names == WHOLE else set(names or ())
    for part in parts:
        reached.update(_loaded_names(part))
    classes = {s.name: s for s in body if isinstance(s, ast.ClassDef)}
    ran: list[ast.AST] = []
    done: set[str] = set()
    while True:  # the functions and classes (all their methods) that the running code uses
        found = _reach(functions, reached) - done
        ran += [functions[n] for n in sorted(found)]
        done |= found
        more = [classes.pop(n) for n in sorted(reached) if n in classes]
        for cls in more:
            reached.update(_loaded_names(cls))
        ran += more
        if not more:
            break
    keys, kinds = scan([*parts, *ran])
    top = [stmt for stmt in body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return keys, kinds, _taken([*top, *ran], reached)


def _taken(nodes: list[ast.AST], loaded: set[str]) -> _Taken:
    """The names of other modules, bound by the imports among ``nodes`` (the module's top
    level and the functions that run), that code loading ``loaded`` uses."""
    taken: dict[tuple[str, int, str | None], None] = {}
    for stmt in nodes:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (alias.asname or alias.name.partition(".")[0]) in loaded:
                        taken[(alias.name, 0, None)] = None
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*" or (alias.asname or alias.name) in loaded:
                        taken[(node.module or "", node.level, None if alias.name == "*" else alias.name)] = None
    return tuple(taken)


def import_time_reads(name: str, files: dict[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What importing the user module ``name`` (its file in ``files``, with the user's modules
    its import can reach) reads of the process: ``code_reads`` of its import, and of the code
    of the user's modules in ``files`` that it uses (``from config import env_int`` and
    ``BATCH = env_int("BATCH")`` there read what ``env_int`` reads). A module that the block
    imports first runs this in the block, where no scan of the block sees it."""
    keys: dict[str, None] = {}
    kinds: set[str] = set()
    queue: list[tuple[str, frozenset[str] | None]] = [(name, None)]
    seen: set[tuple[str, frozenset[str] | None]] = set()
    while queue:
        module, names = queue.pop()
        if (module, names) in seen:
            continue
        seen.add((module, names))
        path = files[module]
        found_keys, found_kinds, taken = code_reads(path, names)
        keys.update(dict.fromkeys(found_keys))
        kinds.update(found_kinds)
        is_package = os.path.basename(path) == "__init__.py"
        for other, level, attr in taken:
            target = resolve_import(other, level, module, is_package)
            sub = f"{target}.{attr}" if target and attr else None
            if sub in files:
                queue.append((str(sub), WHOLE))  # ``from pkg import config``: a module used
            elif target in files:
                queue.append((str(target), WHOLE if attr is None else frozenset({attr})))
    return tuple(keys), tuple(sorted(kinds))


def import_time_state(name: str, files: dict[str, str]) -> bytes:
    """``b""``, or the current values of what importing the module reads of the process
    (``import_time_reads``): the same values whether or not it is loaded, since a hit does
    not import it and a computing run imports it now."""
    keys, kinds = import_time_reads(name, files)
    if not keys and not kinds:
        return b""
    import json

    from .process import current_values

    return b"proc" + encode_str(json.dumps(current_values(keys, kinds), sort_keys=True, default=repr))


def _loaded_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _stub(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.stmt:
    """The function's signature and decorators, without its body (a copy: the tree is cached)."""
    import copy

    stub = copy.copy(node)
    stub.body = [ast.Pass()]
    return stub


def module_top_digest(module: types.ModuleType) -> bytes | None:
    """``top_level_digest`` of a loaded user module's file, with ``loaded_other_text`` (the file
    saved after the module was loaded); None when the module has no ``.py`` file."""
    path = getattr(module, "__file__", None)
    if not (isinstance(path, str) and path.endswith(".py")):
        return None
    return top_level_digest(path) + loaded_other_text(module)


def module_file(name: str) -> str | None:
    """The file a module name would be imported from, found without importing anything.

    The top-level package through the import system's finders; submodules of the user's
    packages by looking into the package directories (finding them through the import system
    would execute the package's ``__init__``).
    """
    top, *rest = name.split(".")
    spec = top_spec(top) if top else None
    if spec is None:
        return None
    path = spec.origin if spec.origin not in (None, "built-in", "frozen", "namespace") else None
    locations = list(spec.submodule_search_locations or [])
    for part in rest:
        found = None
        for loc in locations:
            for candidate in (
                os.path.join(loc, part, "__init__.py"),
                os.path.join(loc, part + ".py"),
            ):
                if os.path.isfile(candidate):
                    found = candidate
                    break
            if found is None and os.path.isdir(os.path.join(loc, part)):
                found = ""  # a namespace package
            if found is not None:
                break
        if found is None:
            return None  # an attribute, not a module
        path = found or None
        locations = (
            [os.path.dirname(found)]
            if found.endswith("__init__.py")
            else ([os.path.join(loc, part) for loc in locations] if found == "" else [])
        )
    return path


def _settings_state(tops: set[str], memo: dict[Any, bytes]) -> bytes:
    """``b""``, or the settings that the registries of these installed or stdlib packages
    (``key.libsettings``) hold other than their defaults: code that imports pandas, even
    inside a helper, reads its options. Memoised in ``memo`` (one key computation)."""
    if not any(top in sys.modules for top in tops):
        return b""  # a library not loaded has its defaults
    from .libsettings import REGISTRIES, settings_of

    wanted = frozenset(top for top in tops if top in REGISTRIES and top in sys.modules)
    if not wanted:
        return b""
    hit = memo.get(("settings", wanted))
    if hit is None:
        import json

        found = settings_of(wanted)
        hit = b"settings" + encode_str(json.dumps(found, sort_keys=True, default=repr)) if found else b""
        memo[("settings", wanted)] = hit
    return hit


def resolve_import(module: str, level: int, importer: str, is_package: bool) -> str | None:
    if not level:
        return module
    package = importer if is_package else importer.rpartition(".")[0]
    try:
        return importlib.util.resolve_name("." * level + module, package)
    except (ImportError, ValueError):
        return None


def imports_digest(
    roots: tuple[str, ...],
    memo: dict[Any, bytes],
    value_digest: ValueDigest | None = None,
    used: dict[str, frozenset[str] | None] | None = None,
) -> bytes:
    """The modules ``roots`` name (an import statement's targets), with what they import,
    transitively: the user's by their sources, installed ones by distribution version, the
    stdlib by name. Found from files, never by importing; memoised in ``memo``.
    ``value_digest`` keys loaded data that differs from the text (``loaded.edited_after_loading``).
    ``used``: of a root module that the importing code reads only some names of (and no
    module of the closure imports), those names (``used_source_digest``); None for all."""
    used = {k: v for k, v in (used or {}).items() if v is not None}
    memo_key = (roots, tuple(sorted(used.items())))
    hit = memo.get(memo_key)
    if hit is not None:
        return hit
    records: dict[str, bytes] = {}
    files: dict[str, str] = {}
    imported: set[str] = set()  # modules that some module of the closure imports
    queue = list(roots)
    while queue:
        name = queue.pop()
        if not name or name in records or name in files:
            continue
        top = name.partition(".")[0]
        if top in STDLIB_NAMES:
            records[name] = b"std"
            continue
        path = module_file(name)
        if path is None or not is_user_file(path):
            records[name] = b"ext" + encode_str(installed_version(top) if path else "")
            continue
        files[name] = path
        is_package = os.path.basename(path) == "__init__.py"
        for module, lvl, names in source_info(path)[1]:
            target = resolve_import(module, lvl, name, is_package)
            if target is None:
                continue
            subs = [f"{target}.{sub}" for sub in names]
            imported.update([target, *subs])
            queue.append(target)
            queue.extend(subs)
    for name, path in files.items():
        reads = used.get(name) if name not in imported else None
        reached: frozenset[str] | None = None
        if reads is not None:
            source, reached = used_source_digest(path, reads)
        else:
            source = source_info(path)[0]
        loaded = sys.modules.get(name)
        # the module already loaded is what the import gives the code: if its file was edited
        # since, the new text alone would key the old code's result
        stale = edited_after_loading(loaded, value_digest, reached) if isinstance(loaded, types.ModuleType) else b""
        records[name] = b"src" + source + stale + import_time_state(name, files)
    # Candidates that are attributes rather than modules ("pkg.func") resolve to no
    # file and are dropped unless they were asked for, so the set is the same each run.
    hx = xxhash.xxh3_128()
    for name in sorted(records):
        if records[name] == b"ext" + encode_str("") and name not in roots and "." in name:
            continue
        hx.update(encode_str(name) + encode_str(records[name].hex()))
    hx.update(_settings_state({name.partition(".")[0] for name in records if name not in files}, memo))
    hit = memo[memo_key] = hx.digest()
    return hit

