"""Files read by libraries that open them outside Python's ``open()``, from C, C++ or Rust.

pyarrow (so ``pd.read_parquet``) and polars raise no audit event when they read a file. Their
reader functions (``readernames``) are wrapped in their module, once, to tell the recorder the
paths they are given while a block computes: right after the module runs (the import watch,
``key.importwatch``, calls ``wrap_module``), or at ``import statecache`` for one loaded before.
So a reader the user's code stores anywhere (a dict of loaders, a ``functools.partial``, a
default argument, a closure) is the wrapper, as long as it was taken from the module after
``import statecache``; one taken before (``from polars import read_csv`` above it) is the
original, pointed at its wrapper at the first computing block where a module global or a
running function's local holds it, and nowhere else. A wrapper returns and raises what its
reader does, with its signature, ``__wrapped__`` and docs. Reader classes defined in Python
(``pq.ParquetFile``) have their ``__init__`` wrapped in place, so the class stays the same
object; compiled ones are stood in for by a subclass, or, when they cannot be subclassed
(``safetensors.safe_open``), by a class whose call makes the original's object. A polars
``LazyFrame`` tells the files its plan scans when it runs (``key.polarsplans``), whenever it
was made. ``os.stat``, ``os.access`` and ``os.scandir`` are wrapped too (``key.oslooks``).
Libraries whose reads cannot be seen this way are named in a warning instead (``unseen``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from . import readlog
from .readernames import (
    COMPILED_CLASSES,
    LAZY_METHODS,
    PLAN_FUNCTIONS,
    READER_CLASS_METHODS,
    READER_CLASSES,
    READER_FACTORIES,
    READER_WRAPPER,
    READERS,
    UNSEEN,
    WATCHED,
    watch,
)
from .rebinding import WRAPPERS, rebind, register

__all__ = ["READER_WRAPPER"]  # the marker, as key.codegraph knows it from here

_PATH_KEYWORDS = ("source", "path", "input_file", "file", "filename", "where", "paths", "path_or_paths")


def _remember(path: Any, listed: bool = False, looked: bool | str = False) -> None:
    """The note before ``install``: nothing records yet, but a read by one of the user's
    functions is remembered as an ``open`` of it is (a memo filled above the first block)."""
    if not listed and not looked:
        readlog.remember(path, sys._getframe(1))


def _never() -> bool:
    return False


_note: Callable[..., None] = _remember
_recording: Callable[[], bool] = _never


def install(note: Callable[..., None], recording: Callable[[], bool]) -> None:
    """Wrap the readers of the modules loaded now and of those imported from now on; ``note``
    receives each path a reader is given (``listed=True`` for a directory it lists,
    ``looked=True`` for a stat) each time ``recording()`` says something records, or a user's
    function calls the reader (its reads are remembered, ``readlog``)."""
    global _note, _recording
    _note, _recording = note, recording
    watch()  # done at ``import statecache`` too; a module that another finder loaded is here
    wrap_loaded()
    from .oslooks import install as wrap_os

    wrap_os(note, recording)
    rebind(sys._getframe(1))


def wrap_loaded() -> None:
    """Wrap the readers of every module of ``readernames.WATCHED`` loaded now."""
    for name in dict.fromkeys(WATCHED):
        module = sys.modules.get(name)
        if module is not None:
            wrap_module(module)


def unseen() -> list[str]:
    """The loaded libraries that may have read files statecache cannot see."""
    return [name for name in UNSEEN if name in sys.modules]


def warn_unseen() -> None:
    """Say so when a library that reads files statecache cannot see was loaded (at a save)."""
    names = unseen()
    if names:
        from .._warnings import warn

        warn(
            f"statecache: {', '.join(names)} open files from compiled code, which statecache "
            "cannot see: a checkpoint that reads files through them must name those files with "
            "files=[...], or an edit of them restores the old state"
        )


def wrap_module(module: Any) -> None:
    """Wrap the readers of one module of ``READERS`` (its reader classes and lazy frames too)."""
    name = getattr(module, "__name__", "")
    for attr in READER_CLASSES.get(name, ()):
        _wrap_method(getattr(module, attr, None), "__init__", _note_first_argument)
    for attr, methods in COMPILED_CLASSES.get(name, {}).items():
        kind = getattr(module, attr, None)
        if isinstance(kind, type) and not kind.__dict__.get(READER_WRAPPER):
            _replace(module, attr, kind, _seen_subclass(kind, methods, name))
    for attr, methods in READER_CLASS_METHODS.get(name, {}).items():
        for method in methods:
            _wrap_class_method(getattr(module, attr, None), method)
    for attr in READER_FACTORIES.get(name, ()):
        kind = getattr(module, attr, None)
        if isinstance(kind, type) and not kind.__dict__.get(READER_WRAPPER):
            _replace(module, attr, kind, _seen_factory(kind))
    if name == "polars":
        _wrap_polars(module)
    if name == "pyarrow.dataset":
        from .arrowdatasets import fingerprint_datasets

        fingerprint_datasets(module)
    for attr in READERS.get(name, ()):
        _wrap_function(module, attr, _note_path)


def _wrap_polars(module: Any) -> None:
    """A ``LazyFrame``'s methods that run its plan, the functions that run several plans, and
    ``set_random_seed`` (whose seed stands for polars' generator: ``key.rng``)."""
    for method in LAZY_METHODS:
        _wrap_method(getattr(module, "LazyFrame", None), method, _note_plan)
    for attr in PLAN_FUNCTIONS.get(module.__name__, ()):
        _wrap_function(module, attr, _note_plans, _listed_frames)
    from .rng import watch_polars

    watch_polars(module)


def _wrap_function(module: Any, attr: str, note: Callable[..., None],
                   given: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None) -> None:
    function = getattr(module, attr, None)
    if function is None or getattr(function, READER_WRAPPER, False) or isinstance(function, type):
        return
    pair = WRAPPERS.get(id(function))
    wrapper = pair[1] if pair is not None and pair[0] is function else _wrap(function, note, given)
    _replace(module, attr, function, wrapper)


def _replace(module: Any, attr: str, original: Any, wrapper: Any) -> None:
    try:
        setattr(module, attr, wrapper)
    except (AttributeError, TypeError):
        return
    register(original, wrapper)


def _wrap_method(kind: Any, attr: str, note: Callable[..., None]) -> None:
    """Wrap ``kind.attr`` in place (a class defined in Python), so the class stays the same
    object: ``note`` gets the call's arguments first, then the method runs as it was."""
    method = vars(kind).get(attr) if isinstance(kind, type) else None
    if not callable(method) or getattr(method, READER_WRAPPER, False):
        return
    try:
        setattr(kind, attr, _wrap(method, note))
    except (AttributeError, TypeError):
        pass


def _wrap_class_method(kind: Any, attr: str) -> None:
    """Wrap a class method of a class defined in Python, its own or inherited from compiled
    code (a ``classmethod_descriptor``), in place: called for the class or a subclass, it
    notes the path, then runs the method as it was for that class."""
    if not isinstance(kind, type) or getattr(getattr(vars(kind).get(attr), "__func__", None), READER_WRAPPER, False):
        return  # not there, or wrapped already (a classmethod holds the wrapper as __func__)
    import inspect

    inherited = inspect.getattr_static(kind, attr, None)
    if inherited is None or not hasattr(inherited, "__get__"):
        return

    def call(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return inherited.__get__(None, cls)(*args, **kwargs)

    for name in ("__name__", "__qualname__", "__doc__"):
        setattr(call, name, getattr(inherited, name, None) or getattr(call, name))
    wrapper = _wrap(call, _note_first_argument)
    wrapper.__wrapped__ = getattr(kind, attr)  # type: ignore[attr-defined]
    try:
        setattr(kind, attr, classmethod(wrapper))
    except (AttributeError, TypeError):
        pass


def _seen_factory(kind: type) -> type:
    """A stand-in for the compiled class ``kind`` that cannot be subclassed: calling it notes
    the path and returns ``kind``'s own object; ``isinstance``, ``issubclass`` and its other
    attributes answer for ``kind``."""
    note = _wrap(kind, _note_path)

    class Factory(type):
        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            return note(*args, **kwargs)

        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, kind)

        def __subclasscheck__(cls, sub: type) -> bool:
            return issubclass(sub, kind)

        def __getattr__(cls, name: str) -> Any:
            return getattr(kind, name)

    # named as ``kind`` is, so that a key holding it counts what holding ``kind`` counts
    namespace = {"__module__": kind.__module__, "__qualname__": kind.__qualname__, "__doc__": kind.__doc__,
                 "__wrapped__": kind, READER_WRAPPER: True}
    return Factory(kind.__name__, (), namespace)


def _seen_subclass(kind: type, methods: tuple[str, ...], module: str) -> type:
    """A subclass of the compiled class ``kind`` whose ``methods`` note the path they are
    given; ``isinstance`` and ``issubclass`` answer for ``kind``, so the objects the library
    makes itself (``pa.input_stream`` returns an ``OSFile``) still pass the checks."""

    class SameClass(type(kind)):  # type: ignore[misc]
        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, kind)

        def __subclasscheck__(cls, sub: type) -> bool:
            return issubclass(sub, kind)

    namespace: dict[str, Any] = {
        "__module__": module,  # where the name now finds it, so pickle finds it by name
        "__qualname__": kind.__qualname__,
        "__doc__": kind.__doc__,
        "__wrapped__": kind,
        READER_WRAPPER: True,
    }
    for method in methods:
        original = getattr(kind, method)
        if method == "from_uri":
            namespace[method] = staticmethod(_seen_from_uri(original, module))
            continue
        if original is object.__init__:
            original = _init_in_new  # a compiled class takes its arguments in __new__ (__cinit__)
        namespace[method] = _wrap(original, _METHOD_NOTES.get(method, _note_first_argument))
    if kind.__name__ == "LocalFileSystem":
        # it pickles as pyarrow's, which a restore would make unseen: by name instead (a local
        # filesystem pickles no options: pyarrow's pickles as from_uri("file:///_"))
        namespace["__reduce__"] = _made_anew
    elif kind.__name__ == "SubTreeFileSystem":
        namespace["__reduce__"] = _subtree_anew  # likewise, with its root and base
    return SameClass(kind.__name__, (kind,), namespace)


def _made_anew(self: Any) -> tuple[Any, ...]:
    return type(self), ()


def _subtree_anew(self: Any) -> tuple[Any, ...]:
    return type(self), (self.base_path, self.base_fs)


def _seen_from_uri(from_uri: Callable[..., Any], module: str) -> Callable[..., Any]:
    """``FileSystem.from_uri`` whose local filesystem is the module's seen ``LocalFileSystem``
    (a ``file:`` URI takes no options that one made anew would lose), not the compiled one,
    whose reads and listings no wrapper hears."""

    @functools.wraps(from_uri)
    def made(*args: Any, **kwargs: Any) -> Any:
        filesystem, path = from_uri(*args, **kwargs)
        seen = getattr(sys.modules.get(module), "LocalFileSystem", None)
        compiled = getattr(seen, "__wrapped__", None)
        if isinstance(seen, type) and seen.__dict__.get(READER_WRAPPER) and type(filesystem) is compiled:
            filesystem = seen()
        return filesystem, path

    return made


def _init_in_new(self: Any, *args: Any, **kwargs: Any) -> None:
    """The ``__init__`` of a class whose ``__new__`` took the arguments: nothing to do."""


def _note_opened_for_reading(self: Any, path: Any = None, mode: Any = "r", *args: Any, **kwargs: Any) -> None:
    """A file class's constructor: the path when its mode reads (``pa.OSFile(path, "w")`` writes)."""
    mode = kwargs.get("mode", mode)
    if isinstance(mode, str) and ("r" in mode or "+" in mode):
        _note_path(kwargs.get("path", path))


def _note_path(*args: Any, **kwargs: Any) -> None:
    """A reader function's call: the path is its first argument or one of ``_PATH_KEYWORDS``."""
    note_source(args[0] if args else next((kwargs[k] for k in _PATH_KEYWORDS if k in kwargs), None))


def _note_first_argument(self: Any, *args: Any, **kwargs: Any) -> None:
    if hasattr(self, "base_fs") and args:  # a SubTreeFileSystem: the path is below its root
        found = _local_path(self, args[0])
        if found is not None:
            note_source(found)
        return
    _note_path(*args, **kwargs)


def _local_path(filesystem: Any, path: Any) -> Any:
    """Where ``path`` of a ``SubTreeFileSystem`` (over another, down to a local one) is on
    this machine; None over a filesystem that is not local (S3, a Python one)."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    while hasattr(filesystem, "base_fs"):
        path = os.path.join(filesystem.base_path, os.fspath(path).lstrip("/"))
        filesystem = filesystem.base_fs
    local = getattr(sys.modules.get("pyarrow._fs"), "LocalFileSystem", None)
    return path if isinstance(local, type) and isinstance(filesystem, local) else None


def _note_file_info(self: Any, paths_or_selector: Any = None, *args: Any, **kwargs: Any) -> None:
    """``LocalFileSystem.get_file_info``: a ``FileSelector``'s folder is listed (each folder
    under it too when recursive), and every file it finds, or each path it is given, is
    looked at, for the infos tell size and mtime."""
    given = kwargs.get("paths_or_selector", paths_or_selector)
    base = getattr(given, "base_dir", None)
    if base is None:
        for path in given if isinstance(given, (list, tuple)) else [given]:
            path = _local_path(self, path) if hasattr(self, "base_fs") else path
            if isinstance(path, (str, os.PathLike)):
                _note(path, looked=True)
        return
    if hasattr(self, "base_fs"):
        base = _local_path(self, base)
        if base is None:
            return
    if not os.path.isdir(base):
        _note(base, looked=True)  # not there: a folder that appears is a change
        return
    for root, dirs, names in os.walk(base):
        _note_listing(root)
        for name in names:
            _note(os.path.join(root, name), looked=True)
        dirs.sort()
        if not getattr(given, "recursive", False):
            for name in dirs:
                _note(os.path.join(root, name), looked=True)
            break


def _note_plan(frame: Any, *args: Any, **kwargs: Any) -> None:
    from .polarsplans import scanned

    note_source(scanned(frame))


def _note_plans(*args: Any, **kwargs: Any) -> None:
    from .polarsplans import scanned_by_all

    note_source(scanned_by_all(*args, **kwargs))


def _listed_frames(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``pl.collect_all(frame for ...)``: the frames of a one-pass iterable, as a list that both
    the note and the function read."""
    if args and not isinstance(args[0], (list, tuple)):
        return (list(args[0]), *args[1:])
    return args


#: the methods of ``COMPILED_CLASSES`` whose note is not ``_note_first_argument``
_METHOD_NOTES: dict[str, Callable[..., None]] = {
    "__init__": _note_opened_for_reading, "get_file_info": _note_file_info,
}


def _wrap(function: Callable[..., Any], note: Callable[..., None] = _note_path,
          given: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None) -> Callable[..., Any]:
    """``function`` after ``note`` is told its arguments (``given(args)`` first, when the
    arguments must be read twice); it returns and raises what ``function`` does. The one
    wrapper of every reader, function or method."""

    @functools.wraps(function)
    def reader(*args: Any, **kwargs: Any) -> Any:
        if _recording() or readlog.in_user_function(sys._getframe(1)):
            if given is not None:
                args = given(args)
            try:
                note(*args, **kwargs)
            except Exception:  # never let bookkeeping break the user's read
                pass
        return function(*args, **kwargs)

    setattr(reader, READER_WRAPPER, True)
    return reader


def note_source(source: Any) -> None:
    """Tell the recorder the files a reader's source names: a path (``str``, ``bytes``, a
    ``pathlib.Path`` or any ``os.PathLike``), a local URI (``local_paths``), a glob, a
    directory (every file under it, and its listings) or a list of those. Buffers, open files
    (seen by the audit hook when Python opened them) and remote URLs are left alone."""
    if isinstance(source, (list, tuple)):
        for item in source:
            note_source(item)
        return
    if not isinstance(source, (str, bytes, os.PathLike)):
        return
    import glob

    for path in local_paths(os.fsdecode(os.fspath(source))):
        if glob.has_magic(path):
            _note_listing(_static_prefix(path))
            for match in sorted(glob.glob(path, recursive=True)):  # its scans are heard too
                note_source(match)
        elif os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                _note_listing(root)
                for name in names:
                    _note(os.path.join(root, name))
                dirs.sort()
        else:
            _note(path)


#: the URI schemes that name a file of this machine (pyarrow takes ``local://`` too)
_LOCAL_SCHEMES = ("file:", "local:")


def local_paths(source: str) -> list[str]:
    """The local paths a reader may read for ``source``: the path itself; for a ``file:`` or
    ``local:`` URI, the path it names (``file:///abs``, ``file://localhost/abs``, ``file:/abs``),
    percent-escapes decoded as pyarrow does and not as polars does: both readings count (a
    file that is not there stays missing); ``file:rel``, which polars reads from the root,
    both ways too; none for a remote URL (``s3://``, ``https://``)."""
    if ":" not in source:
        return [source]
    scheme = source[: source.index(":") + 1].lower()
    if scheme not in _LOCAL_SCHEMES:
        return [] if "://" in source else [source]  # C:\data is a path, s3://b/k is not
    from urllib.parse import unquote

    rest = source[len(scheme):]
    if rest.startswith("//"):
        host, _, rest = rest[2:].partition("/")
        if host.lower() not in ("", "localhost"):
            return []  # another machine's file, read over the network if at all
        rest = "/" + rest
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    found = [unquote(rest), rest]
    if not rest.startswith("/"):
        found.append("/" + rest)  # polars reads file:rel from the root
    return list(dict.fromkeys(found))


def _static_prefix(pattern: str) -> str:
    """The deepest directory of a glob before its first wildcard (``data`` for
    ``data/*/x.csv``): the one listing of it that may show a new match."""
    import glob

    parts = pattern.split(os.sep)
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return os.sep.join(parts[:i]) or (os.sep if pattern.startswith(os.sep) else ".")
    return os.path.dirname(pattern) or "."


def _note_listing(path: str) -> None:
    _note(path, listed=True)
