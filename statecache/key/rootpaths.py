"""Saved state that names the project's folder: an entry whose values hold absolute paths
inside the project root is valid only in that folder.

Keys count a path inside the root relative to it (``key.values``), so that clones and copies
of a project share entries. A value the block derived from the folder (``HERE / "runs"``) is
keyed the same way, but it is restored as it was saved: after ``cp -r exp1 exp2`` (the cache
too) a hit in exp2 would hand back exp1's paths, and the results would go into the other copy.
So at save the state is walked, bounded and cheap (``root_record``), and an entry that holds
such paths is refused from any other root (``moved_root``); entries without them still hit
across copies, clones and a shared remote.
"""

from __future__ import annotations

import dataclasses
import os
from itertools import islice
from pathlib import PurePath
from typing import Any

from .project import forms, project_root

#: At most this many values are looked at per saved variable, and this deep: the walk is for
#: the paths a block builds (configs, lists of files), not for the contents of big containers.
MAX_VALUES = 2_000
MAX_DEPTH = 6
_CONTAINERS = (list, tuple, set, frozenset)
_SCALARS = frozenset({int, float, bool, complex, type(None)})


def root_record(state: dict[str, Any], root: str | None = None) -> dict[str, Any]:
    """The metadata that ties an entry to the project's folder: ``{"root_paths": {"root": the
    root, "names": the saved variables whose values hold a path inside it}}``, or ``{}`` (most
    entries) when none does."""
    root = root or project_root()
    needles = tuple(dict.fromkeys(n for form in forms(root) for n in _needles(form)))
    names = [name for name, value in state.items() if _holds(value, needles, [MAX_VALUES], 0, False)]
    return {"root_paths": {"root": root, "names": names}} if names else {}


def _needles(form: str) -> tuple[str, ...]:
    """What a text naming a place inside the folder ``form`` contains: the folder and a
    separator (``"/p/exp1/"``); for ``/`` itself, nothing (every absolute path is below it)."""
    if not form:
        return ()
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    return tuple(form + sep for sep in seps)


def _holds(value: Any, needles: tuple[str, ...], budget: list[int], depth: int, in_object: bool) -> bool:
    """Whether ``value`` holds a text or path naming a place inside the folder: strings,
    bytes and paths, inside lists, tuples, sets, dict keys and values, and the attributes of
    one level of objects (a dataclass, a config object); nothing else (arrays, frames)."""
    budget[0] -= 1
    kind = type(value)
    if kind is str:
        return _names_folder(value, needles)
    if kind in _SCALARS or budget[0] < 0 or depth > MAX_DEPTH or not needles:
        return False
    if isinstance(value, str):
        return _names_folder(value, needles)
    if isinstance(value, PurePath):
        return _names_folder(str(value) + os.sep, needles)
    if isinstance(value, (bytes, bytearray)):
        return len(value) < 1 << 16 and _names_folder(os.fsdecode(bytes(value)), needles)
    if isinstance(value, dict):
        items: Any = (x for pair in value.items() for x in pair)
    elif isinstance(value, _CONTAINERS):
        items = iter(value)
    elif not in_object and _is_plain_object(value):
        items = iter(vars(value).values())
        in_object = True
    else:
        return False
    return _any_holds(items, needles, budget, depth + 1, in_object)


def _any_holds(items: Any, needles: tuple[str, ...], budget: list[int], depth: int, in_object: bool) -> bool:
    """``_holds`` over a container's items, at most ``budget`` of them: the strings among
    them are searched at once (one joined text), the rest one by one."""
    taken = list(islice(items, max(0, budget[0])))
    budget[0] -= len(taken)
    texts = [item for item in taken if type(item) is str]
    if texts and _names_folder("\0".join(texts), needles):
        return True
    rest = [item for item in taken if type(item) is not str and type(item) not in _SCALARS]
    return any(_holds(item, needles, budget, depth, in_object) for item in rest)


def _names_folder(text: str, needles: tuple[str, ...]) -> bool:
    """A text (or several joined by NULs, which no path holds) naming the folder or a place
    in it: a needle is the folder with a separator, so the folder itself counts as a whole
    text (``PurePath`` adds the separator)."""
    return any(needle in text or f"\0{needle[:-1]}\0" in f"\0{text}\0" for needle in needles)


def _is_plain_object(value: Any) -> bool:
    """A dataclass or an instance of a plain class, whose attributes a walk may look at; not a
    module, a class, a function or an object of compiled code (no ``__dict__``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    attrs = getattr(value, "__dict__", None)
    return isinstance(attrs, dict) and not isinstance(value, type) and type(value).__module__ not in (
        "builtins", "types") and not callable(value)


def moved_root(meta: Any, root: str | None = None) -> str | None:
    """Why an entry cannot be used from this project root, or None: its saved values hold
    paths inside the folder it was computed in (``root_record``), and this is another folder
    (a copy or a clone elsewhere), where a hit would hand back the other folder's paths."""
    record = meta.get("root_paths") if isinstance(meta, dict) else None
    if not record:
        return None
    saved, names = record.get("root"), record.get("names") or []
    here = root or project_root()
    if not isinstance(saved, str) or set(forms(saved)) & set(forms(here)):
        return None if isinstance(saved, str) else "the entry's project folder is unreadable"
    shown = ", ".join(map(str, names[:3])) + (", ..." if len(names) > 3 else "")
    return f"{shown} held paths in {saved}, the project's folder where it was computed, not this one"
