"""The records of the data files and folders a block read, and the check of each at a lookup.

A record is made from what the block saw (``key.files``): a file's size, stat stamp and
content digest (``file_record``), a folder's listing (``listing_record``). A later lookup
re-checks it wherever the file may be read now (``changed_record``): stat first, content
only when the stat changed; a file the block only looked at by its answer (``key.looks``).
"""

from __future__ import annotations

import os
import time

from .stamps import stat_stamp

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_RACY_NS = 2_000_000_000  # coarser than any filesystem's mtime granularity


def record_stamp(record: dict[str, Any]) -> tuple[Any, ...]:
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

    warn(f"statecache: {short_path(derived[-1])!r} was written by the block where it was computed, "
         "in another copy of the project; a hit here does not write it (STATECACHE_REFRESH=1 "
         "computes the block here)")
    return True


def _changed_at(record: dict[str, Any], path: str) -> str | None:
    """Whether the file or directory at ``path`` still matches ``record``: its content or
    listing, and what its stats and access checks answered (``looks``), if it was looked at."""
    looked = record.get("looked")
    if record.get("stat_only") and isinstance(looked, dict):
        from .looks import looked_changed

        return looked_changed(looked, path, short_path(path))
    changed = _content_changed(record, path)
    if changed is None and isinstance(looked, dict):
        from .looks import looked_changed

        return looked_changed(looked, path, short_path(path))
    return changed


def _content_changed(record: dict[str, Any], path: str) -> str | None:
    if record["kind"] == "missing":
        return f"file {short_path(path)} appeared" if os.path.exists(path) else None
    if record["kind"] == "output":
        return None if os.path.isfile(path) else f"{short_path(path)!r}, which the block wrote, is gone"
    if record["kind"] == "dir":
        now = listing_record(path)
        if now is None:
            return f"directory {short_path(path)} is gone"
        return None if now["digest"] == record["digest"] else f"directory {short_path(path)} changed"
    try:
        st = os.stat(path)
    except OSError:
        return f"file {short_path(path)} is gone"
    if stat_stamp(st) == record_stamp(record) and not record.get("racy"):
        return None
    if st.st_size != record["size"]:
        return f"file {short_path(path)} changed"
    from .hashing import file_digest

    try:
        digest = file_digest(path)
    except OSError as exc:  # unreadable now: a miss, and the body's own open() says why
        return f"file {short_path(path)} cannot be read ({exc.strerror or exc})"
    return None if digest == record["digest"] else f"file {short_path(path)} changed"


def short_path(path: str) -> str:
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
