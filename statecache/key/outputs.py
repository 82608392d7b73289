"""The files a block writes: its outputs, which a hit (which skips the body) must find.

A file the block made or emptied and left behind is recorded in the entry (kind ``output``,
``output_records``); a lookup that finds it gone misses, naming it (``key.files``). Not a file
the block read back itself: that is its scratch, which a script may clear before the block
(so a hit after it is no wrong state). An output still there but changed since is no miss:
a log the script appends to after the block would miss forever.
"""

from __future__ import annotations

import os
from typing import Any


def output_records(written: dict[str, bool | None], cache_dirs: list[str],
                   inputs: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, "output") -> a record of each file the block made or emptied that is still there
    as it ends, outside the cache and the temporary directory (unless in the project): a hit,
    which skips the body, must find them (``changed_record``). Not what is inside a folder
    whose absence the block relied on (a ``missing`` input: a hit needs it gone), nor a file
    the block read back (its scratch)."""
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
    for path, read_back in written.items():
        if read_back or not os.path.isfile(path) or not is_data_path(path, cache_dirs):
            continue
        real = os.path.realpath(path)
        if inside(real, temp) is not None and all(inside(real, p) is None for p in project):
            continue  # scratch space of the run, not a result the script keeps
        if any(inside(path, gone) is not None for gone in absent):
            continue
        found[(path, "output")] = {"path": path, "kind": "output"}
    return found
