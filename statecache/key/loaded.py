"""What a user module's loaded code and data are, against its file now: the text it loaded
from (``loaded_other_text``), the functions and top-level literals that no longer match the
file (``edited_after_loading``). A key taken from the file's text mixes these in, so that a file
saved while the script runs never keys what the old text computed.
"""

from __future__ import annotations

import ast
import os
import struct
import time
import types
from collections.abc import Callable

import xxhash

from .code import bytecode_digest, code_digest
from .hashing import encode_str
from .importwatch import LoadedSource, loaded_source
from .parsing import current_lines, parse_lines
from .stamps import stat_stamp

#: A deterministic digest of any value (the value walker's), or None when it cannot give one.
ValueDigest = Callable[[object], "bytes | None"]


def edited_after_loading(
    module: types.ModuleType, value_digest: ValueDigest | None = None, names: frozenset[str] | None = None
) -> bytes:
    """``b""`` when every function and method that ``module`` defined from its file still
    matches the file's text; else ``b"ran"`` + the bytecode digests of those that do not (the
    file was edited after the module was loaded), so that a key taken from the file's new text
    differs from the key of the run that loads that text. ``value_digest`` keys loaded data
    that has no stable repr (see ``_stale_data``). ``names``: only the module's globals of
    these names count (those the code that runs can read), else all."""
    path = getattr(module, "__file__", None)
    stale: list[tuple[str, bytes]] = []
    for key, value in list(vars(module).items()):
        if names is not None and key not in names:
            continue
        for fn in _defined_functions(value, module.__name__):
            co = fn.__code__
            if co.co_filename == path and not code_digest(co).startswith(b"src"):
                stale.append((fn.__qualname__, bytecode_digest(co)))
    if isinstance(path, str):
        stale += _stale_data(module, path, value_digest, names)
    if not stale:
        return loaded_other_text(module)
    h = xxhash.xxh3_128()
    for qualname, digest in sorted(stale):
        h.update(encode_str(qualname) + digest)
    return b"ran" + h.digest() + loaded_other_text(module)


def loaded_other_text(module: types.ModuleType) -> bytes:
    """``b""`` unless the module's file is no longer the text it was loaded from; then
    ``b"loaded"`` + the stamp of that text. A key taken from the file's text mixes this in:
    what running the top level did (``sys.setrecursionlimit(5000)``, registrations) shows in
    no function or value, and the new text must not key it.

    For a module loaded after ``import statecache``, the import watch kept what loaded: the
    text Python compiled (compared byte for byte), or the stat a valid ``.pyc`` was checked
    against. For one loaded before, the stamp (mtime, size, or hash) that import left in the
    ``.pyc``, which another run may have rewritten since and which is missing without
    bytecode files (PYTHONDONTWRITEBYTECODE): then an edit is not seen."""
    path = getattr(module, "__file__", None)
    if not (isinstance(path, str) and path.endswith(".py")):
        return b""
    loaded = loaded_source(module)
    if loaded is not None and loaded.path == path:
        return _other_than_loaded(loaded)
    cached = getattr(module, "__cached__", None)
    if not isinstance(cached, str):
        return b""
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
        st = os.stat(path)
    except OSError:
        return b""
    if len(header) < 16:
        return b""
    flags = int.from_bytes(header[4:8], "little")
    if flags & 1:  # a hash-based pyc: the source's hash
        import importlib.util

        try:
            with open(path, "rb") as f:
                same = importlib.util.source_hash(f.read()) == header[8:16]
        except OSError:
            return b""
    else:
        same = header[8:16] == _pyc_stamp(int(st.st_mtime), st.st_size)
    return b"" if same else b"loaded" + header[8:16]


def _pyc_stamp(mtime: int, size: int) -> bytes:
    return struct.pack("<II", mtime & 0xFFFFFFFF, size & 0xFFFFFFFF)


_COMPARED: dict[str, tuple[LoadedSource, tuple[int, ...], bytes]] = {}


def _other_than_loaded(loaded: LoadedSource) -> bytes:
    """``loaded_other_text`` from the import watch's record; the comparison is cached while
    the file's stat (size, mtime, ctime, inode) is unchanged."""
    try:
        st = os.stat(loaded.path)
    except OSError:
        st = None
    stamp = stat_stamp(st) if st is not None else ()
    hit = _COMPARED.get(loaded.path)
    if hit is not None and hit[0] is loaded and hit[1] == stamp:
        return hit[2]
    if loaded.text is None:  # a .pyc ran: what Python checked it against is all that is known
        same = st is not None and (int(st.st_mtime), st.st_size) == (loaded.mtime, loaded.size)
        marker = _pyc_stamp(loaded.mtime, loaded.size)
    else:
        try:
            with open(loaded.path, "rb") as f:
                same = f.read() == loaded.text
        except OSError:
            same = False
        marker = xxhash.xxh3_128_digest(loaded.text)
    result = b"" if same else b"loaded" + marker
    _COMPARED[loaded.path] = (loaded, stamp, result)
    return result


_PLAIN = (int, float, complex, str, bytes, bool, type(None))


def _plain_repr(value: object, depth: int = 0) -> str | None:
    """A repr that is the same in every process (no sets, no objects), or None."""
    if isinstance(value, _PLAIN):
        return f"{type(value).__name__}:{value!r}"
    if depth < 4 and isinstance(value, (list, tuple)):
        parts = [_plain_repr(v, depth + 1) for v in value]
        return None if None in parts else f"{type(value).__name__}[{','.join(parts)}]"  # type: ignore[arg-type]
    if depth < 4 and isinstance(value, dict):
        items = [(_plain_repr(k, depth + 1), _plain_repr(v, depth + 1)) for k, v in value.items()]
        if any(k is None or v is None for k, v in items):
            return None
        return "dict{" + ",".join(f"{k}={v}" for k, v in items) + "}"
    if depth < 4 and isinstance(value, (set, frozenset)):
        members = [_plain_repr(v, depth + 1) for v in value]
        return None if None in members else f"{type(value).__name__}{{{','.join(sorted(members))}}}"  # type: ignore[arg-type]
    return None


def _stale_data(
    module: types.ModuleType, path: str, value_digest: ValueDigest | None = None, names: frozenset[str] | None = None
) -> list[tuple[str, bytes]]:
    """Top-level ``NAME = <literal>`` assignments of the file's current text whose value in the
    loaded module differs: the file was edited after loading (or the value set at run time:
    ``CONFIG["opt"] = Opt()`` above the block), so the text alone must not key what the loaded
    value computes. The loaded value counts by a stable repr, else by ``value_digest`` (the
    same value in every run keys the same: no miss on every run); when neither can give one,
    the marker is unique to this process, so nothing saved from it is ever reused (a miss,
    never a stale hit)."""
    try:
        tree = parse_lines(path, current_lines(path))
    except (SyntaxError, ValueError):
        return []
    stale: list[tuple[str, bytes]] = []
    for name, value_node in _literal_assignments(tree):
        if names is not None and name not in names:
            continue
        try:
            literal = ast.literal_eval(value_node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        loaded = vars(module).get(name, _MISSING_VALUE)
        if loaded is not _MISSING_VALUE and _same_value(loaded, literal):
            continue
        shown = _plain_repr(loaded) if loaded is not _MISSING_VALUE else "<unset>"
        if shown is None and value_digest is not None:
            by_value = value_digest(loaded)
            shown = None if by_value is None else "value:" + by_value.hex()
        if shown is None:
            shown = f"<unreproducible {os.getpid()} {time.time_ns()}>"
        stale.append((f"data {name}", encode_str(shown)))
    return stale


def _literal_assignments(tree: ast.Module) -> list[tuple[str, ast.expr]]:
    out: list[tuple[str, ast.expr]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out.append((node.targets[0].id, node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out.append((node.target.id, node.value))
    return out


def _same_value(loaded: object, literal: object) -> bool:
    try:
        return type(loaded) is type(literal) and bool(loaded == literal)
    except Exception:  # an object whose == raises or is not a truth value: not the literal
        return False


_MISSING_VALUE = object()


def _defined_functions(value: object, module_name: str) -> list[types.FunctionType]:
    if not isinstance(value, (types.FunctionType, type)) or value.__module__ != module_name:
        return []
    if isinstance(value, types.FunctionType):
        return [value]
    if isinstance(value, type):
        members = [getattr(m, "__func__", m) for m in vars(value).values()]
        return [m for m in members if isinstance(m, types.FunctionType)]
    return []
