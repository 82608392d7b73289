"""What a computing block sends to worker processes that share no memory with it (spawn,
forkserver, joblib's loky): every object pickled for them, seen where ``multiprocessing`` and
loky pickle (``ForkingPickler.dump``, loky's ``reduction.dump``), wrapped when they load.

Such a worker runs only what it is sent. A send that holds none of the user's code (no
function or class of the user's modules, ``provenance``) and names no existing file or folder
(a ``str``, ``bytes`` or ``os.PathLike`` anywhere in it, or among the strings of an array or
frame that pickles them as one buffer: ``text_values``) cannot make an installed library's
code read the user's files: ``cross_val_score(..., n_jobs=2)`` may be saved. A send that runs
the user's own function, passes a path (``delayed(np.load)("x.npy")``) or cannot be inspected
is doubtful (``workers.sent``), and the block is not saved unless its ``files=`` name what
the workers read. The inspection pickles the object again into nothing, at protocol 5 with
arrays' buffers out of band (not copied), and stops at the first doubt.

A worker counts as seen only when it was started through a watched pickler, while
statecache was imported, as a pool's worker loop on that pool's own queue
(``workers.runs_worker_loop``) with nothing doubtful in it (its initializer too).

Known limits: a spawn worker first re-runs the top level of the user's script (as
``__mp_main__``), which can only matter to a task if it patches a library; a file that an
installed function reads by a name the task does not carry (its own configuration or
download cache), or that a task names before it exists, is not seen; a bare glob counts
only when it holds a ``.`` (``*.csv``): listing the folder would make it the block's input.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from typing import Any

from . import workers

_PLAIN = frozenset({int, float, bool, complex, type(None), tuple, list, dict, set, frozenset})
_CODE = (types.FunctionType, types.BuiltinFunctionType, type)
_LONGEST_PATH = 4096
_WATCHED = "_statecache_watched"


def watch_multiprocessing(reduction: Any) -> None:
    """After ``multiprocessing.reduction`` loads: see what its pickler dumps (pipes, queues,
    a spawned process and its preparation data all pickle through ``ForkingPickler``)."""
    pickler = reduction.ForkingPickler
    if getattr(pickler.dump, _WATCHED, False):
        return
    dump = pickler.dump

    def watched_dump(self: Any, obj: Any) -> Any:
        note(obj)
        return dump(self, obj)

    setattr(watched_dump, _WATCHED, True)
    pickler.dump = watched_dump


def watch_loky(reduction: Any) -> None:
    """After loky's ``backend.reduction`` loads: its ``dump`` (``dumps`` calls it, as its
    process starter does) pickles every task and process joblib's loky backend sends."""
    dump = reduction.dump
    if getattr(dump, _WATCHED, False):
        return

    def watched_dump(obj: Any, file: Any, reducers: Any = None, protocol: Any = None) -> Any:
        note(obj)
        return dump(obj, file, reducers=reducers, protocol=protocol)

    setattr(watched_dump, _WATCHED, True)
    reduction.dump = watched_dump


def note(obj: Any) -> None:
    """One object pickled for another process: a process being started (spawn, forkserver,
    loky), whether recording or not, or, while this process records, anything else. Tell
    ``workers`` whether it is doubtful, and which processes are pool workers whose work is
    all seen. Never raises: the user's pickling goes on whatever happens here."""
    try:
        if _process(obj):
            _note_process(obj)
        elif workers.recording_here() and not workers.doubted() and not _preparation(obj):
            workers.sent(inspect(obj))
    except Exception as exc:  # noqa: BLE001  (an inspection that fails is a doubt, not an error)
        if workers.recording_here():
            workers.sent(f"what it sends could not be inspected ({type(exc).__name__})")


def _process(obj: Any) -> bool:
    base = getattr(sys.modules.get("multiprocessing.process"), "BaseProcess", None)
    return base is not None and isinstance(obj, base)


def _note_process(process: Any) -> None:
    """A process being started: a pool's worker loop given nothing of the user's code or
    paths (its initializer and arguments) is one whose later work is all seen; any other
    may be given work by ways not seen, a doubt for a block that starts it."""
    doubt = inspect(process)
    if doubt is None and workers.runs_worker_loop(process):
        workers.started_pool_worker(process)
    elif doubt is None:
        target = getattr(process, "_target", None)
        name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}" if target else ""
        doubt = f"it starts a process running {name or type(process).__name__} on a channel statecache does not see"
    if workers.recording_here():
        workers.sent(doubt)


def _preparation(obj: Any) -> bool:
    """A spawned process's preparation data (``spawn.get_preparation_data``: its ``sys.path``,
    working directory, main script), which names paths but is no task."""
    return type(obj) is dict and "sys_path" in obj and "authkey" in obj


def inspect(obj: Any) -> str | None:
    """Why ``obj``, sent to a worker, may make it read the user's files (None: it cannot)."""
    inspector = _Inspector()
    try:
        inspector.dump(obj)
    except _Doubt as doubt:
        return str(doubt)
    except RecursionError:
        return "what it sends is nested too deeply to inspect"
    return None


class _Doubt(Exception):
    """Raised from inside the pickler at the first doubtful object: the inspection ends."""


class _Sink:
    def write(self, data: Any) -> int:
        return len(data)


def _out_of_band(buffer: Any) -> bool:
    return False  # an array's bytes: not copied, not looked at


class _Inspector(pickle.Pickler):
    """A pickler into nothing that looks at each object before it is pickled."""

    def __init__(self) -> None:
        super().__init__(_Sink(), protocol=5, buffer_callback=_out_of_band)
        self.paths = _block_paths()

    def persistent_id(self, obj: Any) -> None:
        kind = type(obj)
        if kind in _PLAIN:
            return None
        if kind is str or kind is bytes or kind is bytearray or isinstance(obj, str):
            if len(obj) > _LONGEST_PATH:
                return None  # a text, not a path (nor kept in the cache)
            path: Any = bytes(obj) if kind is bytearray else obj
        elif isinstance(obj, _CODE):
            if _users_code(obj):
                raise _Doubt(f"it sends the workers the user's code ({_code_name(obj)})")
            return None
        elif isinstance(obj, os.PathLike):
            path = os.fspath(obj)
        else:
            texts = text_values(obj)
            if texts is not None:
                for text in texts:
                    self.check(text)
            return None
        self.check(path)
        return None

    def check(self, path: Any) -> None:
        if not isinstance(path, (str, bytes)) or len(path) > _LONGEST_PATH:
            return
        found = self.paths.get(path)
        if found is None:
            found = self.paths[path] = names_path(path)
        if found:
            raise _Doubt(f"it sends the workers the path {path!r}")


_TEXT_KINDS = frozenset("USTO")  # numpy dtype kinds whose values may be text (O: for structured fields)


def text_values(obj: Any) -> list[Any] | None:
    """The strings of an object that pickles them as one out-of-band buffer, where the pickler
    never shows them one by one: a numpy array of text (dtype ``U``, ``S``, ``T``, or
    structured with such fields), a pyarrow array of strings or binaries (pandas' pyarrow
    strings; nested in lists or structs too), a polars Series or DataFrame (pickled as one
    IPC blob). None for any other object. A polars LazyFrame's plan may scan files: a doubt."""
    module = type(obj).__module__ or ""
    if module.startswith("numpy") and hasattr(obj, "dtype") and hasattr(obj, "tolist"):
        return _numpy_texts(obj)
    if module.startswith("pyarrow") and hasattr(obj, "to_pylist") and hasattr(obj, "type"):
        if any(word in str(obj.type) for word in ("string", "binary", "utf8")):
            return _flat(obj.to_pylist())
        return None
    if module.startswith("polars"):
        name = type(obj).__name__
        if name == "LazyFrame":
            raise _Doubt("it sends the workers a polars LazyFrame, whose plan may scan files")
        if name in ("Series", "DataFrame"):
            frame = obj.to_frame() if name == "Series" else obj
            return _flat([frame.get_column(c).to_list() for c, t in frame.schema.items()
                          if not t.is_numeric() and not t.is_temporal()])
    return None


def _numpy_texts(array: Any) -> list[Any] | None:
    dtype = array.dtype
    if dtype.fields:
        return _flat([_numpy_texts(array[name]) or [] for name in dtype.names if dtype[name].kind in _TEXT_KINDS])
    if dtype.kind in "UST":
        return _flat(array.tolist())
    return None  # kind O pickles its elements one by one: each is seen


def _flat(values: Any) -> list[Any]:
    """Every str and bytes inside nested lists, tuples and dicts."""
    out: list[Any] = []
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, (str, bytes)):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
            stack.extend(value.keys())
    return out


_PATHS: dict[str | bytes, bool] = {}  # names_path of each value seen in the current block
_PATHS_BLOCK = [-1]  # the ``workers.block()`` that _PATHS is for


def _block_paths() -> dict[str | bytes, bool]:
    """``names_path`` of each value sent in this block, asked once per value (a data set's
    strings repeat in each task); a value that was no path at its first send stays none."""
    block = workers.block()
    if _PATHS_BLOCK[0] != block:
        _PATHS.clear()
        _PATHS_BLOCK[0] = block
    return _PATHS


def _users_code(obj: Any) -> bool:
    """A function or class of the user's modules (``__main__`` always, a script read from
    standard input too); a module not loaded here counts as the user's unless it is the
    standard library's."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        return False  # a builtin method: pickled as its object and name, both seen
    if module in ("__main__", "__mp_main__"):
        return True
    from .provenance import is_user_module_name  # which caches its answer per loaded module

    return is_user_module_name(module)


def _code_name(obj: Any) -> str:
    return f"{getattr(obj, '__qualname__', type(obj).__name__)} from {getattr(obj, '__module__', '?')}"


def names_path(value: str | bytes) -> bool:
    """Whether a value sent to a worker may name a file it reads: an existing file or folder
    (``~`` and ``file://`` expanded), a file in an existing folder other than the root, or a
    glob in an existing folder (a bare ``*.csv`` by its look: listing the folder would make
    it the block's input). Asked of the operating system directly (``_native``): a look
    through ``os`` would be recorded as the block's."""
    if len(value) > _LONGEST_PATH:
        return False
    text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
    if not text or "\0" in text:
        return False
    if "/" not in text and "*" not in text and "?" not in text and "[" not in text and text[0] != "~":
        return _exists(text)  # a bare name (most strings): one system call
    if text.startswith("file://"):
        text = text[7:]
    if text.startswith("~"):
        text = os.path.expanduser(text)
    magic = [text.index(c) for c in "*?[" if c in text]
    if magic:
        folder = os.path.dirname(text[:min(magic)])
        return _is_dir(folder) if folder else "." in text
    if _exists(text):
        return True
    folder = os.path.dirname(text)
    return bool(folder) and folder != os.path.dirname(folder) and _is_dir(folder)


_native: Any = sys.modules.get(os.name) or os  # posix (nt): not the wrapped os.stat


def _exists(path: str) -> bool:
    try:
        _native.lstat(path)
    except (OSError, ValueError):
        return False
    return True


def _is_dir(path: str) -> bool:
    import stat

    try:
        return stat.S_ISDIR(_native.stat(path).st_mode)
    except (OSError, ValueError):
        return False
