"""The files a block writes: its outputs, which a hit (which skips the body) must find.

A file the block made or emptied and left behind is recorded in the entry (kind ``output``,
``output_records``); a lookup that finds it gone misses, naming it, unless this process
removed it itself before (``removed``: a script that clears its outputs before the block does
not rely on them being there). An output still there but changed since is no miss: a log the
script appends to after the block would miss forever.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

#: the absolute paths this process removed (files, folders), from ``import statecache`` on
_removed: set[str] = set()


def removed(path: Any) -> None:
    """This process removes ``path`` (a file or a folder), or moves it away."""
    _removed.add(os.path.abspath(os.fsdecode(os.fspath(path))))


def still_there(path: str) -> bool:
    """Whether a hit finds the output at ``path`` as a fresh run of the script would: the file
    is there, or this process removed it before the lookup (``removed_here``)."""
    return os.path.isfile(path) or removed_here(path)


def removed_here(path: str) -> bool:
    """Whether this process removed ``path``, or a folder holding it, since ``import
    statecache``: a script that clears the block's outputs before the block does not rely on
    finding them there, so a lookup that finds them gone is no change."""
    if not _removed:
        return False
    path = os.path.abspath(path)
    while True:
        if path in _removed:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def output_records(written: Collection[str], cache_dirs: list[str],
                   inputs: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, "output") -> a record of each file the block made or emptied that is still there
    as it ends, outside the cache and the temporary directory (unless in the project): a hit,
    which skips the body, must find them (``changed_record``). Not what is inside a folder
    whose absence the block relied on (a ``missing`` input: a hit needs it gone)."""
    if not written:
        return {}
    import tempfile

    from .project import inside, project_root
    from .provenance import is_data_path

    temp = os.path.realpath(tempfile.gettempdir())
    project = [os.path.realpath(project_root())]
    project += [os.path.realpath(os.path.dirname(os.path.abspath(d))) for d in cache_dirs]
    absent = [path for (path, kind) in inputs if kind == "missing"]
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in written:
        if not os.path.isfile(path) or not is_data_path(path, cache_dirs):
            continue
        real = os.path.realpath(path)
        if inside(real, temp) is not None and all(inside(real, p) is None for p in project):
            continue  # scratch space of the run, not a result the script keeps
        if any(inside(path, gone) is not None for gone in absent):
            continue
        found[(path, "output")] = {"path": path, "kind": "output"}
    return found
