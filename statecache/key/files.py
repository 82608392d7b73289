"""Data files that a computing checkpoint reads, seen through ``sys.addaudithook``.

The hook is installed at ``import statecache`` (``watch_reads``; audit hooks cannot be
removed): every open for reading goes to ``readlog``, which notes it for the user's functions
on the stack, and the other events cost one comparison while nothing is recording. It records
files opened for reading, files only looked at (a stat, an access check: ``key.looks``),
directories listed, and the user's modules whose classes an unpickler resolved
(``key.unpickled``); ``snapshot`` turns them into records (``key.seenrecords``,
``key.filerecords``) that a later hit re-checks. What the block saw is taken when it first saw it: the stat before its first
read, the answer of a look, a folder's listing, so that a file the block consumes (reads, then
removes) or a folder it lists, then empties or writes into, is no record of what is there after.
"""

from __future__ import annotations

import os
import stat
import sys
from _thread import _local, allocate_lock
from collections.abc import Iterable

from . import readlog, workers
from .filerecords import (  # noqa: F401  (the records' names, as callers know them)
    changed_record,
    expand_files_pattern,
    file_record,
    listing_record,
    record_locations,
    record_stamp,
)
from .stamps import stat_stamp

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_recorders: list[FileRecorder] = []
_hook_installed = False
_lock = allocate_lock()
_READ_FLAGS = (os.O_RDONLY, os.O_RDWR)
_os_stat = os.stat  # the unwrapped stat (``readers`` wraps os.stat): the recorder's own looks
_listing = _local()  # on while the recorder lists a folder itself: its own listdir is not the block's
looks: Any = None  # key.looks, loaded by the first recording (``import statecache`` stays light)


class FileRecorder:
    """Collects the paths opened for reading (and directories listed) while it is active, and
    the files it created or truncated before reading them: those are outputs, not inputs."""

    def __init__(self) -> None:
        # path -> its stat stamp when first opened or looked at (None: it did not exist then)
        self.opened: dict[str, tuple[int, ...] | None] = {}
        self.contents: set[str] = set()  # those of ``opened`` whose content a read reached
        # path -> what its stats and access checks answered (``looks.answers``), the first time
        self.looked: dict[str, dict[str, Any]] = {}
        # folder -> its listing record when first listed (None: no data folder, or unlistable)
        self.listed: dict[str, dict[str, Any] | None] = {}
        # path -> its record, made when the block first opened it (``take_now``)
        self.taken: dict[str, dict[str, Any]] = {}
        # (module, qualname) of every global an unpickler resolved while recording
        self.unpickled: dict[tuple[str, str], None] = {}
        # made or emptied by the block before any read of it -> whether the block read it back:
        # then it is the block's own scratch, else an output that a hit must find
        self.written: dict[str, bool | None] = {}
        # made by the block where nothing was (an append, "x", O_CREAT) -> whether the block
        # read it back: then the run relied on its absence, as on a file it read, and a later
        # run with the file there is another input (a log only appended to is no input)
        self.created: dict[str, bool] = {}
        self.relative: dict[str, str] = {}  # absolute path -> the relative path it was opened by
        try:  # relative paths count from here, where the lookup resolves them (not after a chdir)
            self.cwd: str | None = os.getcwd()
        except OSError:
            self.cwd = None
        self.extra: list[dict[str, Any]] = []  # records of inner checkpoints that were hits

    def __enter__(self) -> FileRecorder:
        global looks
        # loaded now, not by the hook while recording (a module's import would be a read):
        # compiled-code readers, wrapped only once something computes, and what records use
        from . import hashing, looks, readers  # noqa: F401

        watch_reads()
        readers.install(note_read, recording)
        with _lock:
            _recorders.append(self)
        workers.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _recorders:
            for path, kind, looked, stamp in workers.leave():  # what its forked workers saw
                _note(path, kind, looked, stamp)
        with _lock:
            if self in _recorders:
                _recorders.remove(self)

    def saw_anything(self) -> bool:
        """Whether anything was seen that ``seen_records`` would turn into a record."""
        return bool(self.opened or self.listed or self.unpickled)

    def forget(self) -> None:
        """Drop what was seen so far and keep recording (live mode, after each statement)."""
        for seen in (self.opened, self.contents, self.looked, self.listed, self.taken, self.unpickled,
                     self.relative):
            seen.clear()


def recording() -> bool:
    """Whether any checkpoint is recording now, in this process or in one it was forked from
    (a worker of the block: ``workers.forward``): the one question a wrapper asks before it
    looks at the path it was given, and the audit hook before it notes anything."""
    return bool(_recorders) or workers.parent_recording()


def add_to_active(records: Iterable[dict[str, Any]]) -> None:
    """Tell every recording checkpoint about files an inner checkpoint depended on (a hit)."""
    records = list(records)
    for recorder in list(_recorders):
        recorder.extra.extend(records)


def watch_reads() -> None:
    """Install the audit hook now (once): from here on the reads of the user's functions are
    noted (``readlog``), so that a memo filled before a block counts in its key."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
        from .importwatch import after_import

        after_import("sqlite3", _watch_sqlite)  # a connection made above a block may ATTACH in it


def _watch_sqlite(module: Any) -> None:
    from .databases import wrap_connect

    wrap_connect(_note_database)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The audit hook, called for every audited event of the process (``id()`` is one), so
    one test for most. It never raises: an exception here would fail the user's own open
    (or the interpreter's open of the main script, when statecache is imported by a
    ``sitecustomize``), so a fault of ours costs a record, never the user's operation."""
    if event == "open":
        try:
            _opened(*args)
        except Exception:
            pass
    elif event == "sqlite3.connect":  # also outside a block: a memo may read the database
        try:
            _note_database(args[0] if args else None, _caller(1))
        except Exception:
            pass
    elif event in _RECORDED and recording():
        try:
            _heard(event, args)
        except Exception:
            pass
    elif event in workers.PROGRAM_EVENTS:
        try:
            workers.started_program(event, args)
        except Exception:
            pass


_RECORDED = frozenset({"os.listdir", "os.scandir", "os.mkdir", "os.rename", "pickle.find_class"})


def _heard(event: str, args: tuple[Any, ...]) -> None:
    """The events other than ``open`` and ``sqlite3.connect`` that a recording checkpoint
    needs: listings, directories the block made and files it renamed (its outputs), and the
    globals an unpickler resolves (the classes of what the block loads: ``key.unpickled``)."""
    if event == "pickle.find_class":
        found = (args[0], args[1])
        for recorder in list(_recorders):
            recorder.unpickled[found] = None
    elif event == "os.mkdir":
        if _no_dir_fd(args[2:3]) and not _exists(args[0]):
            _note(args[0], "created")  # what it then finds inside is its own
    elif event == "os.rename":
        if _no_dir_fd(args[2:4]):
            _renamed(args[0], args[1])
    else:
        path = args[0] if args else "."
        if isinstance(path, int):
            return
        path = path if path is not None else "."
        from .listers import IMPORTS, lister

        if not getattr(_listing, "on", False) and lister(_caller(2)) != IMPORTS:
            _note(path, "listed")


def _no_dir_fd(fds: tuple[Any, ...]) -> bool:
    """The paths of the event are not relative to a directory descriptor (-1 or None: none)."""
    return all(fd is None or fd == -1 for fd in fds)


def _renamed(source: Any, target: Any) -> None:
    """A file the block wrote, moved into place (``os.replace(tmp, final)``): the target is
    the block's output now, not the scratch name it was written under."""
    try:
        source = os.path.abspath(os.fsdecode(os.fspath(source)))
    except (TypeError, ValueError):
        return
    if any(source in recorder.written for recorder in _recorders):
        take_now(target)  # replaced by the block's output: what it read there, if it did
        _note(target, "written")


def _opened(path: Any, mode: str | None, flags: Any) -> None:
    if isinstance(path, int) or path is None:
        return
    made = recording() and _new_content(path, mode, flags)
    if made:
        if made == "emptied":
            take_now(path)  # if the block read it before: what it read, before it is rewritten
        _note(path, "written")
        if made == "created":
            _note(path, "created")
            if (mode is not None and "+" in mode) or (
                    mode is None and isinstance(flags, int) and flags & os.O_ACCMODE == os.O_RDWR):
                _note(path, "opened")  # readable from this very open: read back
        return
    if mode is not None:
        if "r" not in mode and "+" not in mode:
            return
    elif isinstance(flags, int) and (flags & os.O_ACCMODE) not in _READ_FLAGS:
        return
    _read(path, _caller(2))


def _read(path: Any, frame: Any) -> None:
    """A read of ``path`` by the code of ``frame``: the one rule for a read the process makes,
    seen as an ``open`` or told by a compiled reader (``note_read``, sqlite3): noted for the
    user's functions on the stack, which may be memos filled before a block
    (``readlog.remember``), and for the recording checkpoints."""
    readlog.remember(path, frame)
    if recording():
        _note(path, "opened")


def _caller(depth: int) -> Any:
    """The frame ``depth`` levels up, or None when the stack is shallower (an open made by
    the interpreter itself, such as the main script's, has no Python caller)."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None


def _new_content(path: Any, mode: str | None, flags: Any) -> str | None:
    """``"emptied"`` when this open empties the file whatever was there (``"w"``,
    ``O_TRUNC``), ``"created"`` when it makes one where nothing was (``"x"``, an append or
    ``O_CREAT``), else None: what the block reads from such a file afterwards is its own
    output. An append to an existing file keeps what was there, which may be an input, and an
    exclusive create of an existing file fails, so the block reads the file as it is."""
    if mode is not None:
        if "w" in mode:
            return "emptied"
        if "x" in mode or "a" in mode:
            return None if _exists(path) else "created"
        return None
    if not isinstance(flags, int):
        return None
    if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY and not flags & os.O_EXCL:
        return "emptied"
    if flags & os.O_CREAT and not _exists(path):
        return "created"
    return None


def _exists(path: Any) -> bool:
    try:
        return os.path.lexists(path)
    except (TypeError, ValueError):
        return True


def note_read(path: Any, listed: bool = False, looked: bool | str = False) -> None:
    """Tell statecache that a library read ``path`` (or listed it, or only looked at it: a
    stat or an access check, ``looked`` saying what it answered, one of ``looks``' aspects)
    outside Python's ``open()``, where no audit event says so: a read counts as one by
    ``open`` does (``_read``); a listing or a look only for the recording checkpoints."""
    if listed:
        if recording():
            _note(path, "listed")
    elif looked:
        if recording():
            _note(path, "opened", looks.STAT if looked is True else looked)
    else:
        _read(path, _caller(1))


def _note_database(database: Any, frame: Any) -> None:
    """sqlite3 opens its database from C: the ``sqlite3.connect`` event names it, and its
    write-ahead log is read with it (``databases.database_files``)."""
    from .databases import database_files

    for i, path in enumerate(database_files(database)):
        _read(path, frame)
        if i and _recorders:  # the log: taken before the connection opens it
            take_now(path)


def take_now(path: Any) -> None:
    """Make the record of ``path`` now, for the recording checkpoints that read it and have
    none yet: before the code opens a file whose open changes its stat and not its content
    (a write-ahead log), or rewrites a file it read (a config saved back): what it read is
    then known, and a rewrite with the same content is no change."""
    try:
        path = os.path.abspath(os.fsdecode(os.fspath(path)))
    except (TypeError, ValueError):
        return
    record: dict[str, Any] | None | bool = False
    for recorder in list(_recorders):
        if path in recorder.opened and path not in recorder.taken:
            if record is False:
                record = file_record(path)
            if isinstance(record, dict) and record["kind"] == "file":
                recorder.taken[path] = record


def _note(path: Any, kind: str, looked: str | None = None, stamp: tuple[int, ...] | None | bool = False) -> None:
    """Note ``path`` for every recording checkpoint: ``kind`` is "opened" (read, or only looked
    at when ``looked`` says what the look answered), "listed", "written" or "created";
    ``stamp``: the stat a forked worker took before its read (False: take it now)."""
    try:
        given = os.fsdecode(os.fspath(path))
        path = os.path.abspath(given)
    except (TypeError, ValueError):
        return
    workers.forward(path, kind, looked)
    if not os.path.isabs(given):
        for recorder in list(_recorders):
            recorder.relative.setdefault(path, _from_start(recorder, given, path))
    first = _First(path, stamp)
    for recorder in list(_recorders):
        if kind in ("opened", "listed") and path in recorder.created:
            recorder.created[path] = True  # read back what it made: its absence was an input
            if kind == "listed" or first.is_folder():
                # a listing of a folder it made shows its own outputs, and an open of one
                # (shutil.rmtree's, TemporaryDirectory's cleanup) reads nothing of the user's
                continue
        if kind == "opened" and path in recorder.written:
            recorder.written[path] = True
            continue
        if kind == "created":
            recorder.created.setdefault(path, False)
        elif kind == "listed":
            if path not in recorder.listed:
                recorder.listed[path] = first.listing()
        elif kind == "written":
            if path not in recorder.written and path not in recorder.opened:
                recorder.written[path] = None  # the first of its opens decides: input or output
        else:
            if path not in recorder.opened:
                recorder.opened[path] = first.stamp()
            if looked is None:
                recorder.contents.add(path)
            else:
                first.look(recorder.looked.setdefault(path, {}), looked)


class _First:
    """What ``path`` is now, looked up once for all the recording checkpoints that see it
    first: taken before the block's own open (audit events come before it) or right after its
    look or listing, so that a file changed, removed or added to while the block runs is not
    recorded as what the block saw. The unwrapped stat: these looks are not the block's."""

    def __init__(self, path: str, stamp: tuple[int, ...] | None | bool = False) -> None:
        self.path = path
        self._stat: Any = False  # False: not looked up yet; None: not there
        self._stamp = stamp  # a worker's, taken before its read (False: none)

    def stat(self) -> os.stat_result | None:
        if self._stat is False:
            try:
                self._stat = _os_stat(self.path)
            except (OSError, ValueError):
                self._stat = None
        return self._stat

    def is_folder(self) -> bool:
        found = self.stat()
        return found is not None and stat.S_ISDIR(found.st_mode)

    def stamp(self) -> tuple[int, ...] | None:
        if self._stamp is not False:
            return self._stamp  # type: ignore[return-value]
        st = self.stat()
        return stat_stamp(st) if st is not None else None

    def look(self, seen: dict[str, Any], what: str) -> None:
        if not looks.answered(seen, what):
            looks.merge(seen, looks.answers(self.path, what, self.stat()))

    def listing(self) -> dict[str, Any] | None:
        from .provenance import Kind, classify

        if classify(self.path) is not Kind.USER:
            return None  # not data (seen_records leaves it out): no listing of it
        _listing.on = True
        try:
            return listing_record(self.path)
        finally:
            _listing.on = False


def _from_start(recorder: FileRecorder, given: str, path: str) -> str:
    """The relative path ``given`` (which leads to ``path`` now) as seen from the directory the
    block started in, which is where the next lookup resolves it: ``d.txt`` opened after
    ``os.chdir("sub")`` is ``sub/d.txt``."""
    if recorder.cwd is None:
        return given
    try:
        if os.getcwd() == recorder.cwd:
            return given
        return os.path.relpath(path, recorder.cwd)
    except (OSError, ValueError):  # the directory is gone, or another drive
        return given


def snapshot(recorder: FileRecorder, cache_dirs: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The records of what the recorder saw (``key.seenrecords``), for the entry."""
    from .seenrecords import snapshot as records_of

    return records_of(recorder, cache_dirs)


def seen_records(recorder: FileRecorder, cache_dirs: Iterable[str] = ()) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, kind) -> the record of each data file and directory the recorder saw
    (``key.seenrecords``), for a checkpoint and for live mode's statements."""
    from .seenrecords import seen_records as records_of

    return records_of(recorder, cache_dirs)
