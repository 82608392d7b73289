"""A cache directory: where entries live, how they are locked, loaded and saved.

One file per entry version, its lock beside it, a ``.gitignore`` and a ``CACHEDIR.TAG`` at the
top (the names are in ``store.layout``). Loading never locks (writes are
atomic renames and a reader keeps its open descriptor); computing holds the per-key lock, so a
second process that wants the same entry waits for the first and then loads its result.
"""

from __future__ import annotations

import contextlib
import os
import time

from .layout import (
    CACHEDIR_TAG,
    CACHEDIR_TAG_TEXT,
    GITIGNORE,
    GITIGNORE_TEXT,
    entry_filename,
    entry_key,
    is_own_in_name_dir,
    is_own_top,
    lock_path,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path

if TYPE_CHECKING:
    from typing import Any

    from ..entry.meta import EntryMeta

_ready_dirs: set[str] = set()


def ensure_cache_dir(root: str) -> str:
    """Create the cache directory (mode 0700, .gitignore, CACHEDIR.TAG) if needed.

    Raises OSError when it cannot be created or written; the caller then runs uncached.
    """
    root = os.path.abspath(root)
    if root in _ready_dirs:
        return root
    if os.path.exists(root) and not os.path.isdir(root):
        raise NotADirectoryError(f"{root} exists and is not a directory")
    os.makedirs(root, mode=0o700, exist_ok=True)
    if not os.path.lexists(os.path.join(root, CACHEDIR_TAG)):
        foreign = _foreign_content(root)
        if foreign is not None:
            # Not a cache: marking it would git-ignore (and hide from backups) someone's files,
            # and a checkpoint's directory could be one of theirs.
            raise FileExistsError(
                f"{root} already holds files that are not statecache's (e.g. {foreign}); give "
                f"statecache a directory of its own, e.g. {os.path.join(root, '.statecache')}"
            )
    for filename, text in ((GITIGNORE, GITIGNORE_TEXT), (CACHEDIR_TAG, CACHEDIR_TAG_TEXT)):
        path = os.path.join(root, filename)
        if not os.path.exists(path):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:  # another process is making the same cache directory
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            except OSError:  # a full disk: no empty marker file that would never be completed
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"{root} is not writable")
    _ready_dirs.add(root)
    return root


def _foreign_content(root: str) -> str | None:
    """Something in ``root`` (a directory without CACHEDIR.TAG) that statecache did not make,
    or None when it holds only what statecache makes (an empty or half-made cache)."""
    with os.scandir(root) as top:
        for item in top:
            if item.is_dir(follow_symlinks=False):
                with os.scandir(item.path) as inner:
                    for f in inner:
                        if not is_own_in_name_dir(f.name):
                            return os.path.join(item.name, f.name)
            elif not is_own_top(item.name):
                return item.name
    return None


class Store:
    """The entries of one cache directory."""

    def __init__(self, root: str):
        self.root = ensure_cache_dir(root)

    def name_dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def entry_path(self, name: str, key: str) -> str:
        return os.path.join(self.root, name, entry_filename(key))

    def lock(self, name: str, key: str) -> Any:
        """The per-key inter-process lock (``filelock``), held while computing and writing."""
        from filelock import FileLock

        directory = self.name_dir(name)
        if os.path.islink(directory):
            raise OSError(f"{directory} is a symbolic link; statecache does not write through links")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return FileLock(lock_path(self.entry_path(name, key)), mode=0o600)  # private, whatever the umask

    def versions(self, name: str) -> list[tuple[str, EntryMeta]]:
        """(path, metadata) of every readable entry of ``name``, newest first."""
        from ..entry.reader import read_meta

        directory = self.name_dir(name)
        try:
            filenames = [f for f in os.listdir(directory) if entry_key(f) is not None]
        except OSError:
            return []
        found = []
        for filename in filenames:
            path = os.path.join(directory, filename)
            try:
                found.append((path, read_meta(path)))
            except Exception:  # a damaged entry says nothing about why we missed
                continue
        found.sort(key=lambda item: item[1].get("created", 0), reverse=True)
        return found

    @staticmethod
    def touch(path: str) -> None:
        """Mark an entry as just used (its mtime is its "last used" time for eviction)."""
        try:
            now = time.time()
            os.utime(path, (now, now))
        except OSError:
            pass
