"""File objects in a block's state: one open for writing, or closed, is never saved (dill would
reopen it on load with a mode that creates or truncates the file, emptying what the code
wrote); a wrapper around a file is judged by the file it wraps."""

from __future__ import annotations

from typing import Any


def reopen_hazard(value: Any) -> bool:
    """A file object that dill would reopen on load with a mode that creates or truncates the
    file (``"w"``, ``"x"``), or a closed one (the ``with open(...) as f`` idiom); a wrapper
    around a file (``tempfile.NamedTemporaryFile``) is judged by the file it wraps."""
    file = file_object(value)
    if file is None:
        return False
    mode = getattr(file, "mode", "")
    return file.closed or (isinstance(mode, str) and ("w" in mode or "x" in mode))


# The standard library's objects that wrap a file without being one (tempfile's
# _TemporaryFileWrapper; SpooledTemporaryFile before 3.11; codecs' stream readers and writers),
# and the attribute holding it. No pickler restores them: dill saves one closed and fails on
# load (KeyError 'file'), so every later run would warn and compute.
_WRAPPED_FILE = {"tempfile": ("file", "_file"), "codecs": ("stream",)}


def file_object(value: Any) -> Any:
    """The file object ``value`` is, or wraps (see ``_WRAPPED_FILE``); None if neither."""
    import io

    if isinstance(value, io.IOBase):
        return value
    attributes = _WRAPPED_FILE.get(getattr(type(value), "__module__", ""), ())
    inner = getattr(value, "__dict__", {})
    for attr in attributes:
        if isinstance(inner.get(attr), io.IOBase):
            return inner[attr]
    return None
