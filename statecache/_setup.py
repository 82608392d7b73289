"""``@cached_setup``: cache a setup function's return value and the globals it assigns.

The front end says what the code is (the function, keyed by its fingerprint: code, the
globals it reads, the user's functions it calls), what it reads (its arguments and the
implicit inputs of its own body, through a ``GlobalsBinder``) and how a hit is put back (the
globals it assigns, the return value); the engine does the rest.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar, overload

from ._binders import GlobalsBinder, names_used
from ._config import validate_name
from ._engine import Engine, NullEngine, open_engine
from ._errors import ConfigError, InvalidNameError, StateCacheError
from ._settings import Options, where
from .key import components as _components
from .key.code import stored_globals
from .key.inputs import function_node, reads_of
from .key.project import default_cache_dir

F = TypeVar("F", bound=Callable[..., Any])

# The engine of each function's last call, kept outside the function's own state: a block
# that calls a cached_setup function fingerprints it, and must not see a call's details.
_last_calls: weakref.WeakKeyDictionary[Any, Engine | NullEngine] = weakref.WeakKeyDictionary()


class CacheInfo(NamedTuple):
    """What the last call of a ``cached_setup`` function did (``fn.cache_info()``)."""

    hit: bool
    reason: str  # why it computed ("" on a hit)
    key: str  # "" when caching is off
    entry_path: str | None


@overload
def cached_setup(func: F) -> F: ...


@overload
def cached_setup(
    func: None = None,
    *,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    ignore: str | Iterable[str] = (),
    files: str | Iterable[str] = (),
    verbose: bool | None = None,
    mmap: bool | None = None,
    max_size: int | str | None = None,
    version: str | None = None,
    max_age: float | str | None = None,
    remote: str | os.PathLike[str] | bool | None = None,
    compress: str | None = None,
) -> Callable[[F], F]: ...


def cached_setup(
    func: F | None = None,
    *,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    ignore: str | Iterable[str] = (),
    files: str | Iterable[str] = (),
    verbose: bool | None = None,
    mmap: bool | None = None,
    max_size: int | str | None = None,
    version: str | None = None,
    max_age: float | str | None = None,
    remote: str | os.PathLike[str] | bool | None = None,
    compress: str | None = None,
) -> Any:
    """Cache a setup function's return value and the module globals it assigns (``global x``).

    The key covers the function's code (or ``version=``) and, transitively, the code of the
    user's functions it calls, its argument values (``ignore=`` leaves some out), the globals
    it reads, the environment variables, ``sys.argv`` and user-module attributes its body
    reads, the data files it opens, ``files=`` globs and the Python version. After a call,
    ``fn.cache_info()`` says whether it hit and why it missed. ``remote=`` (default
    ``STATECACHE_REMOTE``) names a shared cache consulted on a local miss (``remote=False``:
    none); ``compress=`` ("auto", "speed", "size"; default ``STATECACHE_COMPRESS``, else
    "auto") says which buffers a save stores compressed.
    """
    options = Options(
        "cached_setup", cache_dir=cache_dir, ignore=ignore, files=files, verbose=verbose, mmap=mmap,
        max_size=max_size, version=version, max_age=max_age, remote=remote, compress=compress,
    )

    def decorate(fn: F) -> F:
        if not callable(fn) or not hasattr(fn, "__code__"):
            raise StateCacheError(f"cached_setup decorates a Python function, not {fn!r}")
        return _Setup(fn, _entry_name(fn, name), options).wrapper()  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _entry_name(fn: Any, name: str | None) -> str:
    if name is not None:
        return validate_name(name)
    derived = fn.__qualname__.replace("<locals>.", "").replace("<", "").replace(">", "")
    try:
        return validate_name(derived)
    except InvalidNameError:
        import re

        suggestion = re.sub(r"[^A-Za-z0-9._-]", "_", derived).lstrip(".")[:100] or "setup"
        raise InvalidNameError(
            f"cached_setup names its entries after the function, and {derived!r} is not a "
            "valid entry name (1 to 100 letters, digits, '.', '_' or '-', not starting "
            f"with '.'): give one, e.g. @cached_setup(name={suggestion!r})"
        ) from None


class _Setup:
    """One decorated function: what is fixed at decoration time, and one call's life."""

    def __init__(self, fn: Any, name: str, options: Options):
        import inspect

        self.fn, self.name, self.options = fn, name, options
        self.ignore = ignore = options.ignore
        code = fn.__code__
        self.where = where(code.co_filename, code.co_firstlineno)
        self.signature = inspect.signature(fn)
        self.stored = stored_globals(code)
        self.node = function_node(fn)
        self.reads = reads_of(self.node.body) if self.node is not None else None
        used = names_used(code)
        for ignored_name in ignore:
            if ignored_name not in self.signature.parameters and ignored_name not in used:
                raise ConfigError(
                    f"cached_setup {name!r}: ignore= names {ignored_name!r}, which is neither a "
                    f"parameter of {fn.__qualname__}{self.signature} nor a global it reads"
                )

    def wrapper(self) -> Callable[..., Any]:
        @functools.wraps(self.fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self.call(args, kwargs)

        wrapper.__statecache_name__ = self.name  # type: ignore[attr-defined]
        wrapper.cache_info = self.cache_info  # type: ignore[attr-defined]
        return wrapper

    def cache_info(self) -> CacheInfo:
        """What the last call did (before any call: not a hit, reason "not called yet")."""
        engine = _last_calls.get(self)
        if engine is None:
            return CacheInfo(False, "not called yet", "", None)
        return CacheInfo(engine.hit, engine.reason, engine.key, engine.entry_path)

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = self.fn
        code = fn.__code__
        settings = self.options.settings(self.name)
        engine = _last_calls[self] = open_engine(
            "cached_setup", self.name, settings, lambda: (self.where, default_cache_dir(code.co_filename))
        )
        context = f"cached_setup '{self.name}' ({fn.__qualname__} at {self.where})"
        binder = GlobalsBinder(fn, self.reads, self.stored, self.name, self.ignore, context)
        found = engine.lookup(lambda: self._components(binder, args, kwargs, engine.cache_dir))
        if found is not None:
            engine.restore(binder, found)
            return binder.result
        engine.start(binder)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            engine.abort()
            raise
        engine.save(lambda: binder.collect(result))
        return result

    def _code(self) -> str:
        """The function's own code, keyed like any helper's (normalised source while it
        compiles to the running code, else bytecode), or ``version=``; what it reads counts
        as inputs (see ``GlobalsBinder``). Without source, its whole fingerprint (code,
        globals, closures), which ``version=`` cannot replace."""
        fn = self.fn
        if self.node is None:
            from .key.values import Fingerprinter

            return Fingerprinter(ignore=self.ignore).value(fn, f"function {fn.__qualname__}").hex()
        from .key.code import code_digest

        return _components.code_component(lambda: code_digest(fn.__code__), self.options.version)

    def _components(
        self, binder: GlobalsBinder, args: tuple[Any, ...], kwargs: dict[str, Any], cache_dir: str
    ) -> dict[str, Any]:
        fn = self.fn
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        binder.bind_arguments(dict(bound.arguments))

        try:
            code = self._code()
        except StateCacheError as exc:
            raise type(exc)(f"{binder.context}: {exc}") from None
        return _components.components(
            code=code,
            source=_components.source_component(fn.__code__.co_filename, cache_dir),
            inputs=binder.inputs(),
            files=_components.files_component(self.options.files, os.path.dirname(os.path.abspath(fn.__code__.co_filename))),
        )

