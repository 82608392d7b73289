"""The files an SQLite database is read from, which SQLite opens from C, past Python's ``open``.

The ``sqlite3.connect`` audit event names the main file; ``database_files`` adds its
write-ahead log (``d.db-wal``), where a WAL-mode database keeps the rows committed since its
last checkpoint, so a writer that keeps its connection open changes what a read returns
without touching ``d.db``. SQLite run as root changes the log's owner at each open (its
ctime moves, not its content): so the log's record is taken before the connection opens it
(``key.files`` ``take_now``), and a ctime alone moved since is settled by its content. ``wrap_connect`` has ``sqlite3.connect`` give each connection it
makes an authorizer (the ``sqlite3.connect/handle`` event comes too early to set one) that hears ``ATTACH DATABASE``, which SQL runs and no
audit event names. The authorizer is asked at statement preparation only (not per row), and a
connection's own ``set_authorizer`` replaces it: its attached files are then not seen. A
``connect`` bound before (``from sqlite3 import connect`` above ``import statecache``) is
pointed at the wrapper at the first computing block (``key.rebinding``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from .readernames import READER_WRAPPER
from .rebinding import register

_WATCHED = "__statecache_watched__"

_SQLITE_ATTACH = 24  # sqlite3.SQLITE_ATTACH, without importing sqlite3 here


def database_files(database: Any) -> list[str]:
    """The files a connection to ``database`` (a path or a ``file:`` URI) reads: the database
    and then its write-ahead log; none for an in-memory or temporary one."""
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    if not isinstance(database, (str, os.PathLike)):
        return []
    given = os.fspath(database)
    if not isinstance(given, str):
        return []
    path = given
    if path.startswith("file:"):
        path = path[5:].split("?", 1)[0]
        path = path[2:] if path.startswith("//") else path
    if not path or path == ":memory:" or "mode=memory" in given:
        return []
    return [path, path + "-wal"]


def watch_connection(connection: Any, read: Callable[[Any, Any], None]) -> None:
    """Have ``connection`` tell ``read(database, frame)`` each database an ``ATTACH`` opens
    (as the ``sqlite3.connect`` event tells the main one)."""

    def authorize(action: int, name: Any, *rest: Any) -> int:
        if action == _SQLITE_ATTACH:
            try:
                read(name, sys._getframe(1))
            except Exception:  # never let bookkeeping deny the user's statement
                pass
        return 0  # SQLITE_OK

    try:
        connection.set_authorizer(authorize)
    except Exception:  # a closed or foreign connection object
        pass


def wrap_connect(read: Callable[[Any, Any], None]) -> None:
    """Replace ``connect`` of ``sqlite3`` and ``sqlite3.dbapi2`` (loaded now) by one wrapper
    that watches the connection it returns (``watch_connection``), and returns and raises what
    ``connect`` does; it pickles by name as ``sqlite3.connect``. A ``connect`` taken from the
    module before this is rebound where ``key.rebinding`` looks, and is not watched elsewhere."""
    made: dict[int, Callable[..., Any]] = {}
    for name in ("sqlite3.dbapi2", "sqlite3"):
        module = sys.modules.get(name)
        connect = getattr(module, "connect", None)
        if connect is None or getattr(connect, _WATCHED, False):
            continue
        if id(connect) not in made:
            made[id(connect)] = _watched_connect(connect, read)
            register(connect, _rebound(connect, made[id(connect)]))
        module.connect = made[id(connect)]  # type: ignore[union-attr]


def _watched_connect(connect: Callable[..., Any], read: Callable[[Any, Any], None]) -> Callable[..., Any]:
    @functools.wraps(connect)
    def watched(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        watch_connection(connection, read)
        return connection

    watched.__module__ = "sqlite3"  # where pickle finds this very object
    setattr(watched, _WATCHED, True)
    return watched


def _rebound(connect: Callable[..., Any], watched: Callable[..., Any]) -> Callable[..., Any]:
    """What a name bound to ``connect`` before ``import statecache`` is pointed at: the watched
    connect, marked as statecache's wrapper of ``connect``, so that a key counts ``connect``, as
    it does where nothing was rebound yet (a run whose blocks all hit). ``watched`` itself is
    not marked: it is made at ``import statecache``, and ``key.codegraph`` tells a mark only
    once ``key.readers`` is loaded, so a mark would count it as itself in a run whose blocks
    all hit and as ``connect`` in others; unmarked, it counts as itself in every run."""

    @functools.wraps(connect)
    def rebound(*args: Any, **kwargs: Any) -> Any:
        return watched(*args, **kwargs)

    setattr(rebound, READER_WRAPPER, True)
    return rebound
