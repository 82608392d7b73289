"""The import watch: one finder at the front of ``sys.meta_path``, installed by ``import
statecache``, that sees every module load from then on and does two things.

- ``after_import(name, "package.module:function")``: call that function with the module right
  after ``name`` runs (at once when it is already loaded); the callback's module is imported
  only then, so a watched library costs nothing until the script imports it.
- It keeps, for each of the user's modules (``provenance.is_user_file``), what its source was
  when it loaded: the text Python compiled, or, when Python ran a valid ``.pyc`` instead, the
  source's mtime and size that the ``.pyc`` was checked against. ``loaded_source(module)``
  gives it, so a key never trusts the shared ``.pyc`` (another run may rewrite it) or a file
  saved since. Modules loaded before ``import statecache`` are not seen here (None).

Nothing is read that Python does not read itself: the loader's own ``get_data`` and
``path_stats`` are observed, so the file recorder sees no extra open. Model: jurigged's
``register.py``. Imports nothing beyond ``sys`` until a module loads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


class LoadedSource:
    """A user module's source as Python loaded it: ``text`` when compiled from it (None when a
    ``.pyc`` ran), and the source's stat Python saw (``mtime`` in whole seconds, as a ``.pyc``
    stamps it; -1 when unknown). A plain class: a NamedTuple costs ``import statecache`` 1 ms."""

    __slots__ = ("mtime", "path", "size", "text")

    def __init__(self, path: str, text: bytes | None, mtime: int, size: int) -> None:
        self.path, self.text, self.mtime, self.size = path, text, mtime, size

    def __repr__(self) -> str:
        return f"LoadedSource({self.path!r}, text={self.text is not None}, mtime={self.mtime}, size={self.size})"


#: module name -> (the spec it was loaded with, what was loaded)
_LOADED: dict[str, tuple[Any, LoadedSource]] = {}
#: module name -> callbacks ("package.module:function" or a callable) to run after it loads
_AFTER: dict[str, list[str | Callable[[Any], Any]]] = {}
_is_user_file: Callable[[str], bool] | None = None
_busy = False  # importing the classifier: its own imports are not the user's
#: statecache's own package: its modules, loaded lazily on a first hit, are never the user's
_OWN_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def loaded_source(module: Any) -> LoadedSource | None:
    """What ``module``'s source was when it loaded, if the watch saw it load (a user module
    loaded after ``import statecache``, from a ``.py`` file); else None."""
    name = getattr(module, "__name__", None)
    found = _LOADED.get(name) if isinstance(name, str) else None
    if found is None or getattr(module, "__spec__", None) is not found[0]:
        return None
    return found[1]


def after_import(module_name: str, target: str | Callable[[Any], Any]) -> None:
    """Call ``target`` (a callable, or ``"package.module:function"``, imported when needed)
    with the module ``module_name`` right after it is imported, and at once if it already is.
    Registering the same target twice calls it once."""
    callbacks = _AFTER.setdefault(module_name, [])
    if target in callbacks:
        return
    callbacks.append(target)
    module = sys.modules.get(module_name)
    if module is not None:
        _call(target, module)


def install() -> None:
    """Put the watch at the front of ``sys.meta_path`` (once; again at the front if moved)."""
    for finder in sys.meta_path:
        if isinstance(finder, ImportWatch):
            return
    sys.meta_path.insert(0, ImportWatch())


class ImportWatch:
    """The finder: asks the finders after it for the spec, then observes its loader."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if _busy:
            return None
        spec = None
        for finder in list(sys.meta_path):
            if finder is self or isinstance(finder, ImportWatch):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        if spec is None:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        watched = name in _AFTER
        source = _source_loader(spec)
        if watched or source:
            _observe(spec, loader, watched, source)
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached here."""


def _source_loader(spec: Any) -> bool:
    """A plain ``.py`` module (SourceFileLoader) of the user's files."""
    external = sys.modules.get("_frozen_importlib_external")
    origin = spec.origin
    if external is None or not isinstance(spec.loader, external.SourceFileLoader):
        return False
    if not (isinstance(origin, str) and origin.endswith(".py")):
        return False
    if origin.startswith(_OWN_PACKAGE) and _is_user_file is not None:
        return False  # never the user's; the first one still sets the classifier up, under _busy
    return _user(origin)


def _user(path: str) -> bool:
    """Whether ``path`` is one of the user's files. Deciding may import modules (provenance,
    then ``sysconfig`` and its ``_sysconfigdata``, on first use): those imports pass the
    watch by, or the same question would be asked again inside them, half set up (Python
    3.13 raised AttributeError: 'abi_thread' there)."""
    global _is_user_file, _busy
    if _busy:
        return False
    _busy = True
    try:
        if _is_user_file is None:
            from .provenance import is_user_file

            _is_user_file = is_user_file
        return _is_user_file(path)
    finally:
        _busy = False


def _observe(spec: Any, loader: Any, watched: bool, source: bool) -> None:
    """Wrap the loader instance's methods (each spec has its own loader instance)."""
    name, origin = spec.name, spec.origin
    seen: dict[str, Any] = {}
    if source:
        get_data, path_stats = loader.get_data, loader.path_stats

        def observed_stats(path: str) -> Any:
            stats = path_stats(path)
            if path == origin:
                seen["stats"] = stats
            return stats

        def observed_data(path: str) -> bytes:
            data = get_data(path)
            if path == origin:
                seen["text"] = data
            return data

        loader.path_stats, loader.get_data = observed_stats, observed_data
    run = loader.exec_module

    def exec_module(module: Any) -> None:
        if source:
            _LOADED.pop(name, None)  # a reload that fails leaves no stamp of the old text
        run(module)
        if source:
            _remember(name, spec, origin, seen)
        if watched:
            for callback in list(_AFTER.get(name, ())):
                _call(callback, module)

    try:
        loader.exec_module = exec_module
    except (AttributeError, TypeError):
        pass


def _remember(name: str, spec: Any, origin: str, seen: dict[str, Any]) -> None:
    stats = seen.get("stats") or {}
    text = seen.get("text")
    try:
        mtime, size = int(stats["mtime"]), int(stats.get("size", -1))
    except (KeyError, TypeError, ValueError):
        mtime, size = -1, -1
    if text is None and mtime < 0:
        return  # neither the text nor its stat was seen: the .pyc rule of key/code.py applies
    _LOADED[name] = (spec, LoadedSource(origin, text, mtime, size))


def _call(target: str | Callable[[Any], Any], module: Any) -> None:
    """Run one after-import callback; a failure is a warning, never a failed import."""
    try:
        function = target
        if isinstance(function, str):
            import importlib

            module_name, _, attr = function.partition(":")
            function = getattr(importlib.import_module(module_name), attr)
        function(module)
    except Exception as e:  # the user's import must not fail for statecache's bookkeeping
        import warnings

        from .._errors import StateCacheWarning

        warnings.warn(
            f"statecache: after importing {getattr(module, '__name__', module)!r}, {target!r} "
            f"failed ({type(e).__name__}: {e}); what it watches may not be tracked",
            StateCacheWarning,
            stacklevel=2,
        )
