"""Data files that a computing checkpoint reads, seen through ``sys.addaudithook``.

The hook is installed at ``import statecache`` (``watch_reads``; audit hooks cannot be
removed): every open for reading goes to ``readlog``, which notes it for the user's functions
on the stack, and the other events cost one comparison while nothing is recording. It records
files opened for reading and directories listed; ``snapshot`` turns the paths into records
(size, mtime, content digest) that a later hit re-checks, stat first and content only when the
stat changed.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import allocate_lock
from collections.abc import Iterable
from typing import Any

from . import readlog
from .stamps import stat_stamp

_recorders: list[FileRecorder] = []
_hook_installed = False
_lock = allocate_lock()
_READ_FLAGS = (os.O_RDONLY, os.O_RDWR)
_RACY_NS = 2_000_000_000  # coarser than any filesystem's mtime granularity


class FileRecorder:
    """Collects the paths opened for reading (and directories listed) while it is active, and
    the files it created or truncated before reading them: those are outputs, not inputs."""

    def __init__(self) -> None:
        # path -> its stat stamp when first opened (None: it did not exist then)
        self.opened: dict[str, tuple[int, ...] | None] = {}
        self.listed: dict[str, None] = {}
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
        from . import readers  # compiled-code readers: wrapped only once something computes

        watch_reads()
        readers.install(note_read, recording)
        with _lock:
            _recorders.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            if self in _recorders:
                _recorders.remove(self)


def recording() -> bool:
    """Whether any checkpoint is recording now: the one question a wrapper asks before it
    looks at the path it was given."""
    return bool(_recorders)


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
    elif _recorders and event in _RECORDED:
        try:
            _heard(event, args)
        except Exception:
            pass


_RECORDED = frozenset({"os.listdir", "os.scandir", "os.mkdir", "os.rename"})


def _heard(event: str, args: tuple[Any, ...]) -> None:
    """The events other than ``open`` and ``sqlite3.connect`` that a recording checkpoint
    needs: listings, directories the block made and files it renamed (its outputs)."""
    if event == "os.mkdir":
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

        if lister(_caller(2)) != IMPORTS:
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
        _note(target, "written")


def _opened(path: Any, mode: str | None, flags: Any) -> None:
    if isinstance(path, int) or path is None:
        return
    made = _recorders and _new_content(path, mode, flags)
    if made:
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
    if _recorders:
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


def note_read(path: Any, listed: bool = False, looked: bool = False) -> None:
    """Tell statecache that a library read ``path`` (or listed it, or only looked at it with a
    stat) outside Python's ``open()``, where no audit event says so: a read counts as one by
    ``open`` does (``_read``); a listing or a look only for the recording checkpoints."""
    if listed or looked:
        if _recorders:
            _note(path, "listed" if listed else "opened")
    else:
        _read(path, _caller(1))


def _note_database(database: Any, frame: Any) -> None:
    """sqlite3 opens its database from C: the ``sqlite3.connect`` event names it (a
    ``file:`` URI by its path; an in-memory database is no file)."""
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    if not isinstance(database, (str, os.PathLike)):
        return
    path = os.fspath(database)
    if path.startswith("file:"):
        path = path[5:].split("?", 1)[0]
        path = path[2:] if path.startswith("//") else path
    if path and path != ":memory:" and "mode=memory" not in os.fspath(database):
        _read(path, frame)


def _note(path: Any, kind: str) -> None:
    try:
        given = os.fsdecode(os.fspath(path))
        path = os.path.abspath(given)
    except (TypeError, ValueError):
        return
    if not os.path.isabs(given):
        for recorder in list(_recorders):
            recorder.relative.setdefault(path, _from_start(recorder, given, path))
    stamp: tuple[int, ...] | None | bool = False  # False: not looked up yet
    for recorder in list(_recorders):
        if kind in ("opened", "listed") and path in recorder.created:
            recorder.created[path] = True  # read back what it made: its absence was an input
            if kind == "listed":
                continue  # a listing of a folder it made shows its own outputs
        if kind == "opened" and path in recorder.written:
            recorder.written[path] = True
            continue
        seen = getattr(recorder, kind)
        if kind == "created":
            seen.setdefault(path, False)
            continue
        if path in seen or (kind in ("opened", "written") and (path in recorder.written or path in recorder.opened)):
            continue  # the first of its opens decides: an input read first, or an output
        if kind == "opened" and stamp is False:
            # The stat before the first read (audit events come before the open), so that a
            # file changed while the block runs is not recorded as what the block read.
            try:
                stamp = stat_stamp(os.stat(path))
            except (OSError, ValueError):
                stamp = None
        seen[path] = None if stamp is False else stamp


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


def _record_stamp(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record.get("size"), record.get("mtime_ns"), record.get("ctime_ns"), record.get("inode"))


def file_record(path: str) -> dict[str, Any] | None:
    """size, mtime and content digest of a regular file; a missing one is recorded as such
    (a file that appears later is a change); None for anything else (a pipe, a device)."""
    from .hashing import file_digest

    try:
        st = os.stat(path)
    except OSError:
        return {"path": path, "kind": "missing"}
    import stat as stat_mod

    if not stat_mod.S_ISREG(st.st_mode):
        return None
    digest = file_digest(path)
    return {
        "path": path,
        "kind": "file",
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "digest": digest,
        # a file modified this close to its recording may be rewritten within the same mtime
        # tick (same size, same mtime, new content): such a record is always re-read (like git's
        # "racily clean" entries)
        "racy": time.time_ns() - st.st_mtime_ns < _RACY_NS,
    }


def listing_record(path: str) -> dict[str, Any] | None:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return None
    from .hashing import digest

    return {"path": path, "kind": "dir", "digest": digest(*(n.encode("utf-8", "surrogateescape") for n in names)).hex()}


def snapshot(recorder: FileRecorder, cache_dirs: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Records of the data files and directories the recorder saw, each placed in the project
    (so a clone or a copy checks its own files), plus inner hits' records."""
    cache_dirs = list(cache_dirs)
    records = seen_records(recorder, cache_dirs)
    if recorder.written:
        from .outputs import output_records

        records.update(output_records(recorder.written, cache_dirs, records))
    from .project import inside, project_root

    cache_parent = os.path.dirname(os.path.abspath(cache_dirs[0])) if cache_dirs else None
    root = project_root()
    for (path, _kind), record in records.items():
        in_cache_parent = inside(path, cache_parent) if cache_parent is not None else None
        if in_cache_parent is not None:
            # a project copied with its cache (cp -r exp1 exp2) checks its own files
            record["project_path"] = in_cache_parent
        in_root = inside(path, root)
        if in_root is not None:
            # a clone of the project elsewhere (sharing the cache) checks its own files
            record["root_path"] = in_root
        if path in recorder.relative:
            # open("data.csv") from another working directory is another file
            record["relative"] = recorder.relative[path]
    for record in recorder.extra:
        records.setdefault((record["path"], record["kind"]), record)
    from .readers import warn_unseen

    warn_unseen()
    return list(records.values())


def seen_records(recorder: FileRecorder, cache_dirs: Iterable[str] = ()) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, kind) -> the record of each data file and directory the recorder saw, by
    absolute path only: what the code read, a file it found missing, a file it made where
    nothing was and read back (missing), a listing. The one rule of what a read leaves to be
    checked later, for a checkpoint (``snapshot``) and for live mode's statements."""
    from .provenance import is_data_path

    cache_dirs = list(cache_dirs)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for path, before in recorder.opened.items():
        if is_data_path(path, cache_dirs):
            # missing when first opened (a failed read, made by the block later): the run saw
            # no file, whatever is there now
            record: dict[str, Any] | None = (
                file_record(path) if before is not None else {"path": path, "kind": "missing"})
            if record is None:
                continue
            if record["kind"] == "file" and before is not None and before != _record_stamp(record):
                # Changed after the block first opened it (an editor saved it meanwhile, or the
                # block rewrote what it had read): the content now is not what the block read,
                # so no content can match; every later run recomputes until a run sees it stable.
                record["digest"] = "changed while the block ran"
                record["racy"] = True
            records[(path, record["kind"])] = record
    for path, read_back in recorder.created.items():
        if read_back and is_data_path(path, cache_dirs):
            records.setdefault((path, "missing"), {"path": path, "kind": "missing"})
    for path in recorder.listed:
        if is_data_path(path, cache_dirs):
            record = listing_record(path)
            if record is not None:
                records[(path, "dir")] = record
    return records


def record_locations(record: dict[str, Any], cache_dir: str | None = None) -> list[str]:
    """Where a record's file may be read now, the recorded absolute path first: a file inside
    the project is also looked for below the project root of this process (a clone elsewhere)
    and below the parent of ``cache_dir``, the place of the cache now (a project copied with
    its cache), since a path derived from ``__file__`` reads the copy and a path written out
    in full the original."""
    from .project import project_root

    found = [str(record["path"])]
    in_cache_parent, in_root = record.get("project_path"), record.get("root_path")
    if cache_dir is not None and isinstance(in_cache_parent, str):
        found.append(os.path.join(os.path.dirname(os.path.abspath(cache_dir)), in_cache_parent))
    if isinstance(in_root, str):
        found.append(os.path.join(project_root(), in_root))
    return list(dict.fromkeys(found))


def changed_record(record: dict[str, Any], cache_dir: str | None = None) -> str | None:
    """None when the file or directory still matches its record, else a few words why not.
    ``cache_dir`` is where the entry holding the record is now. Every place the file may be
    read from now (see ``record_locations``) that exists must match; a file found at none of
    them is gone (the recorded path need not exist: a clone on another machine has its own).
    A file opened by a relative path is checked where that path leads now.

    A stat that matches (size, mtime, ctime and inode) is trusted; otherwise the content
    digest decides, so a clone whose files have other mtimes still matches by content (a
    record without ctime or inode, from an older version, is re-read).
    """
    places = record_locations(record, cache_dir)
    if record["kind"] == "output" and _written_elsewhere(record, places):
        return None
    relative = record.get("relative")
    if isinstance(relative, str):
        target = os.path.abspath(relative)
        if target not in places:
            return f"working directory changed ({relative} is now {target})"
        return _changed_at(record, target)
    if record["kind"] == "missing":
        return next(filter(None, (_changed_at(record, place) for place in places)), None)
    if record["kind"] == "output":  # found at any place: a script reads it from one of them
        return None if any(map(os.path.isfile, places)) else _changed_at(record, places[0])
    present = [place for place in places if os.path.lexists(place)]
    if not present:
        return _changed_at(record, places[0])  # gone
    return next(filter(None, (_changed_at(record, place) for place in present)), None)


def _written_elsewhere(record: dict[str, Any], places: list[str]) -> bool:
    """Whether an output record comes from a run in another copy of the project (another
    clone, machine or a shared remote: its recorded path is none of the places the file is
    looked for here). Its output was never written here, so its absence is no change: a miss
    would keep every block that writes a file from being shared. Said once, naming it."""
    derived = places[1:]
    if not derived or record["path"] in derived or any(map(os.path.isfile, derived)):
        return False
    from .._warnings import warn

    warn(f"statecache: {_short(derived[-1])!r} was written by the block where it was computed, "
         "in another copy of the project; a hit here does not write it (STATECACHE_REFRESH=1 "
         "computes the block here)")
    return True


def _changed_at(record: dict[str, Any], path: str) -> str | None:
    """Whether the file or directory at ``path`` still matches ``record``."""
    if record["kind"] == "missing":
        return f"file {_short(path)} appeared" if os.path.exists(path) else None
    if record["kind"] == "output":
        return None if os.path.isfile(path) else f"{_short(path)!r}, which the block wrote, is gone"
    if record["kind"] == "dir":
        now = listing_record(path)
        if now is None:
            return f"directory {_short(path)} is gone"
        return None if now["digest"] == record["digest"] else f"directory {_short(path)} changed"
    try:
        st = os.stat(path)
    except OSError:
        return f"file {_short(path)} is gone"
    if stat_stamp(st) == _record_stamp(record) and not record.get("racy"):
        return None
    if st.st_size != record["size"]:
        return f"file {_short(path)} changed"
    from .hashing import file_digest

    try:
        digest = file_digest(path)
    except OSError as exc:  # unreadable now: a miss, and the body's own open() says why
        return f"file {_short(path)} cannot be read ({exc.strerror or exc})"
    return None if digest == record["digest"] else f"file {_short(path)} changed"


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def expand_files_pattern(pattern: str, base: str) -> list[str]:
    """The files an explicit ``files=`` pattern names, sorted: a glob's matches (relative to
    ``base``), and for a directory every file under it, recursively, so that ``files=["data"]``
    keys on the folder's contents instead of adding nothing. Cache directories are left out
    (a key cannot depend on the entries it is stored beside). An empty result is "no match"."""
    import glob

    from ..store.layout import CACHE_DIR_NAME

    full = os.path.join(base, os.path.expanduser(pattern))
    found: set[str] = set()
    for match in glob.glob(full, recursive=True):
        if os.path.isdir(match):
            for root, dirs, names in os.walk(match):
                dirs[:] = [d for d in dirs if d != CACHE_DIR_NAME]
                found.update(os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n)))
        elif os.path.isfile(match):
            found.add(match)
    return sorted(found)
