"""Looking after a cache directory: finding its entries, deleting them safely, and keeping it
under its size cap.

Shared by the command line (``statecache ls/clear/gc``) and by the core, which calls
``after_save`` after every save. Deleting is confined to files whose names the cache itself
produces (``<name>/<32 hex>.sc``, its ``.lock``, writers' temp files) inside a directory that
carries statecache's ``CACHEDIR.TAG``, and an entry is only deleted while holding its per-key lock,
so a writer is never cut short. Readers hold an open descriptor, so an unlink never hurts them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .._config import env_quiet, format_size, validate_name
from .._errors import InvalidNameError
from .layout import (
    CACHEDIR_TAG,
    CACHEDIR_TAG_SIGNATURE,
    RACY_NS,
    USAGE_FILE,
    entry_filename,
    entry_key,
    is_temp_file,
    lock_key,
    lock_path,
    usage_temp_path,
    usage_temp_pid,
)

#: After the cap is passed, evict down to this fraction of it, so that a cache that hovers at the
#: cap is not rescanned on every save.
LOW_WATER = 0.9
#: How long clear/gc wait for an entry's lock before calling it "in use".
LOCK_TIMEOUT = 0.2
#: ``after_save`` re-reads every directory at least this often, to correct any drift.
FULL_RESCAN_SECONDS = 3600.0

@dataclass
class EntryFile:
    """One entry on disk, as seen by a directory scan (no file opened)."""

    name: str
    key: str
    path: str
    size: int
    last_used: float  # the entry's mtime: the core touches it on every hit

    @property
    def lock_path(self) -> str:
        return lock_path(self.path)


@dataclass
class TempFile:
    """A writer's temporary file, ``<name>/.<key>.sc.<pid>.<rand>.tmp``."""

    name: str
    path: str
    size: int
    pid: int


def is_statecache_dir(cache_dir: str) -> bool:
    """Whether ``cache_dir`` holds a ``CACHEDIR.TAG`` written by statecache.

    clear and gc refuse any other directory, so a mistyped ``--dir`` cannot delete anything.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        # non-blocking and regular files only: a FIFO planted as the tag must not hang us
        fd = os.open(os.path.join(cache_dir, CACHEDIR_TAG), flags)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        text = os.read(fd, 4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    finally:
        os.close(fd)
    return text.startswith(CACHEDIR_TAG_SIGNATURE) and "statecache" in text.lower()


def name_dirs(cache_dir: str, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(name, path)`` of every checkpoint directory (only ``names`` when given), sorted;
    symlinks and foreign names skipped."""
    wanted = None if names is None else set(names)
    out = []
    try:
        it = os.scandir(cache_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with it:
        for d in it:
            if d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
                continue
            try:
                validate_name(d.name)
            except InvalidNameError:
                continue
            if wanted is None or d.name in wanted:
                out.append((d.name, d.path))
    out.sort()
    return out


def scan(
    cache_dir: str, names: Iterable[str] | None = None
) -> tuple[list[EntryFile], list[TempFile]]:
    """Every entry (and writers' temp file) under ``cache_dir``, from directory listings only."""
    entries: list[EntryFile] = []
    temps: list[TempFile] = []
    for name, path in name_dirs(cache_dir, names):
        try:
            it = os.scandir(path)
        except OSError:
            continue
        with it:
            for f in it:
                fn = f.name
                try:
                    key = entry_key(fn)
                    if key is not None:
                        if not f.is_file(follow_symlinks=False):
                            continue
                        st = f.stat(follow_symlinks=False)
                        entries.append(EntryFile(name, key, f.path, st.st_size, st.st_mtime))
                    else:
                        pid = is_temp_file(fn)
                        if pid is not None and f.is_file(follow_symlinks=False):
                            temps.append(
                                TempFile(name, f.path, f.stat(follow_symlinks=False).st_size, pid)
                            )
                except FileNotFoundError:
                    continue  # deleted while we listed
    return entries, temps


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there, not probe
        try:
            import psutil
        except ImportError:
            return True  # cannot tell: keep the file
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_entry(
    entry: EntryFile, timeout: float = LOCK_TIMEOUT, only_if_unused: bool = False
) -> str | None:
    """Delete an entry while holding its per-key lock. Returns None when done, else why not:
    "in use" (another process holds the lock: it is computing or writing that entry), "used
    just now" (with ``only_if_unused``: a hit touched it since the scan), or an OS error.

    The lock file goes too (under the lock): filelock (3.20 and later) checks after ``flock``
    that its lock file still has a name and retries otherwise, so a process that opened it just
    before is not fooled. With an older filelock the worst case, in a window of microseconds, is two
    processes computing the same entry; writes are atomic renames, so no entry is ever damaged.
    """
    import filelock

    lock = filelock.FileLock(entry.lock_path, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        return "in use"
    except OSError as exc:
        return f"cannot lock it ({exc.strerror or exc})"
    try:
        if only_if_unused:
            try:
                if os.stat(entry.path, follow_symlinks=False).st_mtime != entry.last_used:
                    return "used just now"
            except FileNotFoundError:
                pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.lock_path)
    except OSError as exc:
        return f"cannot delete it ({exc.strerror or exc})"
    finally:
        lock.release()
    return None


def remove_orphan_locks(cache_dir: str, names: Iterable[str] | None = None) -> int:
    """Remove lock files whose entry is gone and that nobody holds (each under that lock)."""
    import filelock

    removed = 0
    for _name, path in name_dirs(cache_dir, names):
        try:
            files = os.listdir(path)
        except OSError:
            continue
        present = set(files)
        for fn in files:
            key = lock_key(fn)
            if key is None or entry_filename(key) in present:
                continue
            held = os.path.join(path, fn)
            lock = filelock.FileLock(held, timeout=0)
            try:
                lock.acquire()
            except (filelock.Timeout, OSError):
                continue
            try:
                if not os.path.exists(os.path.join(path, entry_filename(key))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(held)
                        removed += 1
            finally:
                lock.release()
        # An empty name directory stays: removing it could race with a writer that has just
        # created it and is about to create its lock file there.
    return removed


def old_versions(entries: list[EntryFile], keep_versions: int) -> list[EntryFile]:
    """Per name, the versions beyond the most recently used one and ``keep_versions`` older ones."""
    by_name: dict[str, list[EntryFile]] = {}
    for e in entries:
        by_name.setdefault(e.name, []).append(e)
    out = []
    for versions in by_name.values():
        versions.sort(key=lambda e: e.last_used, reverse=True)
        out.extend(versions[1 + keep_versions :])
    return out


def over_cap(
    entries: list[EntryFile], max_size: int, target: int | None = None, protect: Iterable[str] = ()
) -> list[EntryFile]:
    """Least recently used entries to delete so that the total is at most ``target``
    (default ``max_size``) once the total exceeds ``max_size``; protected paths are never chosen."""
    total = sum(e.size for e in entries)
    if total <= max_size:
        return []
    goal = max_size if target is None else target
    keep = set(protect)
    out = []
    for e in sorted(entries, key=lambda e: e.last_used):
        if total <= goal:
            break
        if e.path in keep:
            continue
        out.append(e)
        total -= e.size
    return out


# ---------------------------------------------------------------------------------------------
# Automatic care after each save


def _dir_bytes(path: str) -> int:
    total = 0
    with os.scandir(path) as it:
        for f in it:
            if entry_key(f.name) is not None:
                with contextlib.suppress(FileNotFoundError):
                    total += f.stat(follow_symlinks=False).st_size
    return total


def _load_usage(cache_dir: str) -> dict:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(os.path.join(cache_dir, USAGE_FILE), flags)  # a planted FIFO must not hang
        with os.fdopen(fd, encoding="utf-8") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError("not a regular file")
            data = json.load(f)
        if (
            isinstance(data, dict)
            and data.get("version") == 1
            and isinstance(data.get("scanned", 0.0), (int, float))
            and isinstance(data.get("dirs"), dict)
            and all(
                isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)
                for v in data["dirs"].values()
            )
        ):
            return data  # anything else (a damaged index) is rebuilt from the listings
    except (OSError, ValueError):
        pass
    return {"version": 1, "scanned": 0.0, "dirs": {}}


def _save_usage(cache_dir: str, data: dict) -> None:
    path = os.path.join(cache_dir, USAGE_FILE)
    tmp = usage_temp_path(cache_dir)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def remove_stale_usage_temps(cache_dir: str) -> int:
    """Remove temp files of the usage index left by processes that died while writing it."""
    removed = 0
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return 0
    for fn in names:
        pid = usage_temp_pid(fn)
        if pid is not None and not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(cache_dir, fn))
                removed += 1
    return removed


def cache_size(cache_dir: str) -> int:
    """Total bytes of the entries in ``cache_dir``, from the usage index.

    Only checkpoint directories whose mtime changed since the index was written are listed again
    (a save or delete renames/unlinks inside one directory, which bumps its mtime); a full re-read
    happens at most every ``FULL_RESCAN_SECONDS``. Cost per save: one stat per checkpoint name.
    """
    data = _load_usage(cache_dir)
    now = time.time()
    full = now - float(data.get("scanned", 0.0)) > FULL_RESCAN_SECONDS
    old = data["dirs"]
    dirs: dict[str, list[int]] = {}
    for name, path in name_dirs(cache_dir):
        try:
            mtime_ns = os.stat(path, follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            continue
        prev = old.get(name)
        if not full and isinstance(prev, list) and len(prev) == 2 and prev[0] == mtime_ns:
            dirs[name] = prev
            continue
        try:
            # The mtime is taken before listing, so a change during the listing is seen next time.
            # Directory mtimes are coarse (a clock tick): one this recent could be shared by a
            # save still to come, so it is not trusted and the directory is listed again next time.
            racy = time.time_ns() - mtime_ns < RACY_NS
            dirs[name] = [0 if racy else mtime_ns, _dir_bytes(path)]
        except FileNotFoundError:
            continue
    data = {"version": 1, "scanned": now if full else data.get("scanned", now), "dirs": dirs}
    _save_usage(cache_dir, data)
    return sum(v[1] for v in dirs.values())


def _warn(message: str) -> None:
    import warnings

    from .._errors import StateCacheWarning

    warnings.warn(f"statecache: {message}", StateCacheWarning, stacklevel=3)


def enforce_cap(
    cache_dir: str, max_size: int, target: int | None = None, protect: Iterable[str] = ()
) -> tuple[list[EntryFile], list[EntryFile]]:
    """Delete least recently used entries until the cache is at most ``target`` bytes once it
    exceeds ``max_size``. Returns (removed, skipped because in use). Dead writers' temp files go too."""
    entries, temps = scan(cache_dir)
    for t in temps:
        if not pid_alive(t.pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t.path)
    protected = set(protect)
    if entries:
        protected.add(max(entries, key=lambda e: e.last_used).path)  # the newest is never evicted
    removed: list[EntryFile] = []
    busy: list[EntryFile] = []
    for e in over_cap(entries, max_size, target, protected):
        (busy if remove_entry(e, timeout=0, only_if_unused=True) else removed).append(e)
    return removed, busy


def after_save(
    cache_dir: str, max_size: int | None, written: str | None = None, verbose: bool | None = None
) -> None:
    """Called by the core after every save: enforce ``max_size`` (``max_size=`` or
    ``STATECACHE_MAX_SIZE``), least recently used first, never deleting ``written`` (the entry just
    saved) nor the most recent entry. Cheap: the size comes from the usage index (one stat per
    checkpoint name); entries are listed only when the cap is passed, and then the cache is brought
    down to 90% of the cap so the next full listing is many saves away. Never raises for a cache
    problem: a warning instead.
    """
    if max_size is None:
        return
    quiet = env_quiet() if verbose is None else not verbose
    try:
        if cache_size(cache_dir) <= max_size:
            return
        removed, busy = enforce_cap(
            cache_dir, max_size, int(max_size * LOW_WATER), () if written is None else (written,)
        )
        cache_size(cache_dir)  # refresh the index for the directories we touched
        if removed and not quiet:
            freed = sum(e.size for e in removed)
            print(
                f"statecache: cache over {format_size(max_size)}: removed {len(removed)} least "
                f"recently used entr{'y' if len(removed) == 1 else 'ies'} ({format_size(freed)})",
                file=sys.stderr,
            )
        if busy and not removed and not quiet:
            print(
                f"statecache: cache over {format_size(max_size)} but its oldest entries are in use",
                file=sys.stderr,
            )
    except Exception as exc:  # a cache problem must never break the user's program
        _warn(f"could not enforce the cache size cap in {cache_dir}: {exc}")
