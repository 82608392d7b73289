"""Files read by libraries that open them outside Python's ``open()``, from C, C++ or Rust.

pyarrow (so ``pd.read_parquet``) and polars raise no audit event when they read a file. Their
reader functions are wrapped, once, to tell the recorder the paths they are given: the ones
loaded when a computing block starts, and the ones imported later (a finder at the front of
``sys.meta_path`` wraps them right after their module runs; nothing here imports them).
Libraries whose reads cannot be seen this way are named in a warning instead (``unseen``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

#: module -> its functions that take a path (first argument, or a keyword below) and read it
READERS: dict[str, tuple[str, ...]] = {
    "pyarrow": ("memory_map",),
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
}
_PATH_KEYWORDS = ("source", "path", "input_file", "file", "where", "paths")

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
    if not _installed:
        sys.meta_path.insert(0, _AfterImport())
        _installed = True


def unseen() -> list[str]:
    """The loaded libraries that may have read files statecache cannot see."""
    return [name for name in UNSEEN if name in sys.modules]


def wrap_module(module: Any) -> None:
    for attr in READERS.get(getattr(module, "__name__", ""), ()):
        function = getattr(module, attr, None)
        if function is None or getattr(function, READER_WRAPPER, False) or isinstance(function, type):
            continue
        wrapper = _wrap(function)
        try:
            setattr(module, attr, wrapper)
        except (AttributeError, TypeError):
            continue
        _WRAPPERS[id(function)] = (function, wrapper)


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


def _wrap(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def reader(*args: Any, **kwargs: Any) -> Any:
        source = args[0] if args else next((kwargs[k] for k in _PATH_KEYWORDS if k in kwargs), None)
        try:
            note_source(source)
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
