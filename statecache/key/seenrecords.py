"""The records a computing block leaves of what it saw, made when it ends (``snapshot``).

``key.files`` hears the reads, looks and listings while the block runs; here they become the
records a later lookup re-checks (``key.filerecords``): a file by its content as first read, a
file only looked at by its answers (``key.looks``), a listing, a missing file, the source of a
user module whose class the block unpickled. Loaded at the first save, not at ``import statecache``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import looks
from .filerecords import file_record, listing_record, record_stamp

if TYPE_CHECKING:
    from .files import FileRecorder


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
    nothing was and read back (missing), a file it only looked at (its answers), a listing,
    the source of a user module whose class it unpickled. The one rule of what a read leaves
    to be checked later, for a checkpoint (``snapshot``) and for live mode's statements."""
    from .provenance import is_data_path

    cache_dirs = list(cache_dirs)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for path, before in recorder.opened.items():
        if is_data_path(path, cache_dirs):
            record = _input_record(recorder, path, before)
            if record is not None:
                records[(path, record["kind"])] = record
    for path, read_back in recorder.created.items():
        if read_back and is_data_path(path, cache_dirs):
            records.setdefault((path, "missing"), {"path": path, "kind": "missing"})
    for path, listing in recorder.listed.items():
        if is_data_path(path, cache_dirs):
            record = listing if listing is not None else listing_record(path)
            if record is not None:
                looked = records.get((path, "dir"), {}).get("looked")
                records[(path, "dir")] = {**record, "looked": looked} if looked else dict(record)
    if recorder.unpickled:
        _add_unpickled_sources(recorder, records, cache_dirs)
    return records


def _input_record(recorder: FileRecorder, path: str, before: tuple[int, ...] | None) -> dict[str, Any] | None:
    """The record of a path the block read or looked at; ``before``: its stamp when first seen."""
    if before is None:
        # missing when first seen (a failed read, made by the block later): the run saw no
        # file, whatever is there now
        return {"path": path, "kind": "missing"}
    looked = recorder.looked.get(path)
    if path not in recorder.contents and looked is not None:
        return looks.stat_only_record(path, before, looked)
    taken = recorder.taken.get(path)
    record = file_record(path) if taken is None else _still_taken(taken)
    if record is None:
        return None
    if record["kind"] == "missing":  # read, then removed or moved away by the block
        size, mtime_ns, ctime_ns, inode = before
        record = {"path": path, "kind": "file", "size": size, "mtime_ns": mtime_ns,
                  "ctime_ns": ctime_ns, "inode": inode, "digest": ""}
    as_read = taken is not None and record_stamp(taken) == before and record["digest"] == taken["digest"]
    if not record["digest"] or (before != record_stamp(record) and not as_read):
        # Changed or gone since the block first opened it (an editor saved it meanwhile, the
        # block rewrote or consumed what it had read): what is there now is not what the block
        # read, so no content can match; every later run recomputes until a run sees it stable.
        record.update(digest="changed while the block ran", racy=True)
    if looked:
        extra = looks.beyond_content(looked)
        if extra:
            record["looked"] = extra
    return record


def _still_taken(taken: dict[str, Any]) -> dict[str, Any] | None:
    """A record taken at the first open, if the file's size, mtime and inode still match
    (its ctime may move: see ``take_now``); else the record of what is there now."""
    try:
        st = os.stat(taken["path"])
    except OSError:
        return {"path": taken["path"], "kind": "missing"}
    if (st.st_size, st.st_mtime_ns, st.st_ino) != (taken["size"], taken["mtime_ns"], taken["inode"]):
        return file_record(taken["path"])
    return dict(taken)


def _add_unpickled_sources(recorder: FileRecorder, records: dict[tuple[str, str], dict[str, Any]],
                           cache_dirs: list[str]) -> None:
    """Record, as read, the source file of each user module whose classes the block unpickled
    (``key.unpickled``): an edit of it makes a lookup miss. A file saved after its module was
    loaded is not the code that ran: no content of it can match."""
    from .provenance import is_data_path
    from .unpickled import source_files

    for path, as_loaded in source_files(recorder.unpickled).items():
        if (path, "file") in records or not is_data_path(path, cache_dirs):
            continue
        record = file_record(path)
        if record is None or record["kind"] != "file":
            continue
        if not as_loaded:
            record.update(digest="saved after its module was loaded", racy=True)
        records[(path, "file")] = record
