"""Which files and modules are the interpreter's, the installed packages', statecache's own,
or the user's (code and data). One place decides it; keys, file recording and live mode ask here.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import types
from collections.abc import Iterable
from typing import Any


def _excluded_roots() -> tuple[str, ...]:
    """Directories that hold the interpreter's and installed packages' files, never the user's."""
    roots: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            roots.add(paths[key])
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # old virtualenv's site module
        pass
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        roots.add(user_site)
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        if not prefix:
            continue
        norm = os.path.normpath(prefix)
        if norm in ("/", "/usr", "/usr/local", "/opt/homebrew"):
            # A system-wide prefix also holds user code (/usr/src/app, /usr/local/src):
            # only its interpreter directories are excluded.
            for sub in ("lib", "lib64", "Lib", "include", "bin", "share", "libexec"):
                roots.add(os.path.join(norm, sub))
        else:
            roots.add(norm)
    out: set[str] = set()
    for root in roots:
        for form in (os.path.abspath(root), os.path.realpath(root)):
            out.add(form.rstrip(os.sep) + os.sep)
    return tuple(sorted(out))


_USER_FILE_CACHE: dict[str, bool] = {}
_ROOTS: tuple[str, ...] | None = None


def is_user_file(path: str | None) -> bool:
    """True for the user's own code: not stdlib, site-/dist-packages, the interpreter's prefixes
    or pseudo-files such as ``<frozen os>``, ``<string>``, ``<stdin>``.

    IPython cells (``<ipython-input-...>``) and Jupyter cell files count as the user's.
    Results are cached per path.
    """
    if not path:
        return False
    hit = _USER_FILE_CACHE.get(path)
    if hit is None:
        hit = _USER_FILE_CACHE[path] = _is_user_file(path)
    return hit


def _is_user_file(path: str) -> bool:
    global _ROOTS
    if path.startswith("<"):
        return path.startswith("<ipython-input-")
    if _ROOTS is None:
        # statecache's own files too (an editable install lives outside site-packages): its
        # wrappers count by version, and what they wrap (the user's function) by content.
        own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        _ROOTS = (*_excluded_roots(), own + os.sep, os.path.realpath(own) + os.sep)
    for form in {os.path.abspath(path), os.path.realpath(path)}:
        parts = form.split(os.sep)
        if "site-packages" in parts or "dist-packages" in parts:
            return False
        if any(form.startswith(root) for root in _ROOTS):
            return False
    return True


def _stdlib_names() -> frozenset[str]:
    names = set(sys.builtin_module_names)
    names.update(getattr(sys, "stdlib_module_names", ()))
    return frozenset(names)


STDLIB_NAMES = _stdlib_names()


def is_user_module_name(name: str) -> bool:
    module = sys.modules.get(name)
    if module is None:
        # Unknown module (a dynamically made class or function): count by content.
        return name not in STDLIB_NAMES
    return is_user_module(module)


_USER_MODULES: dict[str, bool] = {}


def is_user_module(module: Any) -> bool:
    if not isinstance(module, types.ModuleType):
        return False
    name = module.__name__
    hit = _USER_MODULES.get(name) if sys.modules.get(name) is module else None
    if hit is None:
        hit = _module_is_user(module)
        if sys.modules.get(name) is module:
            _USER_MODULES[name] = hit
    return hit


def _module_is_user(module: types.ModuleType) -> bool:
    name = module.__name__
    if name in sys.builtin_module_names:
        return False
    path = getattr(module, "__file__", None)
    if path:
        return is_user_file(path)
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if origin in ("built-in", "frozen"):
        return False
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    if locations:  # namespace package
        return is_user_file(locations[0])
    # No file: __main__ of a REPL, IPython or ``python -c``, or a module made at runtime.
    return name.partition(".")[0] not in STDLIB_NAMES or name == "__main__"


def _system_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            roots.add(sysconfig.get_paths()[key])
        except KeyError:
            pass
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # virtualenv's old site module
        pass
    roots.update(("/proc", "/sys", "/dev", "/run"))
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


_SYSTEM_ROOTS: tuple[str, ...] | None = None


def is_data_path(path: str, cache_dirs: Iterable[str] = ()) -> bool:
    """False for the interpreter's and installed packages' own files, bytecode and the cache."""
    global _SYSTEM_ROOTS
    if _SYSTEM_ROOTS is None:
        _SYSTEM_ROOTS = _system_roots()
    if path.endswith((".pyc", ".pyo")) or f"{os.sep}__pycache__{os.sep}" in path:
        return False
    real = os.path.join(os.path.realpath(path), "")
    if real.startswith(_SYSTEM_ROOTS):
        return False
    for cache_dir in cache_dirs:
        if real.startswith(os.path.join(os.path.realpath(cache_dir), "")):
            return False
    return True
