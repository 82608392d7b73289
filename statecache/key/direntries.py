"""The entries of ``os.scandir`` while a block records: what their ``stat()`` and type tests answer.

``os.DirEntry.stat()`` stats from C, past the ``os.stat`` wrapper, and raises no audit event;
``is_file()`` and ``is_dir()`` answer from the listing itself. So while a block records,
``os.scandir`` of a path (not of a descriptor) yields stand-ins that tell ``look`` the entry's
path and the frame that asked before answering as the entry does: the newest file by
``e.stat().st_mtime`` or the files kept by their size are then inputs by that answer
(``key.looks``). The standard library's own listings (``os.walk``, ``glob``, ``shutil``,
whose listings are recorded) get the entries themselves, at no cost; a type test counts when
the user's code asks it. A stand-in is an ``os.DirEntry`` to
``isinstance`` and to ``os.fspath``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: look(path, frame, type_only): tell the recorder of a stat (the whole answer, judged by the
#: frame that asked) or, with type_only, of a type test
Look = Callable[[Any, Any, bool], None]


def wrap_scandir(scandir: Callable[..., Any], recording: Callable[[], bool], look: Look,
                 by_stdlib: Callable[[Any], bool]) -> Callable[..., Any]:
    """``os.scandir`` whose iterator, made while ``recording()`` for a caller that is not the
    standard library (``by_stdlib(frame)``: ``os.walk``, ``glob`` and ``shutil`` hand on names,
    not entries, and their listings are recorded), yields stand-ins; it returns and raises what
    ``scandir`` does otherwise."""

    @functools.wraps(scandir)
    def listed(*args: Any, **kwargs: Any) -> Any:
        found = scandir(*args, **kwargs)
        if isinstance(args[0] if args else kwargs.get("path"), int) or not recording():
            return found  # a descriptor's entries have no path to look at
        if by_stdlib(sys._getframe(1)):
            return found
        return SeenScandir(found, look)

    return listed


class SeenScandir:
    """The iterator of ``os.scandir``, yielding a ``SeenEntry`` for each of its entries."""

    __slots__ = ("_found", "_look")

    def __init__(self, found: Any, look: Look) -> None:
        self._found, self._look = found, look

    def __iter__(self) -> Iterator[SeenEntry]:
        return self

    def __next__(self) -> SeenEntry:
        return SeenEntry(next(self._found), self._look)

    def __enter__(self) -> SeenScandir:
        self._found.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._found.__exit__(*exc)

    def close(self) -> None:
        self._found.close()


class SeenEntry:
    """One ``os.DirEntry``, which tells ``look`` of each stat and of the user's type tests."""

    __slots__ = ("_entry", "_look")

    def __init__(self, entry: os.DirEntry[Any], look: Look) -> None:
        self._entry, self._look = entry, look

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(e, os.DirEntry), as for the entry itself
        return type(self._entry)

    @property
    def name(self) -> Any:
        return self._entry.name

    @property
    def path(self) -> Any:
        return self._entry.path

    def inode(self) -> int:
        return self._entry.inode()

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        self._told(sys._getframe(1), False)
        return self._entry.stat(follow_symlinks=follow_symlinks)

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        self._told(sys._getframe(1), True)
        return self._entry.is_dir(follow_symlinks=follow_symlinks)

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        self._told(sys._getframe(1), True)
        return self._entry.is_file(follow_symlinks=follow_symlinks)

    def is_symlink(self) -> bool:
        self._told(sys._getframe(1), True)
        return self._entry.is_symlink()

    def __getattr__(self, name: str) -> Any:  # is_junction() from 3.12, and what may come
        return getattr(self._entry, name)

    def __fspath__(self) -> Any:
        return self._entry.__fspath__()

    def __repr__(self) -> str:
        return repr(self._entry)

    def _told(self, frame: Any, type_only: bool) -> None:
        try:
            self._look(self._entry.path, frame, type_only)
        except Exception:  # never let bookkeeping break the user's listing
            pass
