"""Files read by libraries that open them outside Python's ``open()``, from C, C++ or Rust.

pyarrow (so ``pd.read_parquet``) and polars raise no audit event when they read a file. Their
reader functions are wrapped, once, to tell the recorder the paths they are given: the ones
loaded when a computing block starts, and the ones imported later (a finder at the front of
``sys.meta_path`` wraps them right after their module runs; nothing here imports them). Reader
classes defined in Python (``pq.ParquetFile``) have their ``__init__`` wrapped in place, so the
class stays the same object; a polars ``LazyFrame`` tells the files its plan scans when it is
collected, whenever it was made. Names the user bound to a reader before (module globals, and
the locals of the functions running) are pointed at its wrapper.

``os.stat`` raises no audit event either: while wrapped it tells the recorder the files the
user's code only looks at (``os.path.exists``, ``os.path.getsize``, ``Path.is_file``).
Libraries whose reads cannot be seen this way are named in a warning instead (``unseen``).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

#: module -> its functions that take a path (first argument, or a keyword below) and read it
READERS: dict[str, tuple[str, ...]] = {
    "pyarrow": ("memory_map", "input_stream"),
    "pyarrow.parquet": ("read_table", "read_pandas", "read_metadata", "read_schema"),
    "pyarrow.csv": ("read_csv", "open_csv"),
    "pyarrow.feather": ("read_table", "read_feather"),
    "pyarrow.ipc": ("open_file", "open_stream"),
    "pyarrow.json": ("read_json",),
    "pyarrow.orc": ("read_table",),
    "pyarrow.dataset": ("dataset",),
    "polars": (
        "read_csv", "read_csv_batched", "read_parquet", "read_parquet_schema", "read_ipc",
        "read_ipc_stream", "read_ipc_schema", "read_ndjson", "read_json", "read_avro",
        "read_excel", "read_ods", "read_delta", "scan_csv", "scan_parquet", "scan_ipc",
        "scan_ndjson", "scan_delta",
    ),
    "torch": ("from_file",),  # C++ reads; torch.load opens its file with Python's open()
    "safetensors.torch": ("load_file",),  # Rust reads (safe_open)
    "safetensors.numpy": ("load_file",),
}
_PATH_KEYWORDS = ("source", "path", "input_file", "file", "where", "paths", "path_or_paths")
#: module -> its reader classes defined in Python, whose ``__init__`` takes the path after self
READER_CLASSES: dict[str, tuple[str, ...]] = {
    "pyarrow.parquet": ("ParquetFile", "ParquetDataset"),
}
#: the polars methods and functions that run a lazy plan, reading the files it scans
_LAZY_METHODS = (
    "collect", "collect_async", "collect_batches", "sink_batches", "sink_parquet", "sink_csv",
    "sink_ipc", "sink_ndjson",
)

#: libraries known to open files from compiled code that no wrapper here sees
UNSEEN = ("h5py", "netCDF4", "tables", "h5netcdf", "lmdb", "fitsio", "duckdb")

#: the attribute that marks a reader wrapped here
READER_WRAPPER = "__statecache_reader__"
_installed = False
#: id(original reader) -> (the original, its wrapper)
_WRAPPERS: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}


def _ignore(path: Any, listed: bool = False) -> None:
    """The note before ``install``: nothing records yet."""


_note: Callable[..., None] = _ignore


def install(note: Callable[..., None]) -> None:
    """Wrap the readers of the modules loaded now and of those imported from now on; ``note``
    receives each path a reader is given, and ``listed=True`` for a directory it lists (it
    decides whether anything is recording)."""
    global _note, _installed
    _note = note
    for name in READERS:
        module = sys.modules.get(name)
        if module is not None:
            wrap_module(module)
    _rebind_user_names()
    _rebind_running_locals(sys._getframe(1))
    if not _installed:
        sys.meta_path.insert(0, _AfterImport())
        os.stat = _wrap_stat(os.stat)
        _installed = True


def unseen() -> list[str]:
    """The loaded libraries that may have read files statecache cannot see."""
    return [name for name in UNSEEN if name in sys.modules]


def wrap_module(module: Any) -> None:
    """Wrap the readers of one module of ``READERS`` (its reader classes and lazy frames too)."""
    name = getattr(module, "__name__", "")
    for attr in READER_CLASSES.get(name, ()):
        _wrap_method(getattr(module, attr, None), "__init__", _note_first_argument)
    if name == "polars":
        for method in _LAZY_METHODS:
            _wrap_method(getattr(module, "LazyFrame", None), method, _note_plan)
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


def _note_path(*args: Any, **kwargs: Any) -> None:
    """A reader function's call: the path is its first argument or one of ``_PATH_KEYWORDS``."""
    note_source(args[0] if args else next((kwargs[k] for k in _PATH_KEYWORDS if k in kwargs), None))


def _note_first_argument(self: Any, *args: Any, **kwargs: Any) -> None:
    _note_path(*args, **kwargs)


def _note_plan(frame: Any, *args: Any, **kwargs: Any) -> None:
    """The files a polars lazy plan scans: from its description (no data is copied), or, when
    that shortens a list of sources, from its JSON form."""
    if _note is _ignore:
        return
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


_stat_busy = threading.local()


def _wrap_stat(stat: Callable[..., Any]) -> Callable[..., Any]:
    """``os.stat`` that notes the path it looks at (not a descriptor, not statecache's own
    stats); it returns and raises what ``os.stat`` does."""

    @functools.wraps(stat)
    def looked_at(path: Any, *args: Any, **kwargs: Any) -> Any:
        if _note is not _ignore and not isinstance(path, int) and not getattr(_stat_busy, "on", False):
            _stat_busy.on = True
            try:
                if not kwargs.get("dir_fd") and not os.fsdecode(os.fspath(path)).endswith(_SOURCE_SUFFIXES):
                    _note(path)
            except Exception:
                pass
            finally:
                _stat_busy.on = False
        return stat(path, *args, **kwargs)

    return looked_at


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
        try:
            note(*args, **kwargs)
        except Exception:  # never let bookkeeping break the user's read
            pass
        return function(*args, **kwargs)

    setattr(reader, READER_WRAPPER, True)
    return reader


def note_source(source: Any) -> None:
    """Tell the recorder the files a reader's source names: a path, a glob, a directory (every
    file under it, and its listings) or a list of those. Buffers, open files (seen by the
    audit hook when Python opened them) and URLs are left alone."""
    if isinstance(source, (list, tuple)):
        for item in source:
            note_source(item)
        return
    if not isinstance(source, (str, os.PathLike)):
        return
    import glob

    path = os.fsdecode(os.fspath(source))
    if "://" in path:
        return
    if glob.has_magic(path):
        _note_listing(os.path.dirname(path) or ".")
        for match in sorted(glob.glob(path, recursive=True)):
            note_source(match)
    elif os.path.isdir(path):
        for root, dirs, names in os.walk(path):
            _note_listing(root)
            for name in names:
                _note(os.path.join(root, name))
            dirs.sort()
    else:
        _note(path)


def _note_listing(path: str) -> None:
    _note(path, listed=True)


class _AfterImport:
    """A finder that wraps a reader module's functions right after the module runs."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in READERS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            wrap_module(module)

        try:
            loader.exec_module = exec_module  # type: ignore[method-assign]
        except (AttributeError, TypeError):
            pass
        return spec
