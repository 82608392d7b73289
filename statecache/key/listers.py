"""Who lists a directory: the import system, an installed library, or the user's code.

The audit hook of ``key.files`` hears every ``os.listdir`` and ``os.scandir`` of a computing
block; only the user's listings (and those of the libraries the user's code calls) are data
whose change may change the result. The import system's scans of ``sys.path`` are not.
"""

from __future__ import annotations

from typing import Any

# Who lists a directory: the import system (finders, ``importlib.metadata`` scanning sys.path
# for distributions and entry points, a library's module running as it is imported), an
# installed library called by the code (or statecache), or the user.
IMPORTS, _LIBRARY, USER = "imports", "library", "user"
_LISTERS: dict[str, str | None] = {}


def lister(frame: Any) -> str:
    """Who lists, judged by the nearest calling frame that is not the standard library's
    (``glob``, ``pathlib`` and ``os`` list for whoever calls them); a library listing while
    the import system runs it (a plugin scan of sys.path at import, as pkg_resources does)
    counts as the import system. When in doubt, the user: what the user's code lists, also
    while it is imported, is data, and so is what a library it calls lists (the script's own
    folder too, though it is a sys.path entry)."""
    who = None
    for _depth in range(64):
        if frame is None:
            break
        filename = frame.f_code.co_filename
        try:
            kind = _LISTERS[filename]
        except KeyError:
            kind = _LISTERS[filename] = _frame_lister(filename)
        if who is None:
            who = kind
            if who is not None and who != _LIBRARY:
                return who
        elif kind in (IMPORTS, USER):
            return kind if kind == IMPORTS else _LIBRARY  # imported by the system, or called
        frame = frame.f_back
    return who or USER


def _frame_lister(filename: str) -> str | None:
    from .provenance import Kind, classify, is_import_system

    if is_import_system(filename):
        return IMPORTS
    kind = classify(filename)
    if kind is Kind.STDLIB or filename.startswith("<frozen "):
        return None  # look further up
    if kind is Kind.INSTALLED or kind is Kind.STATECACHE:
        return _LIBRARY
    return USER  # the user's files, and code of no file that the user exec'd
