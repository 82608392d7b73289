"""``os.stat``, ``os.access`` and ``os.scandir``'s entries, which raise no audit event, as looks.

While wrapped, they tell the recorder the files the user's code only looks at
(``os.path.exists``, ``os.path.getmtime``, ``Path.is_file``, ``os.access``,
``DirEntry.stat()``) and what the look answered (``key.looks``). Wrapped once, at the first
computing block (``readers.install``); each wrapper returns and raises what the function does,
and notes nothing while no block records.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from .looks import TYPE, access_aspect, aspect, is_stdlib_frame
from .readernames import READER_WRAPPER
from .rebinding import register


def _never() -> bool:
    return False


def _nothing(path: Any, listed: bool = False, looked: bool | str = False) -> None:
    pass


_note: Callable[..., None] = _nothing
_recording: Callable[[], bool] = _never
_installed = False
_busy = threading.local()
# linecache stats the modules a traceback or a warning shows: code, which the key covers
_SOURCE_SUFFIXES = (".py", ".pyc", ".pyi", ".pyw")


def install(note: Callable[..., None], recording: Callable[[], bool]) -> None:
    """Wrap the three (once); ``note(path, looked=aspect)`` hears each look while ``recording()``."""
    global _note, _recording, _installed
    _note, _recording = note, recording
    if _installed:
        return
    from .direntries import wrap_scandir

    if sys.version_info < (3, 11):
        import pathlib  # noqa: F401  (its accessor binds os.stat when it loads: the original, wrapped below)

    for name, wrap in (("stat", _wrap_stat), ("access", _wrap_access),
                       ("scandir", lambda f: wrap_scandir(f, _recording_now, _entry_look, is_stdlib_frame))):
        original = getattr(os, name)
        wrapper = wrap(original)
        setattr(wrapper, READER_WRAPPER, True)
        setattr(os, name, wrapper)
        register(original, wrapper)
        _wrap_pathlib_accessor(name, original, wrapper)
    _installed = True


def _wrap_pathlib_accessor(name: str, original: Any, wrapper: Any) -> None:
    """Python 3.10's pathlib calls ``os.stat`` and ``os.scandir`` through the class attributes
    of its ``_NormalAccessor`` (``stat = os.stat``), bound when pathlib loaded (before the
    wrapping: a function bound there later would take the accessor for its path): those too,
    so that ``Path.stat()``, ``Path.exists()`` and ``Path.glob`` are seen there as from 3.11."""
    accessor = getattr(sys.modules.get("pathlib"), "_NormalAccessor", None)
    if isinstance(accessor, type) and accessor.__dict__.get(name) is original:
        setattr(accessor, name, staticmethod(wrapper))


def _recording_now() -> bool:
    return _recording()


def _wrap_stat(stat: Callable[..., Any]) -> Callable[..., Any]:
    """``os.stat`` that notes the path it looks at and what the look answers (``looks.aspect``:
    an existence test, a size, the whole stat), not a descriptor and not statecache's own
    stats."""

    @functools.wraps(stat)
    def looked_at(path: Any, *args: Any, **kwargs: Any) -> Any:
        if _looking(path, kwargs):
            frame = sys._getframe(1)
            _look(path, lambda: aspect(frame))
        return stat(path, *args, **kwargs)

    return looked_at


def _wrap_access(access: Callable[..., Any]) -> Callable[..., Any]:
    """``os.access`` that notes the path it checks and the answer for that mode (a flag file
    that appears is a change)."""

    @functools.wraps(access)
    def checked(path: Any, mode: Any, *args: Any, **kwargs: Any) -> Any:
        if _looking(path, kwargs):
            _look(path, lambda: access_aspect(mode))
        return access(path, mode, *args, **kwargs)

    return checked


def _looking(path: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a stat or access check is one to note: a block records, the path is a path (not
    a descriptor, nor relative to one), and statecache is not looking itself."""
    return (_recording() and not isinstance(path, int) and not getattr(_busy, "on", False)
            and not kwargs.get("dir_fd"))


def _entry_look(path: Any, frame: Any, type_only: bool) -> None:
    """A scandir entry's ``stat()`` (judged by its caller, as ``os.stat``'s is) or a type
    test the user's code asked (a library's walk of a listing it records asks many)."""
    if getattr(_busy, "on", False) or not _recording():
        return
    if type_only:
        if frame is not None and not is_stdlib_frame(frame):
            _look(path, lambda: TYPE)
    else:
        _look(path, lambda: aspect(frame))


def _look(path: Any, what: Callable[[], str | None]) -> None:
    """Tell the recorder of a look at ``path`` whose answer ``what()`` names."""
    _busy.on = True
    try:
        if not os.fsdecode(os.fspath(path)).endswith(_SOURCE_SUFFIXES):
            found = what()
            if found is not None:
                _note(path, looked=found)
    except Exception:
        pass
    finally:
        _busy.on = False
