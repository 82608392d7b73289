"""The text the script (``__main__``) was loaded from, kept as early as statecache can: a
script saved while it runs must not key, or locate, the code that runs by its new text
(``code.running_lines``). Python keeps no copy; this one is trusted only where compiling it
gives exactly the running code. Imports nothing beyond ``sys``: ``keep()`` is cheap enough
for ``import statecache``.
"""

from __future__ import annotations

import sys

_KEPT: dict[str, bytes] = {}


def keep() -> None:
    """Read the script's file now, once per process (a later call keeps the first text)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or path in _KEPT:
        return
    try:
        with open(path, "rb") as f:
            _KEPT[path] = f.read()
    except OSError:
        pass


def kept(path: str) -> bytes | None:
    """The script's text as ``keep()`` read it, if ``path`` is the script's file."""
    return _KEPT.get(path)
