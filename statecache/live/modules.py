"""The user's own modules that a live run has imported: the files live mode watches besides the
script. Which files are the user's is ``key.provenance.is_user_file``'s decision, not ours."""

from __future__ import annotations

import os
import sys


def is_local(filename: str | None) -> bool:
    """A module file the user may edit: a ``.py`` that is the user's code."""
    from ..key.provenance import is_user_file

    return bool(filename and filename.endswith(".py") and is_user_file(filename))


def local_modules() -> dict[str, str]:
    """Module name -> real path of the user's own modules now imported (``__main__`` excluded)."""
    out = {}
    for name, mod in list(sys.modules.items()):
        if name == "__main__":
            continue
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and is_local(f):
            out[name] = os.path.realpath(f)
    return out


def forget_bytecode(filename: str) -> None:
    """Remove the cached bytecode of an edited module: a save within the same second that keeps
    the file's size would otherwise pass the .pyc's mtime+size check and run the old code."""
    import importlib.util

    try:
        os.unlink(importlib.util.cache_from_source(filename))
    except (OSError, ValueError, NotImplementedError):
        pass
