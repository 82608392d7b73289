"""Every name statecache gives to something on disk, in one place.

A cache directory looks like this::

    <cache_dir>/
      .gitignore                          "*": cached state is not for version control
      CACHEDIR.TAG                        https://bford.info/cachedir/ (backup tools skip it)
      .statecache-usage.json              the size index that ``after_save`` keeps
      .statecache-usage.json.<pid>.<hex8>.part   the index being rewritten
      <name>/<key>.sc                     one entry (32 hex digits of key)
      <name>/<key>.sc.lock                its per-key lock
      <name>/.<key>.sc.<pid>.<hex8>.tmp   an entry being written (atomic rename into place)

Deleting is confined to names matched here, so what the cache may remove and what it creates
cannot drift apart. No imports from the package: every layer may use this module.
"""

from __future__ import annotations

import os
import re

CACHE_DIR_NAME = ".statecache"  # the default cache directory, beside the script or notebook
ENTRY_SUFFIX = ".sc"
LOCK_SUFFIX = ".lock"  # appended to an entry's file name

GITIGNORE = ".gitignore"
GITIGNORE_TEXT = "# Created by statecache: cached program state, not for version control.\n*\n"
CACHEDIR_TAG = "CACHEDIR.TAG"
#: The line every CACHEDIR.TAG starts with (https://bford.info/cachedir/).
CACHEDIR_TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
CACHEDIR_TAG_TEXT = (
    f"{CACHEDIR_TAG_SIGNATURE}\n"
    "# This file is a cache directory tag created by statecache.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
#: The small index that lets ``after_save`` know the cache's size without a full scan.
USAGE_FILE = ".statecache-usage.json"

#: Coarser than any file system's timestamp granularity: a directory mtime younger than this
#: may be shared by a change still to come, so the usage index does not trust it.
RACY_NS = 2_000_000_000

# Patterns, compiled by ``re`` on first use (and cached there): a hit uses none of them, and
# compiling them all costs most of a millisecond of import.
_KEY = r"[0-9a-f]{32}"
_TEMP = r"\.(?P<target>.+)\.(?P<pid>[0-9]+)\.(?P<token>[0-9a-f]{8})\.tmp"
_USAGE_TEMP = re.escape(USAGE_FILE) + r"\.(?P<pid>\d+)\.[0-9a-f]{8}\.part"
_OWN_TOP = rf"{re.escape(GITIGNORE)}|{re.escape(CACHEDIR_TAG)}|{re.escape(USAGE_FILE)}(\..*)?"
_OWN_ENTRY = r"[0-9a-f]{32}\.sc(\.lock)?|\.[0-9a-f]{32}\.sc\.[0-9]+\.[0-9a-f]{8}\.tmp"


def is_key(text: str) -> bool:
    """Whether ``text`` is an entry key (32 lowercase hex digits)."""
    return re.fullmatch(_KEY, text) is not None


def entry_filename(key: str) -> str:
    return key + ENTRY_SUFFIX


def entry_key(filename: str) -> str | None:
    """The key of an entry file name (``<32 hex>.sc``), else None."""
    if filename.endswith(ENTRY_SUFFIX):
        key = filename[: -len(ENTRY_SUFFIX)]
        if is_key(key):
            return key
    return None


def lock_path(entry_path: str) -> str:
    return entry_path + LOCK_SUFFIX


def lock_key(filename: str) -> str | None:
    """The key of a lock file name (``<32 hex>.sc.lock``), else None."""
    if filename.endswith(LOCK_SUFFIX):
        return entry_key(filename[: -len(LOCK_SUFFIX)])
    return None


def temp_path(path: str) -> str:
    """A fresh temp-file name beside ``path`` that names this process as its writer."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def is_temp_file(filename: str) -> int | None:
    """The writer's pid if ``filename`` is one of our temp files, else None (for ``gc``)."""
    m = re.fullmatch(_TEMP, os.path.basename(filename))
    return int(m.group("pid")) if m else None


def usage_temp_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, f"{USAGE_FILE}.{os.getpid()}.{os.urandom(4).hex()}.part")


def usage_temp_pid(filename: str) -> int | None:
    """The writer's pid if ``filename`` is a temp file of the usage index, else None."""
    m = re.fullmatch(_USAGE_TEMP, filename)
    return int(m.group("pid")) if m else None


def is_own_top(filename: str) -> bool:
    """Whether a file at the top of a cache directory is one statecache makes."""
    return re.fullmatch(_OWN_TOP, filename) is not None


def is_own_in_name_dir(filename: str) -> bool:
    """Whether a file inside a checkpoint's directory is one statecache makes."""
    return re.fullmatch(_OWN_ENTRY, filename) is not None
