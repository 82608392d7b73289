"""Files a block only looks at: what a stat or an access check answered, and whether it still does.

``os.path.exists``, ``os.path.getmtime`` or ``os.access`` read no content, so their record is
the answer the block saw, taken when it looked (``answers``), and a later lookup compares
that answer only (``looked_changed``): a touch changes what ``getmtime`` says and is a change
there, while the content of a file only looked at is never read. Which answer a stat gave is
judged from its caller (``aspect``): an existence or type test, a size, or the whole stat
(mtime and permission bits), which is what the user's own ``os.stat`` may use.
"""

from __future__ import annotations

import os
import stat as stat_mod
from typing import Any

from .listers import USER, lister

#: the standard library's functions that use a stat only for existence and the file's type
_TYPE_TESTS = frozenset({
    "exists", "lexists", "isfile", "isdir", "islink", "ismount", "isjunction", "isdevdrive",
    "is_file", "is_dir", "is_symlink", "is_mount", "is_fifo", "is_socket", "is_block_device",
    "is_char_device", "is_junction",
})
_SIZE_TESTS = frozenset({"getsize"})
TYPE, SIZE, STAT = "type", "size", "stat"
_ACCESS = "access:"


def aspect(frame: Any) -> str | None:
    """What a stat called from ``frame`` answers: ``TYPE`` for an existence or type test of
    the standard library (``os.path.isfile``, ``Path.exists``), ``SIZE`` for
    ``os.path.getsize``, ``STAT`` otherwise (``getmtime``, ``Path.stat()``, the user's own
    ``os.stat``); None for the import system's (``importlib.metadata`` looking at sys.path),
    which is no data. A stat that an installed library makes for its own ends (a check before
    it reads, whose content is recorded then) counts as a type test: only the user's own stats
    make mtimes and modes count, so that a copied project's other mtimes stay no change."""
    names = []
    for _depth in range(8):
        if frame is None:
            break
        filename = frame.f_code.co_filename
        try:
            where = _FRAMES[filename]
        except KeyError:
            where = _FRAMES[filename] = _frame_kind(filename)
        if where == _IMPORTS:
            return None
        if where != _STDLIB:
            break
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    if any(name in _TYPE_TESTS for name in names):
        return TYPE
    if any(name in _SIZE_TESTS for name in names):
        return SIZE
    return STAT if frame is None or lister(frame) == USER else TYPE


_IMPORTS, _STDLIB, _OTHER = "imports", "stdlib", "other"
_FRAMES: dict[str, str] = {}  # code file -> which of those it is


def is_stdlib_frame(frame: Any) -> bool:
    """Whether ``frame`` runs the standard library's code (``os.walk``, ``glob``, ``shutil``)."""
    filename = frame.f_code.co_filename
    try:
        where = _FRAMES[filename]
    except KeyError:
        where = _FRAMES[filename] = _frame_kind(filename)
    return where == _STDLIB


def _frame_kind(filename: str) -> str:
    from .provenance import Kind, classify, is_import_system

    if is_import_system(filename):
        return _IMPORTS
    if filename.startswith("<frozen ") or classify(filename) is Kind.STDLIB:
        return _STDLIB
    return _OTHER


def access_aspect(mode: int) -> str:
    return f"{_ACCESS}{int(mode)}"


def answers(path: str, what: str, st: os.stat_result | None) -> dict[str, Any]:
    """The answer a look of kind ``what`` at ``path`` got (``st``: its stat then, None when it
    was not there), as record fields."""
    found: dict[str, Any] = {"type": stat_mod.S_IFMT(st.st_mode) if st is not None else 0}
    if st is None:
        return found
    if what == SIZE:
        found["size"] = st.st_size
    elif what == STAT:
        found.update(size=st.st_size, mtime_ns=st.st_mtime_ns, mode=stat_mod.S_IMODE(st.st_mode))
    elif what.startswith(_ACCESS):
        mode = int(what[len(_ACCESS):])
        found["access"] = {str(mode): os.access(path, mode)}
    return found


def answered(seen: dict[str, Any], what: str) -> bool:
    """Whether the answer a look of kind ``what`` gets is in ``seen`` already (the first stays)."""
    if what.startswith(_ACCESS):
        return what[len(_ACCESS):] in seen.get("access", {})
    return {TYPE: "type", SIZE: "size", STAT: "mtime_ns"}.get(what, "") in seen or (
        "type" in seen and not seen["type"])  # not there when first looked at: nothing more to say


def merge(seen: dict[str, Any], found: dict[str, Any]) -> None:
    """Add a later look's answers to the first ones; the first answer to each question stays."""
    for name, value in found.items():
        if name == "access":
            for mode, allowed in value.items():
                seen.setdefault("access", {}).setdefault(mode, allowed)
        else:
            seen.setdefault(name, value)


def looked_changed(looked: dict[str, Any], path: str, name: str) -> str | None:
    """None when ``path`` still gives every answer in ``looked``, else a few words why not
    (``name``: the path as the user sees it)."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    now = answers(path, STAT, st)
    if "type" in looked and looked["type"] != now["type"]:
        return f"file {name} appeared" if not looked["type"] else f"{name} is gone or of another kind"
    for field, words in (("size", "size"), ("mtime_ns", "modification time"), ("mode", "permissions")):
        if field in looked and looked[field] != now.get(field):
            return f"{words} of {name} changed"
    for mode, allowed in looked.get("access", {}).items():
        if os.access(path, int(mode)) != allowed:
            return f"access to {name} changed"
    return None


def stat_only_record(path: str, before: tuple[int, ...], looked: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a file or folder the block only looked at: its answers, no content
    (``before``: its stat stamp then); None for a pipe or a device, as for a read of one."""
    kind = looked.get("type", 0)
    if not kind:
        return {"path": path, "kind": "missing"}
    if stat_mod.S_ISDIR(kind):
        return {"path": path, "kind": "dir", "digest": "", "stat_only": True, "looked": looked}
    if not stat_mod.S_ISREG(kind):
        return None
    return {"path": path, "kind": "file", "size": before[0], "mtime_ns": before[1], "digest": "",
            "stat_only": True, "looked": looked}


def beyond_content(looked: dict[str, Any]) -> dict[str, Any]:
    """The answers a content record does not already cover (size and type it does)."""
    return {name: looked[name] for name in ("mtime_ns", "mode", "access") if name in looked}
