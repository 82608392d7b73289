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
object; a polars ``LazyFrame`` tells the files its plan scans when it is collected, whenever
it was made.

``os.stat`` and ``os.access`` raise no audit event either: while wrapped they tell the
recorder the files the user's code only looks at (``os.path.exists``, ``os.path.getmtime``,
``Path.is_file``, ``os.access``) and what the look answered (``key.looks``).
Libraries whose reads cannot be seen this way are named in a warning instead (``unseen``).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import readlog
from .looks import access_aspect, aspect
from .readernames import (
    COMPILED_CLASSES,
    READER_CLASS_METHODS,
    READER_CLASSES,
    READERS,
    UNSEEN,
    watch,
)

_PATH_KEYWORDS = ("source", "path", "input_file", "file", "where", "paths", "path_or_paths")
#: the polars methods and functions that run a lazy plan, reading the files it scans
_LAZY_METHODS = (
    "collect", "collect_async", "collect_batches", "sink_batches", "sink_parquet", "sink_csv",
    "sink_ipc", "sink_ndjson",
)

#: the attribute that marks a reader wrapped here
READER_WRAPPER = "__statecache_reader__"
_installed = False
#: id(original reader) -> (the original, its wrapper)
_WRAPPERS: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}


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
    global _note, _recording, _installed
    _note, _recording = note, recording
    watch()  # done at ``import statecache`` too; a module that another finder loaded is here
    wrap_loaded()
    _rebind_user_names()
    _rebind_running_locals(sys._getframe(1))
    if not _installed:
        os.stat = _wrap_stat(os.stat)
        os.access = _wrap_access(os.access)
        _installed = True


def wrap_loaded() -> None:
    """Wrap the readers of every module of ``READERS`` loaded now."""
    for name in {**READERS, **READER_CLASSES, **COMPILED_CLASSES, **READER_CLASS_METHODS}:
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
            setattr(module, attr, _seen_subclass(kind, methods, name))
    for attr, methods in READER_CLASS_METHODS.get(name, {}).items():
        for method in methods:
            _wrap_class_method(getattr(module, attr, None), method)
    if name == "polars":
        for method in _LAZY_METHODS:
            _wrap_method(getattr(module, "LazyFrame", None), method, _note_plan)
    if name == "pyarrow.dataset":
        _fingerprint_datasets(module)
    for attr in READERS.get(name, ()):
        function = getattr(module, attr, None)
        if function is None or getattr(function, READER_WRAPPER, False) or isinstance(function, type):
            continue
        wrapper = _wrap(function)
        try:
            setattr(module, attr, wrapper)
        except (AttributeError, TypeError):
            continue
        _WRAPPERS[id(function)] = (function, wrapper)


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
    """Wrap a class method that a class defined in Python inherits from compiled code (a
    ``classmethod_descriptor``), in place: called for the class or a subclass, it notes the
    path, then runs the inherited method for that class."""
    if not isinstance(kind, type) or getattr(vars(kind).get(attr), READER_WRAPPER, False):
        return
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
        note = _note_opened_for_reading if method == "__init__" else _note_first_argument
        original = getattr(kind, method)
        if original is object.__init__:
            original = _init_in_new  # a compiled class takes its arguments in __new__ (__cinit__)
        namespace[method] = _wrap(original, note)
    return SameClass(kind.__name__, (kind,), namespace)


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
    _note_path(*args, **kwargs)


def _note_plan(frame: Any, *args: Any, **kwargs: Any) -> None:
    """The files a polars lazy plan scans: from its description (no data is copied), or, when
    that shortens a list of sources, from its JSON form."""
    import re

    plan = frame._ldf.describe_plan()
    scans = re.findall(r"SCAN \[(.*)\]$", plan, flags=re.MULTILINE)
    if not any(re.search(r", \.\.\. \d+ other sources?$", scan) for scan in scans):
        note_source([scan for scan in scans if scan])
        return
    import json
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the JSON form is deprecated; it is the one that names every file
        tree = json.loads(frame.serialize(format="json"))
    note_source(list(_scanned_paths(tree)))


def _scanned_paths(tree: Any) -> Any:
    """The paths under every ``{"Paths": [{"inner": path}, ...]}`` of a serialised plan."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            paths = node.get("Paths")
            if isinstance(paths, list):
                yield from (p["inner"] if isinstance(p, dict) else p for p in paths)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _fingerprint_datasets(module: Any) -> None:
    """A pyarrow dataset (``ds.dataset(...)``, the one inside a ``pq.ParquetDataset``) or one
    of its file fragments, made above a block and read in it by C++ (``to_table``, ``head``,
    ``scanner``: compiled methods, which cannot be wrapped), counts as an input by what it is
    (its pickled fragments, schema and format) and by the stat stamp of each local file it
    reads: a rewritten file changes the key. A stamp, not the content, for a lookup cannot
    read a whole dataset, so a copy of the project (other inodes) computes once."""
    from .registry import register_fingerprint, registered_for

    for kind, fingerprint in ((getattr(module, "FileSystemDataset", None), _dataset_fingerprint),
                              (getattr(module, "FileFragment", None), _fragment_fingerprint)):
        if isinstance(kind, type) and registered_for(kind) is None:  # the user's own comes first
            register_fingerprint(kind, fingerprint)


def _dataset_fingerprint(dataset: Any) -> Any:
    try:
        return dataset.__reduce__()[1]  # its fragments (each with its stamp), schema, format, ...
    except ValueError:  # filtered or projected (ds.dataset(...).filter(...)): no fragments
        stamps = [_file_stamp(dataset.filesystem, path) for path in dataset.files]
        return (dataset.files, stamps, dataset.schema, dataset.format, dataset.partition_expression,
                dataset._scan_options)  # the filter and the columns a scan keeps


def _fragment_fingerprint(fragment: Any) -> Any:
    return fragment.__reduce__()[1], _file_stamp(fragment.filesystem, fragment.path)


def _file_stamp(filesystem: Any, path: str) -> Any:
    """The stat stamp of a dataset's file on the local filesystem (None on another one)."""
    from pyarrow.fs import LocalFileSystem

    if not isinstance(filesystem, LocalFileSystem):
        return None
    from .stamps import stat_stamp

    try:
        return stat_stamp(os.stat(path))
    except OSError:
        return "missing"


_stat_busy = threading.local()


def _wrap_stat(stat: Callable[..., Any]) -> Callable[..., Any]:
    """``os.stat`` that notes the path it looks at and what the look answers (``looks.aspect``:
    an existence test, a size, the whole stat), not a descriptor and not statecache's own
    stats; it returns and raises what ``os.stat`` does."""

    @functools.wraps(stat)
    def looked_at(path: Any, *args: Any, **kwargs: Any) -> Any:
        if _recording() and not isinstance(path, int) and not getattr(_stat_busy, "on", False):
            _look(path, kwargs, None, sys._getframe(1))
        return stat(path, *args, **kwargs)

    return looked_at


def _wrap_access(access: Callable[..., Any]) -> Callable[..., Any]:
    """``os.access`` that notes the path it checks and the answer for that mode (a flag file
    that appears is a change); it returns and raises what ``os.access`` does."""

    @functools.wraps(access)
    def checked(path: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
        if _recording() and not isinstance(path, int) and not getattr(_stat_busy, "on", False):
            _look(path, kwargs, mode, None)
        return access(path, mode, *args, **kwargs)

    return checked


def _look(path: Any, kwargs: dict[str, Any], mode: Any, frame: Any) -> None:
    """Tell the recorder of a stat (``frame``: its caller) or an access check of ``mode``."""
    _stat_busy.on = True
    try:
        if not kwargs.get("dir_fd") and not os.fsdecode(os.fspath(path)).endswith(_SOURCE_SUFFIXES):
            what = access_aspect(mode) if frame is None else aspect(frame)
            if what is not None:
                _note(path, looked=what)
    except Exception:
        pass
    finally:
        _stat_busy.on = False


# linecache stats the modules a traceback or a warning shows: code, which the key covers
_SOURCE_SUFFIXES = (".py", ".pyc", ".pyi", ".pyw")


def _rebind_running_locals(frame: Any) -> None:
    """Point the locals of the user's functions running now at the wrapper of a reader they
    hold: ``from polars import read_csv`` in ``main()`` before the first block computes."""
    if not _WRAPPERS:
        return
    from .._frames import is_function_frame, write_names
    from .provenance import Kind, classify

    while frame is not None:
        if is_function_frame(frame) and classify(frame.f_code.co_filename) is Kind.USER:
            found = {}
            for name, value in frame.f_locals.items():
                pair = _WRAPPERS.get(id(value))
                if pair is not None and pair[0] is value:
                    found[name] = pair[1]
            if found:
                write_names(frame, found)
        frame = frame.f_back


def _rebind_user_names() -> None:
    """Point the user's names that hold an unwrapped reader at its wrapper: ``from
    pyarrow.parquet import read_table`` before anything computed binds the original, whose
    reads no one would see (a hit after the file changed)."""
    if not _WRAPPERS:
        return
    from .provenance import is_user_module

    for module in list(sys.modules.values()):
        if not is_user_module(module):  # __main__ too
            continue
        namespace = vars(module)
        for name, value in list(namespace.items()):
            pair = _WRAPPERS.get(id(value))
            if pair is not None and pair[0] is value:
                namespace[name] = pair[1]


def _wrap(function: Callable[..., Any], note: Callable[..., None] = _note_path) -> Callable[..., Any]:
    """``function`` after ``note`` is told its arguments; it returns and raises what
    ``function`` does. The one wrapper of every reader, function or method."""

    @functools.wraps(function)
    def reader(*args: Any, **kwargs: Any) -> Any:
        if _recording() or readlog.in_user_function(sys._getframe(1)):
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
