"""Which files and modules are the interpreter's, the installed packages', statecache's own,
or the user's (code and data). One place decides it; keys, file recording and live mode ask here.

The decision comes from where this interpreter really keeps its files (the stdlib directories,
site-packages, the stdlib zip on ``sys.path``), never from prefixes such as ``/usr`` or
``/opt``: a project under ``/usr/src/app`` or inside a virtualenv's directory is the user's.
"""

from __future__ import annotations

import enum
import os
import site
import stat
import sys
import types
from collections.abc import Iterable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


class Kind(enum.Enum):
    """Where a file belongs."""

    PSEUDO = "pseudo"  # no file: <string>, <frozen ...>, kernel pseudo-files (/proc, /sys)
    STDLIB = "stdlib"  # the interpreter's standard library
    INSTALLED = "installed"  # site-packages, dist-packages, the user site directory
    STATECACHE = "statecache"  # this package's own files (an editable install too)
    USER = "user"  # everything else: the user's code and data


# Kernel pseudo-filesystems: their regular files change on every read (/proc/self/stat).
_PSEUDO_FS = ("/proc/", "/sys/")


def _dir_forms(paths: Iterable[str | None]) -> tuple[str, ...]:
    """Each directory as an absolute and a real path, with a trailing separator."""
    out: set[str] = set()
    for path in paths:
        if path:
            for form in (os.path.abspath(path), os.path.realpath(path)):
                out.add(os.path.join(form, ""))
    return tuple(sorted(out, key=len, reverse=True))


def _installed_dirs() -> list[str | None]:
    """site-packages directories (sysconfig's purelib and platlib are among them, or are named
    ``site-packages``/``dist-packages``, which ``_classify`` takes for installed code anyway)."""
    dirs: list[str | None] = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # old virtualenv's site module
        pass
    dirs.append(getattr(site, "getusersitepackages", lambda: None)())
    return dirs


def _stdlib_dirs() -> list[str | None]:
    """sysconfig's stdlib, platstdlib, include and platinclude paths, computed from ``sys``
    as its install schemes spell them, and the stdlib zip on ``sys.path``. Not through
    ``sysconfig.get_paths()``: its config variables cost a first hit about 6 M instructions
    (``_sysconfigdata``) and, on 3.13, ``import threading``. Without a stdlib location
    (an embedded interpreter), sysconfig decides."""
    stdlib = getattr(sys, "_stdlib_dir", None) or os.path.dirname(getattr(os, "__file__", "") or "")
    if not stdlib:
        import sysconfig

        paths = sysconfig.get_paths()
        dirs: list[str | None] = [paths.get(k) for k in ("stdlib", "platstdlib", "include", "platinclude")]
    elif os.name == "nt":
        dirs = [stdlib, os.path.join(sys.prefix, "Lib"), os.path.join(sys.base_prefix, "Include")]
    else:
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        free = "t" if "t" in sys.abiflags else ""  # a free-threaded build's lib/python3.13t
        dirs = [
            stdlib,
            os.path.join(sys.exec_prefix, sys.platlibdir, version + free),
            os.path.join(sys.base_prefix, "include", version + sys.abiflags),
            os.path.join(sys.base_exec_prefix, "include", version + sys.abiflags),
        ]
    for entry in sys.path:
        # The stdlib zip (lib/python311.zip) is a sys.path entry that is a file.
        name = os.path.basename(entry)
        if name.startswith("python") and name.endswith(".zip"):
            dirs.append(entry)
    return dirs


class _Roots:
    """The directories computed once per process (sys.path hardly changes after start)."""

    def __init__(self) -> None:
        installed = _dir_forms(_installed_dirs())
        # A site-packages directory inside the stdlib directory (a venv's lib/python3.x holds
        # one; so does a system lib/python3.x) is installed code: test the longer roots first.
        stdlib = tuple(r for r in _dir_forms(_stdlib_dirs()) if r not in installed)
        own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.ordered: list[tuple[str, Kind]] = sorted(
            [(r, Kind.INSTALLED) for r in installed]
            + [(r, Kind.STDLIB) for r in stdlib]
            + [(r, Kind.STATECACHE) for r in _dir_forms([own])],
            key=lambda rk: len(rk[0]),
            reverse=True,
        )


_roots: _Roots | None = None
_KINDS: dict[str, Kind] = {}


def classify(path: str | None) -> Kind:
    """Where the file at ``path`` belongs; cached per path.

    IPython cells (``<ipython-input-...>``) are the user's; other ``<...>`` names, an empty
    path and files of /proc and /sys are PSEUDO. A directory named ``site-packages`` or
    ``dist-packages`` anywhere in the path is INSTALLED (another interpreter's packages).
    """
    if not path:
        return Kind.PSEUDO
    hit = _KINDS.get(path)
    if hit is None:
        hit = _KINDS[path] = _classify(path)
    return hit


def _classify(path: str) -> Kind:
    global _roots
    if path.startswith("<"):
        return Kind.USER if path.startswith("<ipython-input-") else Kind.PSEUDO
    if _roots is None:
        _roots = _Roots()
    absolute, real = os.path.abspath(path), os.path.realpath(path)
    if absolute.startswith(_PSEUDO_FS) or real.startswith(_PSEUDO_FS):
        return Kind.PSEUDO
    # Where the bytes are decides: a package symlinked into site-packages (flit install
    # --symlink) is the user's tree, its code by source and its data files recorded.
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return Kind.INSTALLED
    for root, kind in _roots.ordered:
        if real.startswith(root) or real + os.sep == root:
            return kind
    return Kind.USER


def is_import_system(path: str) -> bool:
    """True for the import system's own code (importlib, importlib.metadata, zipimport):
    what it lists and reads while looking for modules or distributions is not the user's data."""
    if path.startswith(("<frozen importlib", "<frozen zipimport")):
        return True
    if classify(path) is not Kind.STDLIB:
        return False
    parts = os.path.realpath(path).split(os.sep)
    return "importlib" in parts or parts[-1] == "zipimport.py"


def is_user_file(path: str | None) -> bool:
    """True for the user's own code (IPython cells included): not the interpreter's, an
    installed package's, statecache's own file or a pseudo-file such as ``<string>``."""
    return classify(path) is Kind.USER


def is_data_path(path: str, cache_dirs: Iterable[str] = (), mode: int | None = None) -> bool:
    """True for a file (or directory) that counts as data a block read: the user's files,
    not bytecode, the cache, device files, FIFOs or sockets; a path that does not exist yet
    is data (a file that appears later is a change). ``mode``: its ``st_mode`` when the
    caller has just stat'ed it (0: it does not exist), which saves a stat."""
    if path.endswith((".pyc", ".pyo")) or f"{os.sep}__pycache__{os.sep}" in path:
        return False
    if classify(path) is not Kind.USER:
        return False
    cache_dirs = list(cache_dirs)
    if cache_dirs:  # realpath costs a system call per path component: only when needed
        real = os.path.join(os.path.realpath(path), "")
        for cache_dir in cache_dirs:
            if real.startswith(os.path.join(os.path.realpath(cache_dir), "")):
                return False
    if mode is None:
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            return True
    return not mode or stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _stdlib_names() -> frozenset[str]:
    names = set(sys.builtin_module_names)
    names.update(getattr(sys, "stdlib_module_names", ()))
    return frozenset(names)


STDLIB_NAMES = _stdlib_names()


def is_user_module_name(name: str) -> bool:
    """True when the module of this name is the user's (an unknown one counts by content)."""
    module = sys.modules.get(name)
    if module is None:
        # Unknown module (a dynamically made class or function): count by content.
        return name not in STDLIB_NAMES
    return is_user_module(module)


_USER_MODULES: dict[str, bool] = {}


def is_user_module(module: Any) -> bool:
    """True for a module of the user's code (by its file; ``__main__`` of a REPL too)."""
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
        # the import system gives absolute paths; a relative one is a library's stand-in
        # module (torch.ops says "_ops.py"), which would resolve against the working directory
        return os.path.isabs(path) and is_user_file(path)
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if origin in ("built-in", "frozen"):
        return False
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    if locations:  # namespace package
        return is_user_file(locations[0])
    # No file: __main__ of a REPL, IPython or ``python -c``, or a module made at runtime.
    return name.partition(".")[0] not in STDLIB_NAMES or name == "__main__"
