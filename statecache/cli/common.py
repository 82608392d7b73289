"""What every command shares: finding the cache directory, reading an entry's metadata for a
row, and the formatting of ages, sizes and tables."""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from .._config import env_dir
from .._errors import EntryError, UsageError
from ..entry.meta import EntryMeta
from ..store.layout import CACHE_DIR_NAME
from ..store.maintenance import EntryFile

PROG = "statecache"
DIR_HELP = (  # every --dir: find_cache_dir
    "cache directory (default: $STATECACHE_DIR, else the nearest .statecache in the working "
    "directory or above it)"
)


class CacheDir:
    """The cache directory a command works on, and how it was found (for messages)."""

    def __init__(self, path: str, how: str) -> None:
        self.path = path
        self.how = how  # "--dir", "STATECACHE_DIR", "found", "default"

    def __str__(self) -> str:
        return self.path


def find_cache_dir(arg: str | None, cwd: str | None = None) -> CacheDir:
    """Like git finds its root: ``--dir``, else ``STATECACHE_DIR``, else the nearest
    ``.statecache`` directory in the working directory or above it, else ``./.statecache``
    (which may not exist: the command then says there is no cache there)."""
    if arg is not None:
        given, how = arg, "--dir"
    elif env := env_dir():
        given, how = env, "STATECACHE_DIR"
    else:
        start = os.path.abspath(cwd or os.getcwd())
        here = start
        while True:
            candidate = os.path.join(here, CACHE_DIR_NAME)
            if os.path.isdir(candidate):  # a link to a bigger disk counts, as for the library
                return CacheDir(candidate, "found")
            parent = os.path.dirname(here)
            if parent == here:
                return CacheDir(os.path.join(start, CACHE_DIR_NAME), "default")
            here = parent
    if "\0" in given:
        raise UsageError(f"{how} contains a NUL byte")
    return CacheDir(os.path.abspath(os.path.expanduser(given)), how)


def cache_dir(args: argparse.Namespace) -> str:
    """The cache directory for a command's parsed arguments (``args.dir``)."""
    return find_cache_dir(args.dir).path


def missing_note(cache: str) -> str | None:
    """What to say when the cache directory does not exist (None: it does)."""
    if os.path.isdir(cache):
        return None
    if os.path.exists(cache):
        raise UsageError(f"{cache} is not a directory")
    return (
        f"{PROG}: no cache directory at {cache} (none in this directory or above it; "
        "set --dir or STATECACHE_DIR)"
    )


def note_missing(cache: str) -> bool:
    """True (and a note on stderr) when the cache directory does not exist."""
    note = missing_note(cache)
    if note is not None:
        print(note, file=sys.stderr)
    return note is not None


def entry_meta(e: EntryFile) -> tuple[EntryMeta, str | None]:
    """The entry's metadata (header only, checked by the schema), or an empty one and the
    reason it cannot be read."""
    from ..entry.reader import read_meta

    try:
        return read_meta(e.path), None
    except EntryError as exc:
        return {}, reason(e, exc)
    except OSError as exc:
        return {}, exc.strerror or str(exc)


def reason(e: EntryFile, exc: Exception) -> str:
    """The entry layer's message without the leading ``cache entry PATH:``: the row names it."""
    text = str(exc)
    prefix = f"cache entry {e.path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def sorted_entries(entries: list[EntryFile]) -> list[EntryFile]:
    """By name, then most recently used first."""
    return sorted(entries, key=lambda e: (e.name, -e.last_used, e.key))


def short(e: EntryFile) -> str:
    return f"{e.name}/{e.key[:8]}"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    d = now - ts
    if d < 1:
        return "just now"
    if d < 60:
        return f"{int(d)}s ago"
    if d < 3600:
        return f"{int(d // 60)}m ago"
    if d < 86400:
        return f"{int(d // 3600)}h ago"
    return f"{int(d // 86400)}d ago"


def when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} ({ago(ts, now)})"


def table(rows: list[list[str]], right: frozenset[int] | set[int] = frozenset()) -> str:
    """Columns as wide as their widest cell; ``right``: the right-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"
