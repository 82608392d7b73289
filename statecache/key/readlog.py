"""What each of the user's functions has read so far in this process, from ``import
statecache`` on, whether or not a checkpoint was recording.

A memo of a user function (``functools.lru_cache``, ``functools.cache``) filled above a block
returns in the block what was read then, and the block opens nothing: so a function's key
counts the files it read before (``earlier_reads``), by the stat they had when it read them.
The audit hook of ``key.files`` hands every open for reading to ``remember``; the import
system's own reads (modules, bytecode) are left out first, at the cost of one string test:
the import system's frozen modules, not every frozen module (``codecs.open`` is one from 3.11).
"""

from __future__ import annotations

import os
import sys
import types
from _thread import _local, get_ident

from ..store.layout import ENTRY_SUFFIX, LOCK_SUFFIX, USAGE_FILE, is_own_in_name_dir, is_own_top
from .stamps import stat_stamp

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_FUNCTION = 0x1  # CO_OPTIMIZED: a function's frame, not a module's or a class body's
#: The files of the import system's frozen modules, whose opens read modules and bytecode.
IMPORT_SYSTEM = ("<frozen importlib.", "<frozen zipimport>")
_MAX_DEPTH = 64
# a comprehension's code is reached only through the function holding it, also on the stack
_INLINE = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})

#: code of a user function -> path -> what the file was when the function last read it
_READS: dict[types.CodeType, dict[str, tuple[Any, ...] | None]] = {}
#: the same, at the function's first read: a memo may hold what that read gave
_FIRST: dict[types.CodeType, dict[str, tuple[Any, ...] | None]] = {}
_USER_FILES: dict[str, bool] = {}
_busy = _local()  # what this module's own stats and lookups open is no read of the user's
#: The packages of statecache that open its own files (an entry a hit loads, the store's
#: index): no read of the user's functions above them on the stack, and no stat on a hit made
#: inside one. Not key/: its reader wrappers hand on the reads of the user's code.
_OWN_FILES_CODE = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package) + os.sep
    for package in ("entry", "store"))
_MAIN = get_ident()  # the thread that imports statecache: the main one, nearly always


def earlier_reads(code: types.CodeType) -> tuple[tuple[str, tuple[Any, ...] | None], ...]:
    """The data files the user function of this code read so far in this process (or the
    library function, when the user's module-level code called it: ``_library_entry``), sorted,
    each with the stamp it had at the latest read (None: it did not exist). Empty for most
    functions. The stamp, not the content: a memo's reads are stamped again in every run,
    and reading every data file twice would cost more than the memo saves (a same-size
    rewrite within one mtime tick of the read, a few ms, is the one change it misses)."""
    found = _READS.get(code)
    return tuple(sorted(found.items())) if found else ()


def earlier_reads_digest(code: types.CodeType) -> bytes:
    """What the key of the user function of this code counts of its earlier reads: each file
    by its path inside the project (else absolute) and its content, when the file is still
    what the function read (so a copy of the project, with other inodes, ctimes and absolute
    paths, keys the same); a file changed since the read, or one that appeared, counts by the
    stamps, so the key differs from any run that read the file as it is now. So does a file
    the function read under two stamps: a memo may hold either read's result."""
    reads = earlier_reads(code)
    if not reads:
        return b""
    first = _FIRST.get(code, {})
    from .hashing import encode_str
    from .project import inside, project_root

    root = project_root()
    parts = []
    for path, then in reads:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        now = stat_stamp(st) if st is not None else None
        if first.get(path, then) != then:
            what = f"changed since read {first.get(path)} -> {then} -> {now}"
        elif now != then:
            what = f"changed since read {then} -> {now}"
        elif now is None:
            what = "missing"
        else:
            what = _content(path, now)
        parts.append(encode_str(inside(path, root) or path) + encode_str(what))
    return b"read" + b"".join(parts)


_CONTENT: dict[str, tuple[tuple[int, ...], str]] = {}


def _content(path: str, stamp: tuple[int, ...]) -> str:
    """The file's content digest, computed once per stamp."""
    hit = _CONTENT.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    from .hashing import file_digest

    _busy.on = True  # this read is statecache's, not the user's
    try:
        found = file_digest(path)
    except OSError as e:
        found = f"unreadable {e.errno}"
    finally:
        _busy.on = False
    _CONTENT[path] = (stamp, found)
    return found


def remember(path: Any, frame: Any) -> None:
    """An open for reading from ``frame``: note it for every user function on the stack."""
    if frame is None or getattr(_busy, "on", False):
        return  # this module reading
    opener = frame.f_code.co_filename
    if opener.startswith(IMPORT_SYSTEM) or opener.startswith(_OWN_FILES_CODE):
        return  # the import system reading a module or its bytecode; statecache its own files
    codes = _user_functions(frame)
    if get_ident() != _MAIN:
        codes += _waiting_functions()
    elif not codes:
        codes = _library_entry(frame)
    if not codes:
        return
    _busy.on = True
    try:
        path = os.path.abspath(os.fsdecode(os.fspath(path)))
        try:
            st = os.stat(path)
        except OSError:
            st = None  # not there: a file that appears later is a change
        if not _is_data_path(path, st.st_mode if st is not None else 0, codes):
            return
        stamp = stat_stamp(st) if st is not None else None
        for code in codes:
            _READS.setdefault(code, {})[path] = stamp
            _FIRST.setdefault(code, {}).setdefault(path, stamp)
    except (TypeError, ValueError):
        return
    finally:
        _busy.on = False


def in_user_function(frame: Any) -> bool:
    """Whether one of the user's functions is on the stack from ``frame`` up: only then does a
    read outside a block matter (``remember``). A wrapped reader asks it before it works out
    the paths it was given."""
    for _depth in range(_MAX_DEPTH):
        if frame is None:
            return False
        if _is_user_function(frame.f_code):
            return True
        frame = frame.f_back
    return False


def _user_functions(frame: Any) -> list[types.CodeType]:
    codes = []
    for _depth in range(_MAX_DEPTH):
        if frame is None:
            break
        if _is_user_function(frame.f_code):
            codes.append(frame.f_code)
        frame = frame.f_back
    return codes


def _library_entry(frame: Any) -> list[types.CodeType]:
    """For a read with none of the user's functions on the stack: the code of the library
    function that the user's module-level code called, which read it (``np.loadtxt`` in
    ``memo = functools.lru_cache(np.loadtxt); memo("c.txt")``, where the memo's wrapper runs
    in C, with no frame). A key that holds a memo of a library function counts that
    function's reads (``earlier_reads_digest``), as it counts a user function's."""
    below = None
    for _depth in range(_MAX_DEPTH):
        if frame is None:
            return []
        code = frame.f_code
        if not code.co_flags & _FUNCTION and _is_user_file(code.co_filename):
            return [below.f_code] if below is not None and not _is_user_file(below.f_code.co_filename) else []
        below, frame = frame, frame.f_back
    return []


def _waiting_functions() -> list[types.CodeType]:
    """For a read in a worker thread (a ``ThreadPoolExecutor``'s, which runs a lambda or a
    library reader with no frame of the memo that submitted it): the user functions on the
    other threads' stacks now, among them the memo waiting for the worker's result. Those
    running beside it get the read too: a key that counts a file more misses more, never
    restores a stale value."""
    me = get_ident()
    found: list[types.CodeType] = []
    for ident, top in sys._current_frames().items():
        if ident != me:
            found += _user_functions(top)
    return found


def _is_user_function(code: types.CodeType) -> bool:
    return bool(code.co_flags & _FUNCTION) and _is_user_file(code.co_filename) and code.co_name not in _INLINE


_data_path_rule: Any = None  # provenance.is_data_path, imported at the first read


def _is_data_path(path: str, mode: int, codes: list[types.CodeType]) -> bool:
    global _data_path_rule
    if _data_path_rule is None:
        from .provenance import is_data_path

        _data_path_rule = is_data_path
    return bool(_data_path_rule(path, _cache_dirs(path, codes), mode=mode))


_OWN_READ_ENDINGS = (ENTRY_SUFFIX, LOCK_SUFFIX, USAGE_FILE)


def _cache_dirs(path: str, codes: list[types.CodeType]) -> list[str]:
    """The cache directories ``path`` may be in, when its name is one statecache gives its own
    files (an entry a cached_setup hit loads, its lock): ``STATECACHE_DIR`` and the default
    beside each function's file. Any other name needs none: this runs on every read of a
    user function, so the names statecache reads back (entry, lock, usage index) are tested
    by their ending first, and only those by the layout's rules."""
    if not path.endswith(_OWN_READ_ENDINGS):
        return []
    base = os.path.basename(path)
    if not (is_own_in_name_dir(base) or is_own_top(base)):
        return []
    from .._config import env_dir
    from .._errors import ConfigError
    from .project import default_cache_dir

    try:
        found = [env_dir()]
    except ConfigError:  # a NUL byte in STATECACHE_DIR: the engine reports it
        found = []
    found += [default_cache_dir(code.co_filename) for code in codes]
    return [d for d in dict.fromkeys(found) if d]


def _is_user_file(filename: str) -> bool:
    hit = _USER_FILES.get(filename)
    if hit is None:
        from .provenance import is_user_file

        hit = _USER_FILES[filename] = is_user_file(filename)
    return hit
